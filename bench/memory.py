"""Peak memory of the statistics jobs at k = 1,854 (THINGS), for `make bench`.

Synthetic inputs of that size are written with the package's own format writers (a word
matrix file, and one activations file per group with ``LAYERS`` layers and predictions that
map onto the concepts), then each statistics job's package calls, exactly as its script in
``workflow/scripts/`` makes them, run in a fresh single-threaded process whose peak RSS
(``ru_maxrss``) is reported, next to the same process's RSS after its imports.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the package `bench`, not bench/bench.py

from bench._common import run_json  # noqa: E402

K = 1854
LAYERS = 4
GROUPS = 3
PERMUTATIONS = 8  # one batch of the default grid (memory does not grow with more)
# The jackknife job: its first shard of k, one batch of 8 samples (what it holds besides the
# samples, one group's k x k cross-products per layer, does not grow with them).


def write_inputs(folder: Path, k: int = K, layers: int = LAYERS, groups: int = GROUPS) -> None:
    """``similarity.h5`` and ``<group>.h5`` activations files for k concepts."""
    from emergence.formats import activations as fa
    from emergence.formats.word_matrix import write_word_matrix
    from emergence.io import atomic_h5
    from emergence.stats.cka import linear_gram
    from emergence.stats.similarity import PearsonAccumulator, similarity_matrix

    rng = np.random.default_rng(0)
    wnids = [f"c{i:04d}" for i in range(k)]
    words = [f"concept {i}" for i in range(k)]
    latent = rng.standard_normal((k, 8))
    vectors = latent @ rng.standard_normal((8, 300)) * 0.2 + rng.standard_normal((k, 300))
    w_mat = similarity_matrix(vectors)
    write_word_matrix(folder / "similarity.h5", "synthetic", {"k": k}, list(zip(wnids, words,
                      strict=True)), w_mat, 300, linear_gram(vectors))
    names = [f"layer{j}" for j in range(layers)]
    for g in range(groups):
        with atomic_h5(folder / f"{g}.h5") as h5:
            fa.write_root(h5, {}, model="synthetic", weights="random", data_config={
                "input_size": (3, 32, 32), "mean": (0, 0, 0), "std": (1, 1, 1)},
                preprocess="none", device="cpu", batch_size=8, chunk_features=1024,
                paths=[f"img/{w}/{g}.jpg" for w in wnids], layer_names=names,
                runtime={"torch_version": "", "timm_version": "", "torch_threads": 1,
                         "cpu_capability": ""}, exif_orientation=np.ones(k, np.uint16))
            fa.write_image_column(h5, "wnid", fa.image_column("wnid", wnids, k))
            fa.write_image_column(h5, "concept", fa.image_column("concept", words, k))
            top = rng.integers(0, k, (k, fa.TOP_K))
            right = rng.random(k) < 0.5  # half classified correctly, the rest elsewhere
            top[right, 0] = np.flatnonzero(right)
            fa.write_predictions(h5, top, rng.random((k, fa.TOP_K)).astype(np.float32), k,
                                 wnids, "synthetic")
            for j, name in enumerate(names):
                acc = PearsonAccumulator(k)
                acc.update((latent @ rng.standard_normal((8, 256)) * 0.3
                            + rng.standard_normal((k, 256))).astype(np.float32))
                fa.write_layer(h5, name, module=name, index=j, shape=(256,), acc=acc)


_JOBS = {
    "two_vs_two": """
rows = score_rows("synthetic", w_mat, load())
write_tsv(os.path.join(d, "scores.tsv"), rows, SCORE_COLUMNS)
""",
    "permutations": f"""
null_shard(os.path.join(d, "shard.h5"), "synthetic", w_mat, load(), seed=0, start=0,
           stop={PERMUTATIONS}, batch_size=8, device="cpu",
           progress=False)
""",
    "jackknife": """
jackknife_shard(os.path.join(d, "jack.h5"), "synthetic", w_mat, load(), seed=0,
                n_pairs=1000, shards=len(wnids), shard=0, batch_size=8, progress=False)
""",
    "significance": """
rows = significance_rows(read_tsv(os.path.join(d, "scores.tsv")),
                         read_nulls([os.path.join(d, "shard.h5")]), 0.05)
""",
    "one_vs_two": f"""
summary, tests = one_vs_two_rows("synthetic", w_mat, wnids, load(),
                                 n_permutations={PERMUTATIONS}, seed=0)
""",
}

_PRELUDE = """
import json, os, resource, sys
import numpy as np
from emergence.tables.one_vs_two_table import one_vs_two_rows
from emergence.tables.score_table import SCORE_COLUMNS, jackknife_shard, null_shard, score_rows
from emergence.tables.significance_table import significance_rows
from emergence.io import read_tsv, write_tsv
from emergence.formats.activations import load_groups
from emergence.formats.nulls import read_nulls
from emergence.formats.word_matrix import read_word_matrix
d, groups = sys.argv[1], sys.argv[2].split(",")
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS"))
base = rss()
wnids, w_mat, _ = read_word_matrix(os.path.join(d, "similarity.h5"))
def load():
    return load_groups([os.path.join(d, f"{g}.h5") for g in groups], groups, wnids, "net")
"""


def run_job(name: str, folder: Path, groups: int) -> dict:
    """Peak RSS (MB) of one job's package calls, and its RSS after the imports."""
    code = _PRELUDE + _JOBS[name] + (
        "print(json.dumps({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
        " / 1024, 'base_mb': base / 1024}))\n")
    return run_json(code, f"memory ({name})", str(folder),
                    ",".join(str(g) for g in range(groups)))


def bench_memory(rows: list[dict], k: int = K, layers: int = LAYERS,
                 groups: int = GROUPS) -> dict[str, dict]:
    """One row per statistics job: its peak RSS at k concepts."""
    matrix_mb = k * k * 8 / 2**20
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, k, layers, groups)
        for name in _JOBS:  # in order: significance reads the scores and the shard
            r = out[name] = run_job(name, folder, groups)
            rows.append({
                "check": f"peak RSS of the {name} job's statistics, k={k}, {layers} layers x "
                         f"{groups} groups (one k x k matrix: {matrix_mb:.0f} MB)",
                "target": "report; fits one machine (<= 4 GB)",
                "measured": f"{r['peak_mb']:,.0f} MB (after imports {r['base_mb']:,.0f} MB)",
                "holds": r["peak_mb"] <= 4096,
            })
    return out


if __name__ == "__main__":
    out: list[dict] = []
    print(json.dumps(bench_memory(out)))
    for row in out:
        print(f"{'OK  ' if row['holds'] else 'MISS'} {row['check']}: {row['measured']}")
