"""Results do not depend on how many threads a job was given.

Everything after the activations (the Gram/Pearson statistics, 2 vs 2, RSA, the
permutation nulls, 1 vs 2) must give the same bits at any thread count; the forward
pass runs with the configured ``extraction.threads`` whatever the scheduler grants.
Each check runs the same computation in fresh processes whose thread pools (OpenBLAS,
OpenMP, MKL, numba, torch) are sized 1 and 2, and compares the bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_with_threads(code: str, threads: int, *args: str) -> str:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    prelude = f"import torch; torch.set_num_threads({threads})\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


STATISTICS = """
import hashlib
import numpy as np
import emergence
from emergence.stats.permutation import permutation_null

rng = np.random.default_rng(0)
k = 120
x = rng.standard_normal((k, 300))
# Inputs built without BLAS (a BLAS matmul would itself depend on the thread count).
ys = [np.einsum("ij,jk->ik", x, rng.standard_normal((300, 700)), optimize=False)
      + s * rng.standard_normal((k, 700)) for s in (10.0, 30.0)]
h = hashlib.sha256()
w = emergence.similarity_matrix(x)
images = [emergence.similarity_matrix(y.astype(np.float32)) for y in ys]
h.update(w.tobytes())
engine = emergence.TwoVsTwo(w)
for i_mat in images:
    h.update(i_mat.tobytes())
    h.update(np.float64(engine.accuracy(i_mat)).tobytes())
    for method in ("pearson", "spearman"):
        h.update(np.float64(emergence.rsa_from_similarity(w, i_mat, method)).tobytes())
for method in ("pearson", "spearman"):
    null = permutation_null(w, images, seed=3, start=5, stop=37, batch_size=8,
                            rsa_method=method)
    h.update(null["two_vs_two"].tobytes())
    h.update(null["rsa"].tobytes())
predicted = np.arange(k)
predicted[::7] = (predicted[::7] + 1) % k
res = emergence.one_vs_two(w, images[0], predicted, n_permutations=16, seed=3)
for part in (res.r_true, res.r_predicted, res.passed, res.null):
    h.update(np.asarray(part).tobytes())
print(h.hexdigest())
"""


def test_statistics_are_the_same_bits_at_any_thread_count() -> None:
    assert run_with_threads(STATISTICS, 1) == run_with_threads(STATISTICS, 2)


EXTRACT = """
import hashlib, sys
import h5py
from emergence.extraction.extract import extract_statistics
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model

model = load_model(NetworkSpec("lite0", "tf_efficientnet_lite0", pretrained=False,
                               input_size=64))
layers = resolve_layers(model, ["pixels", {"module": "blocks.?", "name": "stage{i}"},
                                {"module": "classifier", "name": "logits"}])
paths, out = sys.argv[1].split(","), sys.argv[2]
extract_statistics(model, paths, layers, out, batch_size=4, preprocess="resize",
                   progress=False, threads=2)
h = hashlib.sha256()
with h5py.File(out) as f:
    assert f.attrs["torch_threads"] == 2, f.attrs["torch_threads"]
    assert f.attrs["cpu_capability"]
    for name in f.attrs["layer_names"]:
        h.update(f[f"layers/{name}/gram"][()].tobytes())
        h.update(f[f"layers/{name}/correlation"][()].tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_forward_pass_uses_the_configured_threads_whatever_the_job_got(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    one = run_with_threads(EXTRACT, 1, ",".join(paths), str(tmp_path / "one.h5"))
    two = run_with_threads(EXTRACT, 2, ",".join(paths), str(tmp_path / "two.h5"))
    assert one == two
    with h5py.File(tmp_path / "one.h5") as f:
        assert "torch_version" in f.attrs and f.attrs["torch_threads"] == 2
