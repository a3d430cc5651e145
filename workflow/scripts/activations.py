import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.runner import start
from emergence.sources.common import group_rows, read_manifest
from emergence.sources.models.spec import NetworkSpec

smk = snakemake  # noqa: F821
log = start(smk)
spec = NetworkSpec.from_params(smk.params.spec, name=smk.wildcards.network)
ext = smk.params.extraction
rows = group_rows(read_manifest(smk.input.manifest), smk.wildcards.group)
attrs = {"network": smk.wildcards.network, "group": smk.wildcards.group}
image_meta = {"wnid": [r.wnid for r in rows], "concept": [r.concept for r in rows]}
if spec.source == "features":  # precomputed: no model, no forward pass, no torch
    from emergence.extraction.precomputed import precomputed_statistics

    widths = precomputed_statistics(
        spec.feature_layers, [r.path for r in rows], smk.output[0], root=spec.root,
        keep_raw_max_features=ext["keep_raw_max_features"], attrs=attrs, image_meta=image_meta)
    log.info("%s: %d layers of precomputed features (%s), %d images", smk.wildcards.network,
             len(widths), ", ".join(f"{k}: {v}" for k, v in widths.items()), len(rows))
else:  # the forward pass (torch is imported here, where it computes)
    from emergence.device import job_device
    from emergence.extraction.extract import extract_statistics
    from emergence.sources.models.layers import resolve_layers
    from emergence.sources.models.spec import load_model

    model = load_model(spec)
    layers = resolve_layers(model, spec.layers)
    log.info("%s: %d layers, %d images", smk.wildcards.network, len(layers), len(rows))
    summary = extract_statistics(
        model, [r.path for r in rows], layers, smk.output[0],
        batch_size=ext["batch_size"],
        device=job_device(ext["device"], smk.resources.get("gpu", 0)),
        preprocess=spec.preprocess, keep_raw_max_features=ext["keep_raw_max_features"],
        ram_budget_bytes=ext["ram_budget_mb"] << 20, threads=ext["threads"],
        reuse_freed_memory=ext["reuse_freed_memory"],
        attrs=attrs, image_meta=image_meta)
    if summary.exif_transposed:
        log.info("%d of %d images flipped or rotated upright by their EXIF orientation tag",
                 summary.exif_transposed, summary.n_images)
    log.info("%s", summary)
