# 1 vs 2 test (paper sec. 3.3): images misclassified into another concept with a word vector.


rule one_vs_two:
    input:
        unpack(one_vs_two_inputs),
    output:
        summary=f"{R}/one_vs_two/{{network}}/{{word_model}}.tsv",
        tests=f"{R}/one_vs_two/{{network}}/{{word_model}}_tests.tsv",
    log:
        f"{R}/logs/one_vs_two/{{network}}/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/one_vs_two/{{network}}/{{word_model}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    params:
        groups=ONE_VS_TWO_GROUPS,
        seed=STUDY.seed,
        n_permutations=STUDY.one_vs_two.n_permutations,
    script:
        "../scripts/one_vs_two.py"


rule summary_one_vs_two:
    input:
        expand(
            f"{R}/one_vs_two/{{network}}/{{word_model}}.tsv",
            network=NETWORKS,
            word_model=WORD_MODELS,
        ),
    output:
        report(f"{R}/summary/one_vs_two.tsv", caption="../report/summary.rst", category="Summary"),
    log:
        f"{R}/logs/summary_one_vs_two.log",
    benchmark:
        f"{R}/benchmarks/summary_one_vs_two.tsv"
    conda:
        "../../envs/statistics.yaml"
    script:
        "../scripts/summary.py"
