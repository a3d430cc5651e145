"""What every benchmark shares: the planted embeddings and one way to run a measurement in a
fresh interpreter (bench.py, scale.py, memory.py and gpu.py import it; it imports none of them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
K = 166  # the paper's concept count

__all__ = ["K", "ROOT", "planted", "run_json", "single_thread_env"]


def single_thread_env() -> dict[str, str]:
    """The environment of a benchmark subprocess: this checkout first, every pool at 1 thread."""
    return dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")


def run_json(code: str, what: str, *argv: str, single_thread: bool = True) -> Any:
    """Run ``code`` (with ``argv``) in a fresh interpreter, this checkout first, every thread
    pool at one thread unless ``single_thread`` is False, and return the JSON value of its
    last stdout line; a RuntimeError naming ``what`` with its stderr if it fails."""
    env = single_thread_env() if single_thread else dict(
        os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"the {what} benchmark failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def planted(k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two embeddings of k concepts (300 and 500 dimensions) sharing an 8-d latent space."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 8))
    x = latent @ rng.standard_normal((8, 300)) * 0.12 + rng.standard_normal((k, 300))
    y = latent @ rng.standard_normal((8, 500)) * 0.12 + rng.standard_normal((k, 500))
    return x, y
