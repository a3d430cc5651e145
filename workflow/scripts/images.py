import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.io import write_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
log = start(smk)
img = smk.params.images
if img["source"] == "emoji":
    from emergence.sources.images import build_emoji_images

    rows = build_emoji_images(smk.input.table, img["styles"], img["render_size"],
                              smk.output.images, smk.output.manifest)
else:
    from emergence.sources.imagenet import build_imagenet_manifest

    rows, skipped = build_imagenet_manifest(img, smk.output.manifest, smk.params.seed)
    write_tsv(smk.output.skipped, [{"wnid": w, "reason": r} for w, r in skipped],
              ["wnid", "reason"])
    log.info("%d concepts skipped (see %s)", len(skipped), smk.output.skipped)
log.info("%d images in %d groups", len(rows), len({r.group for r in rows}))
