"""One-shot GPU check for issues #4 and #5: run once on a machine with CUDA, read the table.

    python bench/gpu.py            # ~6 min on an H100; writes results/gpu.tsv
    python bench/gpu.py --quick    # small sizes, any device (how CI-less sessions try it)

Measures, in one run on the same machine:
1. CPU vs CUDA equality: 2 vs 2 accuracies and the permutation null (same seed) of planted
   k = 166 matrices, and the p-values from them.
2. Permutation throughput on CUDA at k = 166 (2 vs 2 evaluations / s; target >= 500,000).
3. The full paper analysis (1.54 M evaluations) projected from 77 layers x 1 word model x
   1 group on CUDA (target < 1 min).
4. Extraction, random-weight VGG16 / ResNet50 / InceptionV3, 830 synthetic images in 5 groups:
   images / s of extract_statistics vs a bare forward pass of the same batches, on CUDA and
   (166 images) on the CPU, and the largest CPU-vs-CUDA difference of a correlation matrix.
Every line says what it measured; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
K = 166


def planted(k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """bench.py's planted embeddings, as similarity matrices (W, I)."""
    from bench._common import planted as embeddings
    from emergence import similarity_matrix

    x, y = embeddings(k, seed)
    return similarity_matrix(x), similarity_matrix(y)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_equality(rows: list[dict], dev: str, n_perm: int) -> None:
    import emergence

    w, i = planted(K, 0)
    layers = [i] + [planted(K, s)[1] for s in (1, 2)]
    acc = {d: [float(emergence.TwoVsTwo(w, device=d).accuracy(m)) for m in layers]
           for d in ("cpu", dev)}
    null = {d: emergence.permutation_null(w, layers, seed=3, start=0, stop=n_perm, device=d,
                                          batch_size=64)["two_vs_two"] for d in ("cpu", dev)}
    p = {d: emergence.p_values(np.array(acc[d]), null[d]) for d in ("cpu", dev)}
    same = acc["cpu"] == acc[dev] and np.array_equal(null["cpu"], null[dev]) and np.array_equal(
        p["cpu"], p[dev])
    rows.append({"check": f"CPU vs {dev}: 2 vs 2 accuracy of 3 layers, {n_perm} permutations, "
                          "p-values (k=166)",
                 "measured": f"accuracies {acc[dev]}; null equal: "
                             f"{np.array_equal(null['cpu'], null[dev])}; p equal: "
                             f"{np.array_equal(p['cpu'], p[dev])}",
                 "holds": bool(same)})


def throughput(rows: list[dict], dev: str, n_perm: int) -> None:
    import emergence

    w, i = planted(K, 1)
    for batch in (256, 1024):
        emergence.permutation_null(w, [i], seed=0, start=0, stop=batch, device=dev,
                                   batch_size=batch)
        sync()
        t = time.perf_counter()
        emergence.permutation_null(w, [i], seed=0, start=0, stop=n_perm, device=dev,
                                   batch_size=batch)
        sync()
        rate = n_perm / (time.perf_counter() - t)
        rows.append({"check": f"permutation null on {dev}, k=166, batch {batch}",
                     "measured": f"{rate:,.0f} evaluations / s (target >= 500,000 on an H100)",
                     "holds": rate >= 500_000})
    rng = np.random.default_rng(2)
    w = emergence.similarity_matrix(rng.standard_normal((K, 300)))
    layers = [emergence.similarity_matrix(rng.standard_normal((K, 50))) for _ in range(77)]
    per = max(n_perm // 10, 64)
    t = time.perf_counter()
    emergence.permutation_null(w, layers, seed=0, start=0, stop=per, device=dev, batch_size=1024)
    sync()
    wall = time.perf_counter() - t
    projected = wall * (77 * 5 * 4 * 1000) / (77 * per)
    rows.append({"check": f"full paper analysis (1.54 M evaluations) on {dev}",
                 "measured": f"{projected:.0f} s projected from {77 * per:,} evaluations "
                             f"in {wall:.1f} s (target < 60 s on an H100)",
                 "holds": projected < 60})


def extraction(rows: list[dict], dev: str, n_images: int, n_cpu: int, size: int) -> None:
    import yaml
    from PIL import Image

    from emergence.extraction.extract import extract_statistics
    from emergence.extraction.preprocess import load_image, make_transform
    from emergence.sources.models.layers import resolve_layers
    from emergence.sources.models.spec import NetworkSpec, load_model

    cfg = yaml.safe_load(open(ROOT / "config" / "paper.yaml"))
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    paths = []
    for j in range(n_images):
        p = os.path.join(tmp, f"{j}.jpg")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    groups = 5 if n_images >= 5 * 4 else 1
    for net in ("vgg16", "resnet50", "inception_v3"):
        entry = cfg["networks"][net]
        layer_entries = entry["layers"]
        spec = {key: entry[key] for key in ("model", "input_size") if key in entry}
        m = load_model(NetworkSpec.from_params({**spec, "pretrained": False}, name=net))
        layers = resolve_layers(m, layer_entries)
        tf = make_transform(m.data_config, "timm")
        corr = {}
        for d, n in ((dev, n_images), ("cpu", n_cpu)):
            use = paths[:n]
            m.model.to(d)
            with torch.inference_mode():  # warm-up
                m.model(torch.stack([tf(load_image(q)) for q in use[:2]]).to(d))
            sync()
            t = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, n, 32):
                    m.model(torch.stack([tf(load_image(q)) for q in use[s:s + 32]]).to(d))
            sync()
            bare = time.perf_counter() - t
            per = n // (groups if d == dev else 1)
            t = time.perf_counter()
            for g in range(n // per):
                out = os.path.join(tmp, f"{net}-{d}-{g}.h5")
                extract_statistics(m, use[g * per:(g + 1) * per], layers, out, batch_size=32,
                                   device=d, progress=False)
            full = time.perf_counter() - t
            import h5py

            with h5py.File(os.path.join(tmp, f"{net}-{d}-0.h5")) as h5:
                corr[d] = {name: h5[f"layers/{name}/correlation"][:n_cpu, :n_cpu]
                           for name in h5["layers"]} if per >= n_cpu else {}
            rows.append({"check": f"extraction {net} on {d}, {n} images at {size} px, "
                                  f"{len(layers)} layers",
                         "measured": f"{n / full:.1f} images/s vs bare forward "
                                     f"{n / bare:.1f} ({bare / full:.2f}x; target >= 0.8x)",
                         "holds": bare / full >= 0.8})
        if corr.get("cpu") and corr.get(dev):
            diff = max(float(np.max(np.abs(corr["cpu"][k_] - corr[dev][k_]))) for k_ in corr["cpu"])
            rows.append({"check": f"extraction {net}: CPU vs {dev} correlations, first "
                                  f"{n_cpu} images",
                         "measured": f"max |difference| {diff:.2e} (float32 forward passes "
                                     "differ by device; statistics are float64 on both)",
                         "holds": diff < 1e-4})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[dict] = []
    steps = [
        ("CPU vs GPU equality", lambda: check_equality(rows, dev, 64 if args.quick else 1000)),
        ("throughput", lambda: throughput(rows, dev, 2048 if args.quick else 200_000)),
        ("extraction", lambda: extraction(rows, dev, 20 if args.quick else 830,
                                          10 if args.quick else 166, 96 if args.quick else 256)),
    ]
    for name, step in steps:
        done = len(rows)
        try:
            step()
        except Exception as exc:  # report and go on: one run is all a device session gets
            rows.append({"check": name,
                         "measured": f"FAILED: {type(exc).__name__}: {exc}", "holds": False})
        for r in rows[done:]:
            print(f"{'OK  ' if r['holds'] else 'MISS'} {r['check']}: {r['measured']}",
                  flush=True)
    out = ROOT / "results" / "gpu.tsv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["check", "measured", "holds"], delimiter="\t",
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')} -> {out}")


if __name__ == "__main__":
    main()
