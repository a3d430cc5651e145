"""`make bench`: the package against the literal method and the hardware, in one run.

Prints a table and writes it to results/bench.tsv: target, measurement, whether it holds.
Absolute times are noisy on shared machines; each line compares things measured in this run.
Usage: python bench/bench.py [--quick]   (--quick: smaller extraction and overhead checks)
Scale (k = 166 ... 1,854 against the float32 matmul bound) and the statistics jobs' peak
memory at k = 1,854: bench/scale.py and bench/memory.py, also runnable alone.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the package `bench`, not this file
# Run as a script, this folder is sys.path[0]: its coverage.py would shadow the coverage
# package that numba imports. The modules here are imported as bench.<name>.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench._common import K, planted, run_json, single_thread_env  # noqa: E402
from bench.coverage import bench_coverage  # noqa: E402
from bench.language_layers import bench_grid, bench_language_layers  # noqa: E402
from bench.memory import bench_memory  # noqa: E402
from bench.scale import bench_scale  # noqa: E402


def literal_scipy(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """Literal per-pair 2 vs 2 with scipy.stats.pearsonr on the reduced rows."""
    from itertools import combinations

    from scipy.stats import pearsonr

    k = w_mat.shape[0]
    passed = total = 0
    for c1, c2 in combinations(range(k), 2):
        keep = [j for j in range(k) if j not in (c1, c2)]
        w1, w2, i1, i2 = w_mat[c1, keep], w_mat[c2, keep], i_mat[c1, keep], i_mat[c2, keep]
        d = (pearsonr(w1, i1).statistic + pearsonr(w2, i2).statistic) - (
            pearsonr(w1, i2).statistic + pearsonr(w2, i1).statistic)
        passed += bool(d > 1e-12)
        total += 1
    return passed / total


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_two_vs_two(rows: list[dict]) -> None:
    import emergence
    from tests import literal

    x, y = planted(K, 0)
    w_mat, i_mat = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
    engine = emergence.TwoVsTwo(w_mat)
    engine.accuracy(i_mat)  # JIT warm-up (cached after the first run)
    best_of(lambda: engine.accuracy(i_mat), 200)  # let the clock and caches settle
    fast = best_of(lambda: engine.accuracy(i_mat), 1000)
    acc = float(engine.accuracy(i_mat))
    t = time.perf_counter()
    ref_np = literal.two_vs_two(w_mat, i_mat)
    slow_np = time.perf_counter() - t
    t = time.perf_counter()
    ref_sp = literal_scipy(w_mat, i_mat)
    slow_sp = time.perf_counter() - t
    same = acc == ref_np == ref_sp
    for name, slow in (("scipy.stats.pearsonr", slow_sp),
                       ("numpy dot (tests/literal.py)", slow_np)):
        rows.append({
            "check": f"2 vs 2, k={K} ({K * (K - 1) // 2} tests): vs literal with {name}",
            "target": ">= 5000x faster, identical accuracy",
            "measured": f"{slow / fast:,.0f}x ({slow:.2f} s vs {fast * 1e3:.2f} ms); "
                        f"accuracy {acc:.6f} {'identical' if same else 'DIFFERS'}",
            "holds": slow / fast >= 5000 and same,
        })


def bench_permutations(rows: list[dict]) -> None:
    code = (
        "import time, numpy as np, torch, emergence\n"
        "from bench._common import planted, K\n"
        "torch.set_num_threads(1)\n"
        "x, y = planted(K, 1)\n"
        "w, i = emergence.similarity_matrix(x), emergence.similarity_matrix(y)\n"
        "emergence.permutation_null(w, [i], seed=0, start=0, stop=8)\n"
        "t = time.perf_counter()\n"
        "emergence.permutation_null(w, [i] * 4, seed=0, start=0, stop=512, batch_size=8)\n"
        "print(512 * 4 / (time.perf_counter() - t))\n")
    rate = float(run_json(code, "permutations"))
    rows.append({"check": f"permutation null, k={K}, one thread",
                 "target": ">= 2,000 2 vs 2 evaluations / s / core",
                 "measured": f"{rate:,.0f} / s", "holds": rate >= 2000})


def bench_measures(rows: list[dict]) -> None:
    """Per-evaluation time of each measure's permutation null at k = 166, one thread, beside
    the 2 vs 2's, in one subprocess (the ratios compare things measured side by side)."""
    code = (
        "import json, time, numpy as np, torch, emergence\n"
        "from bench._common import planted, K\n"
        "from emergence.stats.cka import linear_gram\n"
        "from emergence.stats.permutation import permutation_null, permutations\n"
        "torch.set_num_threads(1)\n"
        "x, y = planted(K, 3)\n"
        "w, i = emergence.similarity_matrix(x), emergence.similarity_matrix(y)\n"
        "kw, ki = linear_gram(x), linear_gram(y)\n"
        "runs = {'two_vs_two': ('two_vs_two', 'pearson'), 'rsa pearson': ('rsa', 'pearson'),\n"
        "        'rsa kendall': ('rsa', 'kendall'), 'cka': ('cka', 'pearson'),\n"
        "        'cka_debiased': ('cka_debiased', 'pearson'),\n"
        "        'mutual_knn': ('mutual_knn', 'pearson')}\n"
        "n, layers, out = 256, 4, {}\n"
        "def run(m, method, stop):\n"
        "    permutation_null(w, [i] * layers, seed=0, start=0, stop=stop, measures=(m,),\n"
        "                     rsa_method=method, word_gram=kw, image_grams=[ki] * layers)\n"
        "for name, (m, method) in runs.items():\n"
        "    run(m, method, 8)  # JIT warm-up\n"
        "for rep in range(3):  # interleaved, best of 3: the machine drifts\n"
        "    for name, (m, method) in runs.items():\n"
        "        t = time.perf_counter()\n"
        "        run(m, method, n)\n"
        "        dt = (time.perf_counter() - t) / (n * layers)\n"
        "        out[name] = min(out.get(name, dt), dt)\n"
        "t = time.perf_counter()\n"
        "permutations(0, 0, n, K)\n"
        "out['drawing the permutations'] = (time.perf_counter() - t) / (n * layers)\n"
        "print(json.dumps(out))\n")
    times = run_json(code, "measures")
    base = times["two_vs_two"]
    parts = [f"{name} {t * 1e3:.3f} ms ({t / base:.2f}x)" for name, t in times.items()]
    slowest = max(t for name, t in times.items() if name != "two_vs_two")
    rows.append({"check": f"permutation null per evaluation, k={K}, one thread, by measure "
                          "(4 layers x 256 permutations each)",
                 "target": "each new measure's null <= 2x the 2 vs 2's per evaluation",
                 "measured": "; ".join(parts), "holds": slowest <= 2 * base})


INTERVAL_MEASURES = ("two_vs_two", "rsa", "cka", "cka_debiased")


def intervals_timing() -> dict[str, float]:
    """Best of 3 (alternating) seconds of one network x word model's jackknife and of the
    bootstrap it replaced, at the demo's size (run in a single-threaded subprocess)."""
    import emergence
    from emergence.stats.bootstrap import bootstrap_distribution
    from emergence.stats.cka import linear_gram
    from emergence.stats.jackknife import jackknife_distribution

    rng = np.random.default_rng(5)
    k, n_layers = 169, 11
    z = rng.standard_normal((k, 8))
    x = z @ rng.standard_normal((8, 300)) * 0.3 + rng.standard_normal((k, 300))
    w, kw = emergence.similarity_matrix(x), linear_gram(x)
    groups = []
    for _ in range(2):
        ys = [z @ rng.standard_normal((8, 200)) * 0.1 * (j + 1) + rng.standard_normal((k, 200))
              for j in range(n_layers)]
        groups.append(([emergence.similarity_matrix(y) for y in ys],
                       [linear_gram(y) for y in ys]))

    def jack(n_pairs: int = 1000, layers: int = n_layers) -> None:
        for mats, grams in groups:
            jackknife_distribution(w, mats[:layers], seed=0, n_pairs=n_pairs, word_gram=kw,
                                   image_grams=grams[:layers], measures=INTERVAL_MEASURES,
                                   batch_size=64)

    def boot(stop: int = 1000, layers: int = n_layers) -> None:
        for mats, grams in groups:
            bootstrap_distribution(w, mats[:layers], seed=0, start=0, stop=stop, word_gram=kw,
                                   image_grams=grams[:layers], batch_size=8,
                                   measures=(*INTERVAL_MEASURES, "mutual_knn"))

    jack(5, 1)
    boot(8, 1)  # JIT warm-up
    best = {"jack": 1e9, "boot": 1e9}
    for _ in range(3):
        for name, fn in (("jack", jack), ("boot", boot)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def bench_intervals(rows: list[dict]) -> None:
    """The demo's intervals, one network x word model at k = 169 (11 layers, 2 groups, one
    thread): the jackknife (1 + k + 1,000 samples of the four measures with an interval and
    the 2 vs 2's margin) against the bootstrap it replaced (1,000 samples of all five
    measures)."""
    best = run_json("import json\nfrom bench.bench import intervals_timing\n"
                    "print(json.dumps(intervals_timing()))\n", "intervals")
    ratio = best["jack"] / best["boot"]
    rows.append({"check": "the demo's intervals for one network x word model (k = 169, 11 layers, "
                          "2 groups), one thread: jackknife vs the bootstrap it replaced",
                 "target": "<= 1.5x the bootstrap's time",
                 "measured": f"{ratio:.2f}x ({best['jack']:.1f} s vs {best['boot']:.1f} s)",
                 "holds": ratio <= 1.5})


def bench_full_analysis(rows: list[dict], cores: int) -> None:
    """77 layers x 5 groups x 4 word models x 1000 permutations on random matrices.

    Measured on a slice (one word model x one group x all 77 layers x 64 permutations
    per core, cores in parallel) and scaled: every evaluation costs the same.
    """
    per_core = 192
    code = (
        "import time, numpy as np, torch, emergence\n"
        "from bench._common import planted, K\n"
        "torch.set_num_threads(1)\n"
        "rng = np.random.default_rng(2)\n"
        "w = emergence.similarity_matrix(rng.standard_normal((K, 300)))\n"
        "layers = [emergence.similarity_matrix(rng.standard_normal((K, 50))) for _ in range(77)]\n"
        "emergence.permutation_null(w, layers[:1], seed=0, start=0, stop=8)\n"
        f"t = time.perf_counter()\n"
        f"emergence.permutation_null(w, layers, seed=0, start=0, stop={per_core})\n"
        "print(time.perf_counter() - t)\n")
    env = single_thread_env()
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    wall = max(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
    done = per_core * 77 * cores
    total = 77 * 5 * 4 * 1000
    projected = wall * total / done
    rows.append({"check": f"full paper analysis, {total:,} evaluations, {cores} CPU cores",
                 "target": "< 15 min on 2 CPU cores",
                 "measured": f"{projected / 60:.1f} min projected ({done:,} evaluations "
                             f"in {wall:.1f} s on {cores} processes side by side)",
                 "holds": projected < 900})


def bench_extraction(rows: list[dict], n_images: int, groups: int) -> None:
    """Images/s of extract_statistics vs a bare forward pass; peak RSS for VGG16.

    At the workflow's default extraction settings (batch size, RAM budget, freed memory
    kept in the heap). Two bare passes per group: a plain torch loop (what a user's own
    loop gets), and the same loop with freed memory kept in the heap as extraction keeps
    it (``forward.reused_heap``): the first ratio is extraction against running the
    network yourself, the second the cost of the hooks, staging and statistics alone.
    Each pass runs in a fresh process (glibc's allocator settings cannot be restored
    exactly once changed), the three kinds alternating group by group so that all see the
    same machine (a shared VM drifts by tens of percent over minutes)."""
    import tempfile

    from PIL import Image

    code = """
import contextlib, json, os, resource, sys, time
import torch, yaml
from emergence.extraction.extract import extract_statistics
from emergence.extraction.forward import reused_heap
from emergence.extraction.preprocess import load_image, make_transform
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model
kind, folder, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paths = [os.path.join(folder, f"{i}.jpg") for i in range(first, first + count)]
torch.manual_seed(0)
m = load_model(NetworkSpec("vgg16", "vgg16.tv_in1k", pretrained=False))
layers = resolve_layers(m, yaml.safe_load(open("config/paper.yaml"))["networks"]["vgg16"]["layers"])
schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml"))  # the workflow's defaults
defaults = {k: v.get("default") for k, v in
            schema["properties"]["extraction"]["properties"].items()}
batch = defaults["batch_size"]
tf = make_transform(m.data_config, "timm")
t = time.perf_counter()
if kind == "extraction":
    extract_statistics(m, paths, layers, os.path.join(folder, f"{first}.h5"), batch_size=batch,
                       progress=False, ram_budget_bytes=defaults["ram_budget_mb"] << 20,
                       reuse_freed_memory=defaults["reuse_freed_memory"])
else:
    with torch.inference_mode(), reused_heap() if kind == "heap" else contextlib.nullcontext():
        for s in range(0, len(paths), batch):
            m.model(torch.stack([tf(load_image(p)) for p in paths[s:s + batch]]))
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "layers": len(layers), "batch": batch}))
"""
    kinds = ("plain", "heap", "extraction")
    per = n_images // groups
    took: dict[str, list[float]] = {kind: [] for kind in kinds}
    rss, info = 0, {}
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as folder:
        rng = np.random.default_rng(0)
        for i in range(per * groups):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
                os.path.join(folder, f"{i}.jpg"))
        for g in range(groups):
            for kind in kinds:  # the network at the machine's threads
                info = run_json(code, "extraction", kind, folder, str(g * per), str(per),
                                single_thread=False)
                took[kind].append(info["seconds"])
                if kind == "extraction":
                    rss = max(rss, info["rss_kb"])
    n = per * groups
    full = sum(took["extraction"])
    what = (f"extraction, VGG16 (random), {n} images at 224 px, {info['layers']} layers, "
            f"{groups} groups, the workflow's default batch size ({info['batch']}) and "
            "settings, each pass a fresh process, the passes alternating group by group")
    for kind, label, target in (
            ("plain", "against a plain torch forward loop",
             ">= 0.85x the images/s of a bare forward pass"),
            ("heap", "against the same loop with freed memory kept in the heap as extraction "
                     "keeps it (the cost of the hooks, staging and statistics alone)",
             ">= 0.85x (the aim for the hooks' own cost)")):
        ratio = sum(took[kind]) / full
        per_group = [b / e for b, e in zip(took[kind], took["extraction"], strict=True)]
        rows.append({"check": f"{what}: {label}", "target": target,
                     "measured": f"{ratio:.2f}x ({n / full:.1f} vs "
                                 f"{n / sum(took[kind]):.1f} images/s; per group "
                                 f"{min(per_group):.2f}-{max(per_group):.2f}x)",
                     "holds": ratio >= 0.85})
    rss_gb = rss / 1024**2
    rows.append({"check": f"extraction peak RSS, VGG16, {n} images (the extraction process)",
                 "target": "<= 4 GB (keeping all activations would need 46 GiB at 830)",
                 "measured": f"{rss_gb:.2f} GB", "holds": rss_gb <= 4.0})


def bench_overhead(rows: list[dict]) -> None:
    """The demo's wall time against the sum of its jobs' own compute (benchmark files)."""
    import re
    from datetime import datetime

    bench_dir = ROOT / "results" / "benchmarks"
    stamp = re.compile(r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
    runs = []  # complete runs only: the newest log that finished its DAG
    for log in sorted((ROOT / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text()
        stamps = stamp.findall(text)
        if len(stamps) >= 2 and "(100%) done" in text:
            runs.append(stamps)
    if not bench_dir.is_dir() or not runs:
        rows.append({"check": "Snakemake overhead (demo)", "target": "<= 1.5x",
                     "measured": "not measured: run `make demo` first", "holds": False})
        return
    job_s = 0.0
    n = 0
    for f in bench_dir.rglob("*.tsv"):
        with open(f) as fh:
            rec = list(csv.DictReader(fh, delimiter="\t"))[-1]
        job_s += float(rec["s"])
        n += 1
    t0, t1 = (datetime.strptime(runs[-1][i], "%a %b %d %H:%M:%S %Y") for i in (0, -1))
    wall = (t1 - t0).total_seconds()
    cores = os.cpu_count() or 1
    ratio = wall / (job_s / cores)
    rows.append({"check": f"Snakemake overhead, demo ({n} benchmarked jobs, {cores} cores)",
                 "target": "wall <= 1.5x (sum of job times / cores)",
                 "measured": f"{ratio:.2f}x (wall {wall:.0f} s, jobs {job_s:.0f} s)",
                 "holds": ratio <= 1.5})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="166 instead of 830 images; a fifth "
                    "of the calibration studies")
    args = ap.parse_args()
    cores = min(os.cpu_count() or 1, 2)
    rows: list[dict] = []
    checks = [lambda: bench_two_vs_two(rows), lambda: bench_permutations(rows),
              lambda: bench_measures(rows),
              lambda: bench_intervals(rows),
              lambda: bench_full_analysis(rows, cores),
              lambda: bench_scale(rows),
              lambda: bench_memory(rows),
              lambda: bench_extraction(rows, 166 if args.quick else 830, 1 if args.quick else 5),
              lambda: bench_overhead(rows),
              lambda: bench_language_layers(rows),
              lambda: bench_grid(rows),
              lambda: bench_coverage(rows, quick=args.quick, verbose=False)]
    for check in checks:  # print each line as it is measured: a late failure loses nothing
        done = len(rows)
        check()
        for r in rows[done:]:
            print(f"{'OK  ' if r['holds'] else 'MISS'} {r['check']}: {r['measured']}", flush=True)
    out = ROOT / "results" / "bench.tsv"
    out.parent.mkdir(exist_ok=True)
    header = ["check", "target", "measured", "holds"]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, header, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for r in rows:
        print(f"{'OK  ' if r['holds'] else 'MISS'} {r['check']}\n     target {r['target']}; "
              f"measured {r['measured']}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
