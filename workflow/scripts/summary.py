import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.io import read_tsv, write_tsv
from emergence.runner import start

smk = snakemake  # noqa: F821
log = start(smk)
tables = [read_tsv(p) for p in smk.input]
columns = list(tables[0][0]) if tables and tables[0] else []
write_tsv(smk.output[0], [r for t in tables for r in t], columns)
