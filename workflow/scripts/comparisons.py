import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.formats.nulls import shard_concepts
from emergence.io import read_tsv, write_tsv
from emergence.runner import start
from emergence.tables.comparison_table import COMPARISON_COLUMNS, comparison_rows
from emergence.uncertainty import read_samples

smk = snakemake  # noqa: F821
log = start(smk)
sources = smk.params.sources
scores, samples, concepts = {}, {}, {}
for i, key in enumerate(sources["keys"]):  # "network/word_model", inputs numbered alike
    pair = tuple(key.split("/"))
    shards = list(smk.input[f"jackknife_{i}"])
    scores[pair] = read_tsv(smk.input[f"scores_{i}"])
    samples[pair], concepts[pair] = read_samples(shards), shard_concepts(shards)
rows = comparison_rows(
    smk.wildcards.network, smk.wildcards.word_model, scores=scores, jackknife=samples,
    concepts=concepts, measures=smk.params.measures["names"],
    confidence=smk.params.confidence, factors=smk.params.factors,
    controls=[k.split("/")[0] for k in sources["control"]],
    word_models=[k.split("/")[1] for k in sources["word_models"]])
write_tsv(smk.output[0], rows, COMPARISON_COLUMNS)
log.info("%d comparisons", len(rows))
