import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.concepts import COVERAGE_COLUMNS
from emergence.io import atomic_h5, str_dataset, write_tsv
from emergence.runner import start
from emergence.sources.images import candidates, read_manifest
from emergence.sources.words import embed_concepts, gensim_data_path

smk = snakemake  # noqa: F821
log = start(smk)
spec = dict(smk.params.spec)
if spec["type"] == "gensim-data":
    path = gensim_data_path(spec.pop("name"), spec.pop("base_url", None))
    spec = {"type": "keyedvectors", "path": str(path), **{k: v for k, v in spec.items()
                                                         if k != "type"}}
concepts = candidates(read_manifest(smk.input.manifest))
result = embed_concepts(spec, concepts)
wm = smk.wildcards.word_model
log.info("%s covers %d of %d concepts", wm, len(result.wnids), len(concepts))
with atomic_h5(smk.output.vectors, {"what": "word vectors of the candidate concepts",
                                    "word_model": wm, "spec": repr(smk.params.spec),
                                    "dimension": int(result.vectors.shape[1])}) as f:
    str_dataset(f, "wnid", result.wnids)
    f.create_dataset("vectors", data=result.vectors)
write_tsv(smk.output.coverage, [{"word_model": wm, **r} for r in result.records],
          COVERAGE_COLUMNS)
