# Word vectors per word model, the concepts kept (in every model: the paper's rule),
# and the word-space similarity matrix W.


rule word_vectors:
    input:
        unpack(word_vector_inputs),
    output:
        vectors=f"{R}/words/{{word_model}}/vectors.h5",
        coverage=f"{R}/words/{{word_model}}/coverage.tsv",
    log:
        f"{R}/logs/word_vectors/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/word_vectors/{{word_model}}.tsv"
    wildcard_constraints:
        word_model="|".join(map(re.escape, VECTOR_MODELS)),  # models, not word spaces
    conda:
        "../../envs/words.yaml"
    threads: 2
    resources:
        gpu=word_model_gpus,  # 1 for a text encoder that runs on CUDA
    params:
        spec=vector_params,
    script:
        "../scripts/word_vectors.py"


rule word_matrix:
    input:
        unpack(
            lambda wc: {
                "manifest": f"{R}/images/manifest.tsv",
                "vectors": vector_file(wc),
                **{f"coverage_{n}": p for n, p in coverage_files(wc).items()},
            }
        ),
    output:
        concepts=f"{R}/concepts/{{word_model}}.tsv",
        matrix=f"{R}/words/{{word_model}}/similarity.h5",
    log:
        f"{R}/logs/word_matrix/{{word_model}}.log",
    benchmark:
        f"{R}/benchmarks/word_matrix/{{word_model}}.tsv"
    conda:
        "../../envs/words.yaml"
    params:
        spec=word_model_params,
        groups=GROUPS,
        intersect=STUDY.concepts.intersect_word_models,
    script:
        "../scripts/word_matrix.py"
