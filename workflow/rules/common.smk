# The config is read here and nowhere else: validated once and turned into typed specs
# (emergence.config.Study); every rule gets its slice as params. Names and input functions.
import re
import sys
from types import SimpleNamespace
from pathlib import Path

from emergence.budget import check as check_budget, estimate as estimate_budget, machine_memory
from emergence.config import ConfigError, check_config
from emergence.device import gpu_slots, uses_cuda
from emergence.ownership import ResultsLocked, lock_results, unlock_results
from emergence.sources.models.features import layer_files
from emergence.slurm import Request, SlurmFitError, plan

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
if not SCHEMA.exists():  # run as `snakemake -s workflow/Snakefile`: basedir is workflow/
    SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"

try:
    STUDY = check_config(config, SCHEMA)  # schema + its defaults, specs, cross-section checks
    STUDY.check_data_paths()
    if workflow.is_main_process:  # not again inside each job of a cluster run
        # Memory, disk and time of the permutations and the jackknife (emergence.budget):
        # what cannot fit stops here; the machine's memory counts for a local run only.
        _local = workflow.resource_settings.nodes is None
        _asked = {  # (not `rule:` at a line's start: snakefmt would read a rule there)
            name: res.get("mem_mb")
            for name, res in (workflow.resource_settings.overwrite_resources or {}).items()
            if isinstance(res.get("mem_mb"), (int, float))
        }
        _warnings = check_budget(
            estimate_budget(config, STUDY.groups, STUDY.results, list(STUDY.word_spaces)),
            STUDY.results,
            memory=machine_memory() if _local else None,
            requested=None if _local else _asked,
        )
        for _line in _warnings:
            print(f"semantic-emergence: warning: {_line}", file=sys.stderr)
except ConfigError as err:
    sys.exit(f"semantic-emergence: {err}")

R = STUDY.results
NETWORKS = list(STUDY.networks)
# The word spaces scored: a one-vector word model, or one layer of a layered (transformers)
# model, `lm.<layer>`. Every job from word_matrix on runs per word space (the `word_model`
# wildcard); word_vectors runs once per word model (VECTOR_MODELS) and writes every layer.
WORD_MODELS = list(STUDY.word_spaces)
VECTOR_MODELS = list(STUDY.word_models)
LAYERED = STUDY.layered_models()
# Fig. 1's lines: the one-vector word models (a layered model's layers are drawn in its grid
# figure, the best one beside them), or every word space where no model has one vector.
ONE_VECTOR = [s for s, (_, layer) in STUDY.word_spaces.items() if layer is None]
FIG1_SPACES = ONE_VECTOR or WORD_MODELS
GROUPS = STUDY.groups
PRIMARY_WM = STUDY.primary_word_model
CONTROLS = STUDY.controls
TRAINED = [n for n in NETWORKS if n not in CONTROLS]
PERMUTATIONS = STUDY.permutations  # the typed sections of the config (emergence.config)
JACKKNIFE = STUDY.intervals
EXTRACTION = STUDY.extraction
FIGURES = STUDY.figures
N_SHARDS = PERMUTATIONS.shards
N_JACK_SHARDS = JACKKNIFE.shards
INTERVALS = JACKKNIFE.enabled
MEASURES = STUDY.measures.params()  # the score, null, jackknife and table jobs' params
ONE_VS_TWO_GROUPS = STUDY.one_vs_two_groups
FORMATS = FIGURES.formats

# GPUs. A job whose device is `cuda`, or `auto` where CUDA is available here, asks for gpu=1
# (the rules' `resources:`). A local run offers as many as there are visible devices, so no
# two jobs share one (`--resources gpu=N` overrides; cluster runs leave it to the scheduler).
_gpus = gpu_slots(workflow.global_resources, local=workflow.resource_settings.nodes is None)
if _gpus is not None:
    workflow.global_resources["gpu"] = _gpus


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fit_to_slurm():
    """Before the first submission: cap threads at the CPUs a node of each job's partition
    offers, or stop with one line for memory or GPUs no node has (see emergence.slurm).
    The cap (--max-threads) is passed on to every job, so the job uses what it was given."""
    requests = [
        Request(
            job.rule.name,
            job.threads,
            _number(job.resources.get("mem_mb")),
            _number(job.resources.get("mem_mb_per_cpu")),
            int(_number(job.resources.get("gpu")) or 0),
            job.resources.get("slurm_partition") or None,
        )
        for job in workflow.dag.needrun_jobs()
        if not job.is_local
    ]
    try:
        cap, notes = plan(requests, max_threads=workflow.resource_settings.max_threads)
    except SlurmFitError as err:
        sys.exit(f"semantic-emergence: {err}")
    if cap is not None:
        workflow.resource_settings.max_threads = cap
    for note in notes:
        print(f"semantic-emergence: {note}", file=sys.stderr)


def lock_results_folder():
    """Before the first job: take the results folder's lock (emergence.ownership), or stop
    with one line naming the run that holds it. Only the main process of a run that locks
    (not --nolock) takes it: Snakemake runs onstart neither for a dry run, --unlock,
    --report or --lint, nor in the jobs it re-invokes itself for (SLURM jobs, which get
    --no-hooks --nolock --mode remote)."""
    if not workflow.is_main_process or not workflow.execution_settings.lock:
        return
    try:
        note = lock_results(R, workdir=Path.cwd(), command=" ".join(sys.argv))
    except ResultsLocked as err:
        sys.exit(f"semantic-emergence: {err}")
    except OSError as err:
        sys.exit(f"semantic-emergence: cannot lock results folder {R}: {err}")
    if note:
        print(f"semantic-emergence: {note}", file=sys.stderr)


onstart:
    lock_results_folder()
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        fit_to_slurm()


onsuccess:
    unlock_results(R)


onerror:
    unlock_results(R)


wildcard_constraints:
    network="|".join(map(re.escape, NETWORKS)),
    word_model="|".join(map(re.escape, WORD_MODELS)),
    group="|".join(map(re.escape, GROUPS)),
    shard=r"\d+",


def network_params(wildcards):
    """What one network's extraction depends on (and nothing else: not its label, not
    which network it is the control of)."""
    return STUDY.networks[wildcards.network].params()


def activation_inputs(wildcards):
    """The manifest, and the files a precomputed network's layers read (source: features;
    none for a model): editing one reruns the network's activations."""
    spec = STUDY.networks[wildcards.network]
    files = {
        f"features_{i}": [str(f) for f in layer_files(path)]
        for i, path in enumerate(spec.feature_layers.values())
    }
    return {"manifest": f"{R}/images/manifest.tsv", **files}


def activation_gpus(wildcards):
    """1 where the forward pass runs on CUDA; 0 for precomputed features (no model)."""
    if STUDY.networks[wildcards.network].source == "features":
        return 0
    return int(uses_cuda(EXTRACTION.device))


def image_rule_params():
    """The images rule's params: `images`, the keys of `images` its source reads (and
    nothing else), `seed` where it draws images, and `listing` where the images are the
    user's files: a SHA-256 of what the rule would write and of the size and mtime of each
    image it draws, computed when the DAG is built (image_listing). An image overwritten,
    added, removed or made unreadable changes it, so the rule and what reads its manifest
    run again (Snakemake's `params` rerun trigger, on by default)."""
    params = STUDY.images.rule_params(STUDY.seed)
    if STUDY.images.listed():
        params["listing"] = image_listing
    return params


def image_listing(wildcards):
    """The images rule's `listing` param (evaluated only where the images job is part of
    the DAG: not by other jobs of a cluster run)."""
    return STUDY.images.fingerprint(STUDY.seed)


def image_inputs():
    """The images rule's input files, named as the source's spec names them."""
    return STUDY.images.inputs()


def image_outputs():
    """The images rule's outputs, from the source's spec (its folders as `directory`)."""
    return {
        name: directory(path) if name in STUDY.images.DIRECTORIES else path
        for name, path in STUDY.images.outputs(R).items()
    }


def word_vector_inputs(wildcards):
    """The manifest, the source's concept table where it writes one (folders): the words
    and definitions the word models read instead of timm's ImageNet tables, and the word
    model's own data files (a vector file, a precomputed embedding or similarity matrix)."""
    outputs = STUDY.images.outputs(R)
    return {
        **{name: outputs[name] for name in ("manifest", "concepts") if name in outputs},
        **STUDY.word_models[wildcards.word_model].input_files(),
    }


def one_vs_two_inputs(wildcards):
    """The activations of the 1 vs 2 groups, W, and the label map when one is configured."""
    label_map = STUDY.label_map
    return {
        "groups": activation_files(wildcards, ONE_VS_TWO_GROUPS),
        "matrix": f"{R}/words/{wildcards.word_model}/similarity.h5",
        **({"label_map": label_map} if label_map else {}),
    }


def word_model_params(wildcards):
    """A word space's params (its model's, and the layer of a layered model)."""
    return STUDY.space_params(wildcards.word_model)


def vector_params(wildcards):
    """What a word model's vectors file depends on (not which layers are scored)."""
    return STUDY.word_models[wildcards.word_model].vector_params()


def vector_file(wildcards):
    """The vectors file a word space reads: its word model's."""
    return f"{R}/words/{STUDY.word_spaces[wildcards.word_model][0]}/vectors.h5"


def word_model_gpus(wildcards):
    """1 for a word model whose job runs on CUDA (a text encoder with device cuda, or auto
    where CUDA is available here), else 0."""
    return int(STUDY.word_models[wildcards.word_model].uses_cuda())


def activation_files(wildcards, groups=GROUPS):
    """The activation files of ``groups`` (all groups by default), in that order: the job
    pairs them with the same list in its params."""
    return expand(f"{R}/activations/{wildcards.network}/{{group}}.h5", group=groups)


def coverage_files(wildcards):
    """Coverage per word model (every layer of a model covers the same concepts). The
    intersection (`intersect_word_models`) is over the one-vector word models, and a
    layered model's spaces add their own model: a language model covers every concept, so
    adding one changes no other word model's concepts and reruns none of their jobs."""
    own = STUDY.word_spaces[wildcards.word_model][0]
    names = (
        [*(m for m in VECTOR_MODELS if m not in LAYERED), own]
        if STUDY.concepts.intersect_word_models
        else [own]
    )
    return {n: f"{R}/words/{n}/coverage.tsv" for n in dict.fromkeys(names)}


def shard_files(wildcards):
    return (
        expand(
            f"{R}/two_vs_two/{wildcards.network}/{wildcards.word_model}/null/shard-{{shard}}-of-{N_SHARDS}.h5",
            shard=range(N_SHARDS),
        )
        if PERMUTATIONS.n > 0
        else []
    )


def jackknife_files(wildcards, network=None, word_model=None):
    """The jackknife shards of a network x word model (none without intervals)."""
    net, wm = network or wildcards.network, word_model or wildcards.word_model
    return (
        expand(
            f"{R}/two_vs_two/{net}/{wm}/jackknife/shard-{{shard}}-of-{N_JACK_SHARDS}.h5",
            shard=range(N_JACK_SHARDS),
        )
        if INTERVALS
        else []
    )


def comparison_sources(wildcards):
    """What one comparisons table pairs, as "network/word_model" keys: this network and
    word model, the network's untrained control (same word model), and every other word
    model (same network). The input files follow the same keys."""
    net, wm = wildcards.network, wildcards.word_model
    keys = [
        (net, wm),
        *((c, wm) for c in STUDY.controls_of(net)),
        *((net, other) for other in WORD_MODELS if other != wm),
    ]
    return {
        "self": f"{net}/{wm}",
        "control": [f"{c}/{wm}" for c in STUDY.controls_of(net)],
        "word_models": [f"{net}/{o}" for o in WORD_MODELS if o != wm],
        "keys": [f"{n}/{w}" for n, w in keys],
    }


def comparison_inputs(wildcards):
    """Per source key: its scores.tsv and its jackknife shards."""
    out = {}
    for i, key in enumerate(comparison_sources(wildcards)["keys"]):
        net, wm = key.split("/")
        out[f"scores_{i}"] = f"{R}/two_vs_two/{net}/{wm}/scores.tsv"
        out[f"jackknife_{i}"] = jackknife_files(wildcards, net, wm)
    return out


def figure_paths(stem):
    return [f"{R}/figures/{stem}.{fmt}" for fmt in FORMATS]


def labels(*names):
    """Display labels of these networks and word models (only these: a figure reruns when
    a label it shows changes, not when another network or word model is added)."""
    return {n: STUDY.label(n) for n in names}


def all_outputs():
    """Every output a finished run has, so that a missing one (a failed job, a deleted file)
    is made again even while the summaries that were built from it still exist."""
    out = [f"{R}/summary/two_vs_two.tsv", f"{R}/summary/one_vs_two.tsv"]
    out += [f"{R}/concepts/{wm}.tsv" for wm in WORD_MODELS]
    for net in NETWORKS:
        for wm in WORD_MODELS:
            out += [
                f"{R}/two_vs_two/{net}/{wm}/scores.tsv",
                f"{R}/two_vs_two/{net}/{wm}/significance.tsv",
                f"{R}/one_vs_two/{net}/{wm}.tsv",
                f"{R}/one_vs_two/{net}/{wm}_tests.tsv",
            ]
            if INTERVALS:
                out.append(f"{R}/two_vs_two/{net}/{wm}/comparisons.tsv")
    out += figure_paths("overview")
    for net in NETWORKS:
        out += figure_paths(f"fig1_word_models_{net}")
        out += figure_paths(f"fig4_one_vs_two_{net}")
    for net in NETWORKS:
        for lm in LAYERED:
            out.append(f"{R}/grid/{net}/{lm}.tsv")
            out += figure_paths(f"grid_{net}_{lm}")
    for net in TRAINED:
        out += figure_paths(f"fig2_layers_{net}")
        if INTERVALS and STUDY.controls_of(net):
            out += figure_paths(f"trained_minus_control_{net}")
    return out


def grid_inputs(wildcards):
    """The significance tables of the model's language layers (in layer order) and, per
    layer, its null shards (null_<i>: the grid's max statistic reads them together)."""
    spaces = LAYERED[wildcards.language_model]
    out = {"tables": [f"{R}/two_vs_two/{wildcards.network}/{s}/significance.tsv" for s in spaces]}
    for i, space in enumerate(spaces):
        out[f"null_{i}"] = shard_files(SimpleNamespace(network=wildcards.network, word_model=space))
    return out
