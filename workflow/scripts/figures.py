import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence import figures
from emergence.io import read_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
log = start(smk)
p = smk.params
out = list(smk.output)
if smk.rule == "fig1_word_models":
    tables = {wm: read_tsv(path) for wm, path in zip(p.word_models, smk.input, strict=True)}
    figures.plot_word_models(tables, p.labels, p.labels[smk.wildcards.network], p.alpha, out)
elif smk.rule == "fig2_layers":
    net = smk.wildcards.network
    control = read_tsv(smk.input.control[0]) if smk.input.control else None
    control_label = p.labels[p.control[0]] if control else ""
    figures.plot_network(read_tsv(smk.input.main), p.labels[net], control, control_label,
                         p.labels[p.word_model], p.alpha, out)
elif smk.rule == "fig4_one_vs_two":
    figures.plot_one_vs_two(read_tsv(smk.input[0]), p.labels[smk.wildcards.network],
                            p.labels[p.word_model], p.alpha, out)
elif smk.rule == "overview":
    tables = {net: read_tsv(path) for net, path in zip(p.networks, smk.input, strict=True)}
    figures.plot_overview(tables, p.labels, p.controls, p.labels[p.word_model], p.alpha, out)
else:
    raise ValueError(f"figures.py does not draw rule {smk.rule}")
