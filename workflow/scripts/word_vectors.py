import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.concepts import COVERAGE_COLUMNS
from emergence.formats.vectors import write_word_vectors
from emergence.io import write_tsv
from emergence.runner import start
from emergence.sources.common import candidates, read_concepts, read_manifest
from emergence.sources.words.lexicon import IMAGENET, Lexicon
from emergence.sources.words.spec import WordModelSpec, embed_concepts

smk = snakemake  # noqa: F821
log = start(smk)
spec = WordModelSpec.from_params(smk.params.spec)
concepts = candidates(read_manifest(smk.input.manifest))
# A folder source's own concept table, else timm's ImageNet tables (concept ids are wnids).
lexicon = Lexicon(read_concepts(smk.input.concepts)) if "concepts" in smk.input.keys() \
    else IMAGENET
result = embed_concepts(spec, concepts, lexicon, spec.job_device(smk.resources.get("gpu", 0)))
wm = smk.wildcards.word_model
log.info("%s covers %d of %d concepts", wm, len(result.wnids), len(concepts))
write_word_vectors(smk.output.vectors, wm, smk.params.spec, result.wnids, result.vectors,
                   result.attrs)
write_tsv(smk.output.coverage, [{"word_model": wm, **r} for r in result.records],
          COVERAGE_COLUMNS)
