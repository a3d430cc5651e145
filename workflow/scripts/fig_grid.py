import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_grid
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
beside = {wm: read_tsv(path) for wm, path in zip(p.beside, smk.input.beside, strict=True)}
plot_grid(read_tsv(smk.input.grid), beside, p.labels, p.labels[smk.wildcards.network],
          p.model_label, p.alpha, list(smk.output))
