import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_control_difference
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
plot_control_difference(read_tsv(smk.input[0]), p.labels, list(smk.output), alpha=p.alpha)
