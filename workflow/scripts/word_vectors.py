import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.concepts import COVERAGE_COLUMNS
from emergence.io import write_tsv
from emergence.runner import start
from emergence.sources.common import candidates, read_concepts, read_manifest
from emergence.sources.words.lexicon import IMAGENET, Lexicon
from emergence.sources.words.spec import WordModelSpec

smk = snakemake  # noqa: F821
log = start(smk)
spec = WordModelSpec.from_params(smk.params.spec)
concepts = candidates(read_manifest(smk.input.manifest))
# A folder source's own concept table, else timm's ImageNet tables (concept ids are wnids).
lexicon = Lexicon(read_concepts(smk.input.concepts)) if "concepts" in smk.input.keys() \
    else IMAGENET
wm = smk.wildcards.word_model
records = spec.write_vectors(smk.output.vectors, wm, concepts, lexicon,
                             spec.job_device(smk.resources.get("gpu", 0)))
log.info("%s covers %d of %d concepts", wm, sum(r["found"] for r in records), len(concepts))
write_tsv(smk.output.coverage, [{"word_model": wm, **r} for r in records], COVERAGE_COLUMNS)
