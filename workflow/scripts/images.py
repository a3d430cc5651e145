import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.io import write_tsv
from emergence.runner import start
from emergence.sources.image_sources import ImageSourceSpec

smk = snakemake  # noqa: F821
log = start(smk)
spec = ImageSourceSpec.from_params(smk.params.images)
rows, skipped = spec.build(smk.output.manifest, seed=smk.params.get("seed", 0),
                           image_dir=smk.output.get("images"), table=smk.input.get("table"))
if "skipped" in smk.output.keys():
    write_tsv(smk.output.skipped, [{"wnid": w, "reason": r} for w, r in skipped],
              ["wnid", "reason"])
    log.info("%d concepts skipped (see %s)", len(skipped), smk.output.skipped)
log.info("%d images in %d groups", len(rows), len({r.group for r in rows}))
