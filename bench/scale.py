"""Scale rows of `make bench`: the 2 vs 2 test at k = 166 ... 1,854 vs the float32 matmul bound.

The bound. One 2 vs 2 evaluation needs one k x k x k cross product ``C = W I^T`` (2 k^3 flops);
everything else is O(k^2). The CPU engine computes it in float32 (then certifies every pair against
float64, see ``emergence.stats._two_vs_two_cpu``). The bound at k is the time of that float32
product alone, ``(k x k) @ (k x k)`` with torch (the engine's own BLAS call), single-threaded, in
the same process and minute as the engine it is compared with (best of repeats, and the faster of
the plain product and the engine's, whose right factor is zero-padded to a multiple of 8 columns:
at k = 1,854 the padded one is the faster). For permutations the bound is the faster of that
product and the product of a batch of the pipeline's default size (``permutations.batch_size``: 8
matrices as one ``(8k x k) @ (k x k)``, as the engine computes it) divided by 8. The ratio is
engine time / bound: how much the rest of the test (staging, permuting, the pair pass,
certification, Python) costs on top of the one thing it cannot avoid.

Each k runs in its own single-threaded subprocess (numba, torch, BLAS at 1 thread).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the package `bench`, not bench/bench.py

from bench._common import run_json  # noqa: E402

KS = (166, 500, 1000, 1854)
BATCH = 8  # the schema's default permutations.batch_size
TARGET = 3.0  # per-permutation cost within 3x of the matmul bound

_CODE = """
import json, sys, time
import numpy as np, torch, emergence
from bench._common import planted
from emergence.stats.permutation import permutations
torch.set_num_threads(1)
k, batch = int(sys.argv[1]), int(sys.argv[2])

def best(fn, budget):  # best of repeats within ~budget seconds (at least 3)
    fn()
    t = time.perf_counter(); fn(); once = time.perf_counter() - t
    times = [once]
    for _ in range(max(2, min(1000, int(budget / max(once, 1e-6))))):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)

x, y = planted(k, 0)
w, i = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
engine = emergence.TwoVsTwo(w)
a32 = i.astype(np.float32); b32 = np.ascontiguousarray(w.T, dtype=np.float32)
ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
tbp = engine.cpu_engine.w32_t.clone()  # W^T padded to kp columns, as the engine multiplies
perms = permutations(1, 0, batch, k)
stack = torch.from_numpy(np.ascontiguousarray(np.stack([i[p][:, p] for p in perms]),
                                              dtype=np.float32).reshape(-1, k))
budget = 3.0
out = {"k": k, "pairs": k * (k - 1) // 2}
# Engine and bound alternate, so that both see the same machine.
out["eval_s"] = best(lambda: engine.accuracy(i), budget)
out["mm_s"] = min(best(lambda: ta @ tb, budget), best(lambda: ta @ tbp, budget))
out["perm_s"] = best(lambda: engine.permuted_accuracy(i, perms), budget) / batch
out["mm_batch_s"] = min(best(lambda: stack @ tb, budget),
                        best(lambda: stack @ tbp, budget)) / batch
out["eval2_s"] = best(lambda: engine.accuracy(i), budget)
out["mm2_s"] = min(best(lambda: ta @ tb, budget), best(lambda: ta @ tbp, budget))
emergence.permutation_null(w, [i], seed=0, start=0, stop=batch, batch_size=batch)  # JIT
t = time.perf_counter()
emergence.permutation_null(w, [i] * 4, seed=0, start=0, stop=2 * batch, batch_size=batch)
out["null_per_s"] = 2 * batch * 4 / (time.perf_counter() - t)
print(json.dumps(out))
"""


def measure(k: int, batch: int = BATCH) -> dict:
    """One k's timings (seconds) in a single-threaded subprocess."""
    r = run_json(_CODE, f"scale (k={k})", str(k), str(batch))
    r["eval_s"] = min(r["eval_s"], r.pop("eval2_s"))
    r["mm_s"] = min(r["mm_s"], r.pop("mm2_s"))
    return r


def bench_scale(rows: list[dict], ks: tuple[int, ...] = KS) -> list[dict]:
    """A row per k for one evaluation and one for the permutations; returns the raw timings."""
    raw = []
    for k in ks:
        r = measure(k)
        raw.append(r)
        eval_ratio = r["eval_s"] / r["mm_s"]
        r["mm_perm_s"] = min(r["mm_s"], r["mm_batch_s"])
        perm_ratio = r["perm_s"] / r["mm_perm_s"]
        rows.append({
            "check": f"2 vs 2, k={k} ({r['pairs']:,} pairs), one evaluation, one thread",
            "target": f"report: time vs the float32 matmul bound (k x k @ k x k, {2 * k**3:.3g} "
                      "flops)",
            "measured": f"{r['eval_s'] * 1e3:.3g} ms; bound {r['mm_s'] * 1e3:.3g} ms; "
                        f"ratio {eval_ratio:.2f}x",
            "holds": True,
        })
        rows.append({
            "check": f"permutations, k={k}, one thread, batches of {BATCH}",
            "target": f"per-permutation cost <= {TARGET:g}x the float32 matmul bound",
            "measured": f"{1 / r['perm_s']:,.1f} / s ({r['perm_s'] * 1e3:.3g} ms each; bound "
                        f"{r['mm_perm_s'] * 1e3:.3g} ms; ratio {perm_ratio:.2f}x); "
                        f"permutation_null with RSA, 4 layers: {r['null_per_s']:,.1f} "
                        "evaluations / s",
            "holds": perm_ratio <= TARGET,
        })
    return raw


if __name__ == "__main__":
    ks = tuple(int(a) for a in sys.argv[1:]) or KS
    out: list[dict] = []
    for r in bench_scale(out, ks):
        print(json.dumps(r))
    for row in out:
        print(f"{'OK  ' if row['holds'] else 'MISS'} {row['check']}: {row['measured']}")
