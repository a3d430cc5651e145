# Stimuli: one image per concept per group, and the manifest every later step reads.


rule images:
    input:
        table=config["images"].get("concepts", []),
    output:
        manifest=f"{R}/images/manifest.tsv",
        images=directory(f"{R}/images/png"),
    log:
        f"{R}/logs/images.log",
    params:
        images=config["images"],
        seed=config["seed"],
    conda:
        "../../envs/extraction.yaml"
    benchmark:
        f"{R}/benchmarks/images.tsv"
    script:
        "../scripts/images.py"
