import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.figures import plot_network
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
start(smk)
p = smk.params
control = read_tsv(smk.input.control[0]) if smk.input.control else None
control_label = p.labels[p.control[0]] if control else ""
plot_network(read_tsv(smk.input.main), p.labels[smk.wildcards.network], control, control_label,
             p.labels[p.word_model], p.alpha, list(smk.output))
