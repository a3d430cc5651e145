"""Bootstrap imported first by every rule script, before numpy/torch/numba load.

* Puts this checkout's src/ first on sys.path, so the scripts import the package they
  ship with, also inside ``--sdm conda`` environments and on cluster nodes.
* Caps every thread pool (OpenMP, MKL, OpenBLAS, numba) at the job's ``threads``: idle
  pool threads spin, and two single-threaded jobs with default pools run ~5x slower
  side by side than alone.
"""

import os
import sys
from pathlib import Path

import __main__

_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

_threads = str(max(1, int(getattr(getattr(__main__, "snakemake", None), "threads", 1) or 1)))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = _threads
