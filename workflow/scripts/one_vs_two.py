import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.analysis import (
    ONE_VS_TWO_COLUMNS,
    ONE_VS_TWO_TEST_COLUMNS,
    one_vs_two_rows,
)
from emergence.formats.activations import load_groups
from emergence.formats.word_matrix import read_word_matrix
from emergence.io import write_tsv
from emergence.runner import start
from emergence.sources.images.folders import read_label_map

smk = snakemake  # noqa: F821
log = start(smk)
wnids, w_mat, _ = read_word_matrix(smk.input.matrix)
label_map = read_label_map(smk.input.label_map) if "label_map" in smk.input.keys() else None
groups = load_groups(smk.input.groups, smk.params.groups, wnids, smk.wildcards.network,
                     label_map=label_map)
summary, tests = one_vs_two_rows(smk.wildcards.word_model, w_mat, wnids, groups,
                                 n_permutations=smk.params.n_permutations, seed=smk.params.seed)
write_tsv(smk.output.summary, summary, ONE_VS_TWO_COLUMNS)
write_tsv(smk.output.tests, tests, ONE_VS_TWO_TEST_COLUMNS)
skipped = sum(bool(t["reason"]) for t in tests)
log.info("%d tests over %d layers (%d skipped: see their reason)", len(tests),
         len(groups[0].layers), skipped)
