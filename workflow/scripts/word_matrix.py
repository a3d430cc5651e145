import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.concepts import (
    check_enough_concepts,
    collapsed_senses,
    kept_concepts,
    select_concepts,
    write_concepts,
)
from emergence.formats.vectors import read_word_vectors
from emergence.formats.word_matrix import write_word_matrix
from emergence.io import read_tsv
from emergence.runner import start
from emergence.sources.common import read_manifest
from emergence.sources.words.spec import WordModelSpec

smk = snakemake  # noqa: F821
log = start(smk)
wm = smk.wildcards.word_model
coverage = {k.removeprefix("coverage_"): read_tsv(v) for k, v in smk.input.items()
            if k.startswith("coverage_")}
rows = select_concepts(read_manifest(smk.input.manifest), smk.params.groups, wm, coverage,
                       smk.params.intersect)
kept = [(r["wnid"], r["concept"]) for r in rows if r["kept"]]
log.info("%s: %d of %d concepts kept", wm, len(kept), len(rows))
if collapsed := collapsed_senses(rows):
    log.info("%s: %s", wm, collapsed)
check_enough_concepts(rows, wm, smk.input[f"coverage_{wm}"])
wnids, vectors = read_word_vectors(smk.input.vectors)
# W and the Gram matrix: from the vectors, or a precomputed similarity matrix itself
w_mat, gram = WordModelSpec.from_params(smk.params.spec).word_matrices(wm, wnids, vectors, kept)
write_word_matrix(smk.output.matrix, wm, smk.params.spec, kept, w_mat, vectors.shape[1], gram)
write_concepts(smk.output.concepts, rows)
assert kept_concepts(smk.output.concepts) == kept
