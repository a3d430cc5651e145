import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.analysis import SCORE_COLUMNS, score_rows
from emergence.formats.activations import load_groups
from emergence.formats.word_matrix import read_word_matrix
from emergence.io import write_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
log = start(smk)
wnids, w_mat, _ = read_word_matrix(smk.input.matrix)
groups = load_groups(smk.input.groups, smk.params.groups, wnids, smk.wildcards.network)
rows = score_rows(smk.wildcards.word_model, w_mat, groups, smk.params.rsa_method)
write_tsv(smk.output[0], rows, SCORE_COLUMNS)
log.info("%d scores (k=%d)", len(rows), len(wnids))
