import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_word_models
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
tables = {wm: read_tsv(path) for wm, path in zip(p.word_models, smk.input, strict=True)}
plot_word_models(tables, p.labels, p.labels[smk.wildcards.network], p.alpha, list(smk.output))
