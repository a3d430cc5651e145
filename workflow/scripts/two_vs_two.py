import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.formats.activations import load_groups
from emergence.formats.word_matrix import read_word_gram, read_word_matrix
from emergence.io import write_tsv
from emergence.runner import start
from emergence.stats.measures import MeasureSpec
from emergence.tables.score_table import score_columns, score_rows

smk = snakemake  # noqa: F821
log = start(smk)
spec = MeasureSpec.from_params(smk.params.measures)
wnids, w_mat, _ = read_word_matrix(smk.input.matrix)
groups = load_groups(smk.input.groups, smk.params.groups, wnids, smk.wildcards.network,
                     gram=spec.needs_gram)
rows = score_rows(smk.wildcards.word_model, w_mat, groups, spec,
                  word_gram=read_word_gram(smk.input.matrix) if spec.needs_gram else None)
write_tsv(smk.output[0], rows, score_columns(spec))
log.info("%d scores of %s (k=%d)", len(rows), ", ".join(spec.names), len(wnids))
