import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.budget import repeated_draws
from emergence.device import job_device
from emergence.formats.activations import load_groups
from emergence.formats.word_matrix import read_word_gram, read_word_matrix
from emergence.runner import start
from emergence.stats.measures import MeasureSpec
from emergence.stats.permutation import shard_range
from emergence.tables.score_table import jackknife_shard, null_shard

# One script for both resampling rules: `permutations` (the null) and `jackknife`.
smk = snakemake  # noqa: F821
log = start(smk)
kind = smk.params.kind
settings = smk.params.settings
spec = MeasureSpec.from_params(smk.params.measures)
wnids, w_mat, _ = read_word_matrix(smk.input.matrix)
groups = load_groups(smk.input.groups, smk.params.groups, wnids, smk.wildcards.network,
                     gram=spec.needs_gram)
word_gram = read_word_gram(smk.input.matrix) if spec.needs_gram else None
shard = int(smk.wildcards.shard)
if kind == "jackknife":
    first, last = jackknife_shard(
        smk.output[0], smk.wildcards.word_model, w_mat, groups, seed=smk.params.seed,
        n_pairs=settings["pairs"], shards=settings["shards"], shard=shard,
        batch_size=settings["batch_size"], measures=spec, word_gram=word_gram)
    log.info("jackknife samples %d..%d (k = %d, %d pairs)", first, last - 1, len(wnids),
             settings["pairs"])
else:
    start_i, stop_i = shard_range(settings["n"], settings["shards"], shard,
                                  settings["batch_size"])
    log.info("%s samples %d..%d of %d", kind, start_i, stop_i - 1, settings["n"])
    repeated = repeated_draws("permutations", settings["n"], len(wnids))  # the DAG checked
    if repeated:  # an upper bound of k
        log.warning(repeated)
    null_shard(smk.output[0], smk.wildcards.word_model, w_mat, groups, seed=smk.params.seed,
               start=start_i, stop=stop_i, batch_size=settings["batch_size"], measures=spec,
               device=job_device(settings["device"], smk.resources.get("gpu", 0)),
               word_gram=word_gram)
