import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.device import job_device
from emergence.extraction.extract import extract_statistics
from emergence.runner import start
from emergence.sources.common import group_rows, read_manifest
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model

smk = snakemake  # noqa: F821
log = start(smk)
spec = NetworkSpec.from_params(smk.params.spec, name=smk.wildcards.network)
ext = smk.params.extraction
rows = group_rows(read_manifest(smk.input.manifest), smk.wildcards.group)
model = load_model(spec)
layers = resolve_layers(model, spec.layers)
log.info("%s: %d layers, %d images", smk.wildcards.network, len(layers), len(rows))
summary = extract_statistics(
    model, [r.path for r in rows], layers, smk.output[0],
    batch_size=ext["batch_size"], device=job_device(ext["device"], smk.resources.get("gpu", 0)),
    preprocess=spec.preprocess,
    keep_raw_max_features=ext["keep_raw_max_features"],
    ram_budget_bytes=ext["ram_budget_mb"] << 20,
    threads=ext["threads"],
    attrs={"network": smk.wildcards.network, "group": smk.wildcards.group},
    image_meta={"wnid": [r.wnid for r in rows], "concept": [r.concept for r in rows]},
)
if summary.exif_transposed:
    log.info("%d of %d images flipped or rotated upright by their EXIF orientation tag",
             summary.exif_transposed, summary.n_images)
log.info("%s", summary)
