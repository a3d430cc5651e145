# Stimuli: one image per concept per group, and the manifest every later step reads.

if config["images"]["source"] == "emoji":

    rule images:
        input:
            table=config["images"]["concepts"],
        output:
            manifest=f"{R}/images/manifest.tsv",
            images=directory(f"{R}/images/png"),
        log:
            f"{R}/logs/images.log",
        params:
            images=image_params(),
        conda:
            "../../envs/extraction.yaml"
        benchmark:
            f"{R}/benchmarks/images.tsv"
        script:
            "../scripts/images.py"

else:

    rule images:
        input:
            labels=config["images"].get("labels", []),
        output:
            manifest=f"{R}/images/manifest.tsv",
            skipped=f"{R}/images/skipped.tsv",
        log:
            f"{R}/logs/images.log",
        params:
            images=image_params(),
            seed=config["seed"],
        conda:
            "../../envs/extraction.yaml"
        benchmark:
            f"{R}/benchmarks/images.tsv"
        script:
            "../scripts/images.py"
