# One forward pass per network x group for all layers; each layer reduced on the fly to
# exact image x image Pearson statistics (float64, streamed over feature chunks). A network
# of precomputed features (source: features) has no forward pass: its features files are
# inputs of the job (editing one reruns it), read and reduced to the same statistics.


rule activations:
    input:
        unpack(activation_inputs),
    output:
        f"{R}/activations/{{network}}/{{group}}.h5",
    log:
        f"{R}/logs/activations/{{network}}/{{group}}.log",
    benchmark:
        f"{R}/benchmarks/activations/{{network}}/{{group}}.tsv"
    conda:
        "../../envs/extraction.yaml"
    threads: EXTRACTION.threads  # the forward pass uses exactly this many (see schema)
    resources:
        gpu=activation_gpus,
    params:
        spec=network_params,
        extraction=EXTRACTION.params(),
    script:
        "../scripts/activations.py"
