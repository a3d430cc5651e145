# The paper's figures (PNG and PDF), the trained-minus-control comparison and an overview
# of every network.


rule fig1_word_models:
    input:
        expand(f"{R}/two_vs_two/{{{{network}}}}/{{word_model}}/significance.tsv",
               word_model=WORD_MODELS),
    output:
        report(figure_paths("fig1_word_models_{network}"),
               caption="../report/fig1.rst", category="Figures"),
    log:
        f"{R}/logs/figures/fig1_{{network}}.log",
    params:
        word_models=WORD_MODELS,
        labels=lambda wc: labels(wc.network, *WORD_MODELS),
        alpha=config["figures"]["alpha"],
    conda:
        "../../envs/figures.yaml"
    benchmark:
        f"{R}/benchmarks/figures/fig1_word_models_{{network}}.tsv"
    script:
        "../scripts/fig1_word_models.py"


rule fig2_layers:
    input:
        main=f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/significance.tsv",
        control=lambda wc: [f"{R}/two_vs_two/{c}/{PRIMARY_WM}/significance.tsv"
                            for c in STUDY.controls_of(wc.network)],
    output:
        report(figure_paths("fig2_layers_{network}"),
               caption="../report/fig2.rst", category="Figures"),
    log:
        f"{R}/logs/figures/fig2_{{network}}.log",
    params:
        word_model=PRIMARY_WM,
        control=lambda wc: STUDY.controls_of(wc.network),
        labels=lambda wc: labels(wc.network, *STUDY.controls_of(wc.network), PRIMARY_WM),
        alpha=config["figures"]["alpha"],
    conda:
        "../../envs/figures.yaml"
    benchmark:
        f"{R}/benchmarks/figures/fig2_layers_{{network}}.tsv"
    script:
        "../scripts/fig2_layers.py"


rule trained_minus_control:
    input:
        f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/comparisons.tsv",
    output:
        report(figure_paths("trained_minus_control_{network}"),
               caption="../report/trained_minus_control.rst", category="Figures"),
    log:
        f"{R}/logs/figures/trained_minus_control_{{network}}.log",
    params:
        labels=lambda wc: labels(wc.network, *STUDY.controls_of(wc.network), PRIMARY_WM),
        alpha=config["figures"]["alpha"],
    conda:
        "../../envs/figures.yaml"
    benchmark:
        f"{R}/benchmarks/figures/trained_minus_control_{{network}}.tsv"
    script:
        "../scripts/trained_minus_control.py"


rule fig4_one_vs_two:
    input:
        f"{R}/one_vs_two/{{network}}/{PRIMARY_WM}.tsv",
    output:
        report(figure_paths("fig4_one_vs_two_{network}"),
               caption="../report/fig4.rst", category="Figures"),
    log:
        f"{R}/logs/figures/fig4_{{network}}.log",
    params:
        word_model=PRIMARY_WM,
        labels=lambda wc: labels(wc.network, PRIMARY_WM),
        alpha=config["figures"]["alpha"],
    conda:
        "../../envs/figures.yaml"
    benchmark:
        f"{R}/benchmarks/figures/fig4_one_vs_two_{{network}}.tsv"
    script:
        "../scripts/fig4_one_vs_two.py"


rule overview:
    input:
        expand(f"{R}/two_vs_two/{{network}}/{PRIMARY_WM}/significance.tsv", network=NETWORKS),
    output:
        report(figure_paths("overview"), caption="../report/overview.rst", category="Figures"),
    log:
        f"{R}/logs/figures/overview.log",
    params:
        networks=NETWORKS,
        controls=CONTROLS,
        word_model=PRIMARY_WM,
        labels=labels(*NETWORKS, PRIMARY_WM),
        alpha=config["figures"]["alpha"],
    conda:
        "../../envs/figures.yaml"
    benchmark:
        f"{R}/benchmarks/overview.tsv"
    script:
        "../scripts/overview.py"
