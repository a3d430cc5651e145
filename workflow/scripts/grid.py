import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.io import read_tsv, write_tsv
from emergence.runner import start
from emergence.tables.grid_table import grid_columns, grid_rows
from emergence.tables.significance_table import significance_columns

smk = snakemake  # noqa: F821
log = start(smk)
spaces = smk.params.spaces
names = smk.params.measures["names"]
tables = {s: read_tsv(path) for s, path in zip(spaces, smk.input.tables, strict=True)}
shards = {s: list(smk.input.get(f"null_{i}", [])) for i, s in enumerate(spaces)}
rows = grid_rows(tables, shards, names)
write_tsv(smk.output[0], rows, grid_columns(significance_columns(names), names))
log.info("%d language layers x %d vision layers", len(spaces), len({r["layer"] for r in rows}))
