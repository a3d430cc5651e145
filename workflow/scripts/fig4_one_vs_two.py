import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_one_vs_two
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
plot_one_vs_two(read_tsv(smk.input[0]), p.labels[smk.wildcards.network], p.labels[p.word_model],
                p.alpha, list(smk.output))
