# Stimuli: the images of each group, the manifest every later step reads, and whatever else
# the source writes (skipped concepts, rendered images, the concept table): one rule for
# every source, its files and params from the source's spec (emergence.sources.images.spec).


rule images:
    input:
        **image_inputs(),
    output:
        **image_outputs(),
    log:
        f"{R}/logs/images.log",
    params:
        **image_rule_params(),
    conda:
        "../../envs/extraction.yaml"
    benchmark:
        f"{R}/benchmarks/images.tsv"
    script:
        "../scripts/images.py"
