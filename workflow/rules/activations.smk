# One forward pass per network x group for all layers; each layer reduced on the fly to
# exact image x image Pearson statistics (float64, streamed over feature chunks). A network
# of precomputed features (source: features) has no forward pass: its features files are
# inputs of the job (editing one reruns it), read and reduced to the same statistics.
from emergence.sources.models.features import layer_files


def activation_inputs(wildcards):
    """The manifest, and the files a precomputed network's layers read (none for a model)."""
    spec = STUDY.networks[wildcards.network]
    files = {f"features_{i}": [str(f) for f in layer_files(path)]
             for i, path in enumerate(spec.feature_layers.values())}
    return {"manifest": f"{R}/images/manifest.tsv", **files}


def activation_gpus(wildcards):
    """1 where the forward pass runs on CUDA; 0 for precomputed features (no model)."""
    if STUDY.networks[wildcards.network].source == "features":
        return 0
    return int(uses_cuda(config["extraction"]["device"]))


rule activations:
    input:
        unpack(activation_inputs),
    output:
        f"{R}/activations/{{network}}/{{group}}.h5",
    log:
        f"{R}/logs/activations/{{network}}/{{group}}.log",
    params:
        spec=network_params,
        extraction=config["extraction"],
    conda:
        "../../envs/extraction.yaml"
    threads: config["extraction"]["threads"]  # the forward pass uses exactly this many (see schema)
    resources:
        gpu=activation_gpus,
    benchmark:
        f"{R}/benchmarks/activations/{{network}}/{{group}}.tsv"
    script:
        "../scripts/activations.py"
