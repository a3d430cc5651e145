import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_overview
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
tables = {net: read_tsv(path) for net, path in zip(p.networks, smk.input, strict=True)}
plot_overview(tables, p.labels, p.controls, p.labels[p.word_model], p.alpha, list(smk.output))
