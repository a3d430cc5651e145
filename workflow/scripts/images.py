import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.images import build_emoji_images
from emergence.runner import start

smk = snakemake  # noqa: F821
log = start(smk)
img = smk.params.images
rows = build_emoji_images(smk.input.table, img["styles"], img["render_size"],
                          smk.output.images, smk.output.manifest)
log.info("%d images in %d groups", len(rows), len(img["styles"]))
