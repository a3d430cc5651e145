import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.formats.nulls import Shards, sweep_stale_shards
from emergence.io import read_tsv, write_tsv
from emergence.runner import start
from emergence.tables.significance_table import significance_columns, significance_rows
from emergence.uncertainty import read_samples

smk = snakemake  # noqa: F821
log = start(smk)
scores = read_tsv(smk.input.scores)
# The permutation shards are read block by block (emergence.tables.null_summary), never all at once;
# the jackknife's 1 + k + pairs samples whole.
nulls = Shards(list(smk.input.shards)) if smk.input.shards else {}
rows = significance_rows(scores, nulls, smk.params.alpha,
                         jackknife=read_samples(list(smk.input.jackknife)),
                         confidence=smk.params.confidence, factors=smk.params.factors)
write_tsv(smk.output[0], rows, significance_columns(smk.params.measures["names"]))
for r in rows:
    if r["reason"]:
        log.warning("group %s, layer %s not tested (nan): %s", r["group"], r["layer"], r["reason"])
# Shard files of an earlier shard count (shard-<i>-of-<m>.h5) are read by no rule now:
# null/ and jackknife/ beside significance.tsv.
for kind, count in smk.params.shards.items():
    sweep_stale_shards(smk.output[0], count, kind)
