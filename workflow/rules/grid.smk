# The vision x language grid of each network and layered word model (a transformers model
# scored layer by layer, its word spaces `lm.<layer>`): every cell's measures, p-values and
# intervals side by side, the family-wise p over the whole grid, and its figure.
# (grid_inputs is in common.smk)


rule grid:
    input:
        unpack(grid_inputs),
    output:
        report(
            f"{R}/grid/{{network}}/{{language_model}}.tsv",
            caption="../report/grid.rst",
            category="Vision x language",
        ),
    log:
        f"{R}/logs/grid/{{network}}/{{language_model}}.log",
    benchmark:
        f"{R}/benchmarks/grid/{{network}}/{{language_model}}.tsv"
    wildcard_constraints:
        language_model="|".join(map(re.escape, LAYERED)) or "^$",
    conda:
        "../../envs/statistics.yaml"
    params:
        spaces=lambda wc: LAYERED[wc.language_model],
        measures=MEASURES,
    script:
        "../scripts/grid.py"


rule fig_grid:
    input:
        grid=f"{R}/grid/{{network}}/{{language_model}}.tsv",
        beside=expand(
            f"{R}/two_vs_two/{{{{network}}}}/{{word_model}}/significance.tsv",
            word_model=ONE_VECTOR,
        ),
    output:
        report(
            figure_paths("grid_{network}_{language_model}"),
            caption="../report/fig_grid.rst",
            category="Vision x language",
        ),
    log:
        f"{R}/logs/figures/grid_{{network}}_{{language_model}}.log",
    benchmark:
        f"{R}/benchmarks/figures/grid_{{network}}_{{language_model}}.tsv"
    wildcard_constraints:
        language_model="|".join(map(re.escape, LAYERED)) or "^$",
    conda:
        "../../envs/figures.yaml"
    params:
        beside=ONE_VECTOR,
        labels=lambda wc: labels(wc.network, *ONE_VECTOR, *LAYERED[wc.language_model]),
        model_label=lambda wc: STUDY.label(wc.language_model),
        alpha=FIGURES.alpha,
    script:
        "../scripts/fig_grid.py"
