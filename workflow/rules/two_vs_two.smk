# Every measure (2 vs 2, RSA, CKA, mutual kNN: `measures`) for every layer and group of a
# network against a word model; the permutation null and the jackknife over concepts in
# parallel shards; p-values (per layer, family-wise, group mean), the null's band and
# confidence intervals; paired comparisons (layers, control, word models, depth trend).


rule two_vs_two:
    input:
        groups=activation_files,
        matrix=f"{R}/words/{{word_model}}/similarity.h5",
    output:
        f"{R}/two_vs_two/{{network}}/{{word_model}}/scores.tsv",
    log:
        f"{R}/logs/two_vs_two/{{network}}/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/two_vs_two/{{network}}/{{word_model}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    params:
        groups=GROUPS,
        measures=MEASURES,
    script:
        "../scripts/two_vs_two.py"


rule permutations:
    input:
        groups=activation_files,
        matrix=f"{R}/words/{{word_model}}/similarity.h5",
    output:
        f"{R}/two_vs_two/{{network}}/{{word_model}}/null/shard-{{shard}}-of-{N_SHARDS}.h5",
    log:
        f"{R}/logs/permutations/{{network}}/{{word_model}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/permutations/{{network}}/{{word_model}}/shard-{{shard}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    threads: 1
    resources:
        gpu=int(uses_cuda(PERMUTATIONS.device)),
    params:
        kind="permutation",
        groups=GROUPS,
        seed=STUDY.seed,
        settings=PERMUTATIONS.params(),
        measures=MEASURES,
    script:
        "../scripts/permutations.py"


rule jackknife:
    input:
        groups=activation_files,
        matrix=f"{R}/words/{{word_model}}/similarity.h5",
    output:
        f"{R}/two_vs_two/{{network}}/{{word_model}}/jackknife/shard-{{shard}}-of-{N_JACK_SHARDS}.h5",
    log:
        f"{R}/logs/jackknife/{{network}}/{{word_model}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/jackknife/{{network}}/{{word_model}}/shard-{{shard}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    threads: 1
    params:
        kind="jackknife",
        groups=GROUPS,
        seed=STUDY.seed,
        settings=JACKKNIFE.shard_params(),
        measures=MEASURES,
    script:
        "../scripts/permutations.py"


rule significance:
    input:
        scores=f"{R}/two_vs_two/{{network}}/{{word_model}}/scores.tsv",
        shards=shard_files,
        jackknife=jackknife_files,
    output:
        report(
            f"{R}/two_vs_two/{{network}}/{{word_model}}/significance.tsv",
            caption="../report/significance.rst",
            category="2 vs 2",
        ),
    log:
        f"{R}/logs/significance/{{network}}/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/significance/{{network}}/{{word_model}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    params:
        alpha=PERMUTATIONS.alpha,  # the `significant` column's (not figures.alpha)
        confidence=JACKKNIFE.confidence,
        factors=JACKKNIFE.factors,
        measures=MEASURES,
        # the current shard counts: files of another count beside them are swept
        shards={"null": N_SHARDS, "jackknife": N_JACK_SHARDS},
    script:
        "../scripts/significance.py"


rule comparisons:
    input:
        unpack(comparison_inputs),
    output:
        report(
            f"{R}/two_vs_two/{{network}}/{{word_model}}/comparisons.tsv",
            caption="../report/comparisons.rst",
            category="Comparisons",
        ),
    log:
        f"{R}/logs/comparisons/{{network}}/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/comparisons/{{network}}/{{word_model}}.tsv"
    conda:
        "../../envs/statistics.yaml"
    params:
        sources=comparison_sources,
        confidence=JACKKNIFE.confidence,
        factors=JACKKNIFE.factors,
        measures=MEASURES,
    script:
        "../scripts/comparisons.py"


rule summary_two_vs_two:
    input:
        expand(
            f"{R}/two_vs_two/{{network}}/{{word_model}}/significance.tsv",
            network=NETWORKS,
            word_model=WORD_MODELS,
        ),
    output:
        report(f"{R}/summary/two_vs_two.tsv", caption="../report/summary.rst", category="Summary"),
    log:
        f"{R}/logs/summary_two_vs_two.log",
    benchmark:
        f"{R}/benchmarks/summary_two_vs_two.tsv"
    conda:
        "../../envs/statistics.yaml"
    script:
        "../scripts/summary.py"
