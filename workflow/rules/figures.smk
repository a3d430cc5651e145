# The paper's figures (PNG and PDF), the trained-minus-control comparison and an overview
# of every network.


rule fig1_word_models:
    input:
        expand(
            f"{R}/two_vs_two/{{{{network}}}}/{{word_model}}/significance.tsv",
            word_model=FIG1_SPACES,
        ),
    output:
        report(
            figure_paths("fig1_word_models_{network}"),
            caption="../report/fig1.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/fig1_{{network}}.log",
    benchmark:
        f"{R}/benchmarks/figures/fig1_word_models_{{network}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        word_models=FIG1_SPACES,
        labels=lambda wc: labels(wc.network, *FIG1_SPACES),
        alpha=FIGURES.alpha,
    script:
        "../scripts/fig1_word_models.py"


rule fig2_layers:
    input:
        main=f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/significance.tsv",
        control=lambda wc: [
            f"{R}/two_vs_two/{c}/{PRIMARY_WM}/significance.tsv"
            for c in STUDY.controls_of(wc.network)
        ],
    output:
        report(
            figure_paths("fig2_layers_{network}"), caption="../report/fig2.rst", category="Figures"
        ),
    log:
        f"{R}/logs/figures/fig2_{{network}}.log",
    benchmark:
        f"{R}/benchmarks/figures/fig2_layers_{{network}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        word_model=PRIMARY_WM,
        control=lambda wc: STUDY.controls_of(wc.network),
        labels=lambda wc: labels(wc.network, *STUDY.controls_of(wc.network), PRIMARY_WM),
        alpha=FIGURES.alpha,
    script:
        "../scripts/fig2_layers.py"


rule trained_minus_control:
    input:
        f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/comparisons.tsv",
    output:
        report(
            figure_paths("trained_minus_control_{network}"),
            caption="../report/trained_minus_control.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/trained_minus_control_{{network}}.log",
    benchmark:
        f"{R}/benchmarks/figures/trained_minus_control_{{network}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        labels=lambda wc: labels(wc.network, *STUDY.controls_of(wc.network), PRIMARY_WM),
        alpha=FIGURES.alpha,
    script:
        "../scripts/trained_minus_control.py"


rule fig4_one_vs_two:
    input:
        f"{R}/one_vs_two/{{network}}/{PRIMARY_WM}.tsv",
    output:
        report(
            figure_paths("fig4_one_vs_two_{network}"),
            caption="../report/fig4.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/fig4_{{network}}.log",
    benchmark:
        f"{R}/benchmarks/figures/fig4_one_vs_two_{{network}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        word_model=PRIMARY_WM,
        labels=lambda wc: labels(wc.network, PRIMARY_WM),
        alpha=FIGURES.alpha,
    script:
        "../scripts/fig4_one_vs_two.py"


rule overview:
    input:
        expand(f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/significance.tsv", network=NETWORKS),
    output:
        report(figure_paths("overview"), caption="../report/overview.rst", category="Figures"),
    log:
        f"{R}/logs/figures/overview.log",
    benchmark:
        f"{R}/benchmarks/overview.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        networks=NETWORKS,
        controls=CONTROLS,
        word_model=PRIMARY_WM,
        labels=labels(*NETWORKS, PRIMARY_WM),
        alpha=FIGURES.alpha,
    script:
        "../scripts/overview.py"
