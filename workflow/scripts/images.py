import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.runner import start
from emergence.sources.images.listing import report_skipped
from emergence.sources.images.spec import ImageSourceSpec

smk = snakemake  # noqa: F821
log = start(smk)
spec = ImageSourceSpec.from_params(smk.params.images)
rows, skipped = spec.build(dict(smk.output.items()), seed=smk.params.get("seed", 0),
                           inputs=dict(smk.input.items()))
if "skipped" in smk.output.keys():
    report_skipped(log, skipped, smk.output.skipped)
log.info("%d images in %d groups", len(rows), len({r.group for r in rows}))
