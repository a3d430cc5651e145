"""Calibration of the intervals by simulation: `make bench` rows and the README's table.

Generative models with a known estimand. A finite population of N = 50 k concepts has a
latent structure z (8 dimensions) that a word embedding (40 dimensions) and an image
embedding (60 dimensions) both express, with noise:

* ``concepts``: one image per concept, fixed in the population; a study draws k concepts
  (without replacement). Concept variance only.
* ``groups-3``, ``groups-5``: every study also draws g image groups: group h renders every
  concept through its own distortion of the image map, a quality factor on the signal and
  a shared offset (a style, the same for all concepts of the group), plus image noise per
  concept and group. The headline value is the mean over groups; concept and image
  variance (intervals over both factors, the default from 3 groups on; the concepts-only
  interval's coverage is printed beside).
* ``groups-2``: two such groups drawn once, with the population (its images fixed per
  concept): the estimand is over concepts for these two renderings, and the default for
  2 groups (concepts only) is checked against it.
* ``null``: the image embedding shares nothing with the words (no latent structure).

The estimand is the measure's mean over studies (random k-sets and, with groups, random
styles and images); the ideal interval width is 3.92 x its standard deviation over
studies (both from the simulated studies themselves). Per model, k and measure the rows
report the coverage of the nominal 95 % interval, whether every interval contains its own
estimate, the mean width over the ideal, and for three image layers of equal truth
(``concepts`` and ``null``) the rate of p < 0.05 of the paired test layer 1 - layer 0, of
the Holm family-wise test over {layer 1, layer 2} - layer 0 and of the depth trend.

``holds``: the coverage's 95 % Wilson interval over the studies meets 93-97 %, the mean
width is at most 1.15x the ideal, every interval contains its estimate, and the paired
tests' rates' Wilson intervals meet 3-7 % (family-wise: at most 7 %).

Usage: python bench/coverage.py [--quick] [--k 20 50] [--models concepts null]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
# Run as a script, this folder is sys.path[0]: its coverage.py would shadow the coverage
# package that numba imports. The modules here are imported as bench.<name>.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

MEASURES = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")
K_VALUES = (20, 50, 166, 500)
LATENT, WORD_DIM, IMAGE_DIM = 8, 40, 60
SIGNAL, NOISE = 0.4, 3.0
STYLE, OFFSET, QUALITY = 0.6, 1.5, 0.25  # a group's map distortion, shared offset (per
# unit) and the log-SD of its signal factor
POPULATION = 50  # N = POPULATION x k concepts


@dataclass(frozen=True)
class Model:
    name: str
    groups: int = 1
    signal: float = SIGNAL
    layers: int = 1  # image layers of equal truth (paired tests when 3)
    fixed_groups: bool = False  # groups drawn once with the population (groups-2)


def studies_for(k: int, quick: bool) -> int:
    n = {20: 1000, 50: 600, 166: 300, 500: 100}.get(k, 200)
    return max(40, n // 5) if quick else n


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


class Population:
    """Latent vectors, word vectors and the fixed images of ``concepts``/``null``."""

    def __init__(self, n: int, seed: int, layers: int, groups: int = 0) -> None:
        rng = np.random.default_rng([seed, 1])
        self.z = rng.standard_normal((n, LATENT))
        self.word = (self.z @ rng.standard_normal((LATENT, WORD_DIM)) * SIGNAL
                     + rng.standard_normal((n, WORD_DIM)) * NOISE)
        self.image_map = rng.standard_normal((LATENT, IMAGE_DIM))
        # one fixed image per concept and layer: the same map, independent noise, so the
        # layers' estimands are equal
        self.images = [self.z @ self.image_map * SIGNAL + rng.standard_normal((n, IMAGE_DIM))
                       * NOISE for _ in range(layers)]
        self.null = [rng.standard_normal((n, IMAGE_DIM)) * NOISE for _ in range(layers)]
        self.grouped = [render(self.z, self.image_map, rng) for _ in range(groups)]


def render(z: np.ndarray, image_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image group of the concepts ``z``: its style (map distortion, signal factor,
    offset) shared by all of them, image noise per concept."""
    style = image_map + STYLE * rng.standard_normal((LATENT, IMAGE_DIM))
    quality = SIGNAL * math.exp(QUALITY * rng.standard_normal())
    offset = OFFSET * rng.standard_normal(IMAGE_DIM)
    return z @ style * quality + offset + rng.standard_normal((len(z), IMAGE_DIM)) * NOISE


def draw(pop: Population, model: Model, k: int, rng: np.random.Generator
         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One study: the word vectors of k concepts and its image embeddings (groups x layers,
    group-major)."""
    pick = rng.choice(len(pop.z), size=k, replace=False)
    if model.fixed_groups:
        return pop.word[pick], [x[pick] for x in pop.grouped]
    if model.groups == 1:
        source = pop.null if model.name == "null" else pop.images
        return pop.word[pick], [x[pick] for x in source[:model.layers]]
    return pop.word[pick], [render(pop.z[pick], pop.image_map, rng)
                            for _ in range(model.groups)]


def run(model: Model, k: int, n_studies: int, n_pairs: int, seed: int = 0) -> dict:
    """Simulate ``n_studies`` studies; per measure: estimates, intervals (two factors and,
    with groups, concepts only), paired-test p-values."""
    from emergence.stats.cka import linear_gram
    from emergence.stats.intervals import (
        RULES,
        concept_variance,
        group_term,
        holm,
        interval,
        t_p_value,
        trend_weights,
        two_factor_variance,
    )
    from emergence.stats.jackknife import COMPANIONS, jackknife_distribution, jackknife_pairs
    from emergence.uncertainty import resolve_factors

    pop = Population(POPULATION * k, seed, model.layers,
                     model.groups if model.fixed_groups else 0)
    factors = resolve_factors("auto", model.groups)
    rng = np.random.default_rng([seed, 2, k, model.groups, model.layers])
    pairs = jackknife_pairs(seed, k, n_pairs)
    knn = min(10, k // 4)
    rec: dict[str, dict[str, list]] = {m: {"est": [], "low": [], "high": [], "low_c": [],
                                           "high_c": [], "p1": [], "fwe": [], "trend": [],
                                           "group": []}
                                       for m in MEASURES}
    for _ in range(n_studies):
        word, images = draw(pop, model, k, rng)
        w = np.corrcoef(word)  # the Pearson similarities (the pipeline's come from moments)
        mats = [np.corrcoef(x) for x in images]
        vals = jackknife_distribution(w, mats, seed=seed, n_pairs=n_pairs, measures=MEASURES,
                                      word_gram=linear_gram(word),
                                      image_grams=[linear_gram(x) for x in images],
                                      knn_k=knn, batch_size=256)
        for m in MEASURES:
            v = vals[m]
            comp = vals.get(COMPANIONS.get(m, ""))
            rule = RULES.get(m, "smooth")
            r = rec[m]
            if model.groups > 1 and factors == "both":
                est = float(v[0].mean())
                var = two_factor_variance(v.T[:, :, None], k, pairs, rule=rule,
                                          group_companions=None if comp is None
                                          else comp.T[:, :, None])
                lo, hi = interval(est, var)
                r["group"].append(float(group_term(
                    v.T[:, :, None], k, pairs, rule=rule,
                    group_companions=None if comp is None else comp.T[:, :, None])[0]))
                vc = concept_variance(v.mean(axis=1), k, pairs, rule=rule,
                                      companion=None if comp is None else comp.mean(axis=1))
                lo_c, hi_c = interval(est, vc)
                r["low_c"].append(float(lo_c))
                r["high_c"].append(float(hi_c))
            else:  # one group (column 0: layer 0), or the mean over groups, concepts only
                g = v[:, :model.groups].mean(axis=1)
                gc = None if comp is None else comp[:, :model.groups].mean(axis=1)
                est = float(g[0])
                var = concept_variance(g, k, pairs, rule=rule, companion=gc)
                lo, hi = interval(est, var)
            r["est"].append(est)
            r["low"].append(float(np.ravel(lo)[0]))
            r["high"].append(float(np.ravel(hi)[0]))
            if model.layers >= 3:
                ps = []
                for j in (1, 2):
                    diff = v[:, j] - v[:, 0]
                    cd = None if comp is None else comp[:, j] - comp[:, 0]
                    vd = concept_variance(diff, k, pairs, rule=rule, companion=cd)
                    ps.append(float(t_p_value(diff[0], vd)))
                r["p1"].append(ps[0])
                r["fwe"].append(float(np.nanmin(holm(ps))))
                cw = trend_weights(np.arange(model.layers))
                tv = v[:, :model.layers] @ cw
                tc = None if comp is None else comp[:, :model.layers] @ cw
                vt = concept_variance(tv, k, pairs, rule=rule, companion=tc)
                r["trend"].append(float(t_p_value(tv[0], vt)))
    return rec


def oracle_width(sd: float, group: float, g: int, draws: int = 200_000) -> float:
    """The mean width (÷ 3.92 sd) of the 95 % interval of an oracle that knows the concept
    part of the variance, A = sd² - B, and the group part's share s = B / sd² (B: the mean
    of :func:`~emergence.stats.intervals.group_term` over the studies), and estimates only
    the group part from the g groups (B χ²_{g-1} / (g-1)), with the t quantile of
    Satterthwaite's ν = (g-1) / s² for these known parts: what the width target costs when
    the image groups are a random factor (for a normal mean with a variance estimated on ν
    degrees of freedom the t interval is the shortest unbiased one)."""
    from scipy import stats

    total = sd * sd
    b = min(max(group, 0.0), total)
    a = total - b
    if b <= 0 or total <= 0:
        return 1.0
    share = b / total
    chi = np.random.default_rng(0).chisquare(g - 1, draws) / (g - 1)
    t = stats.t.ppf(0.975, (g - 1) / share ** 2)
    return float(np.mean(t * np.sqrt(a + b * chi)) / (1.96 * sd))


def summarise(model: Model, k: int, rec: dict, seconds: float) -> list[dict]:
    """One row per measure (and per test family), with ``holds``. A measure the tables give
    no interval (``WITHHELD``) holds (no wrong interval is given); its row says what the
    jackknife's would be."""
    from emergence.uncertainty import WITHHELD

    rows = []
    for m, r in rec.items():
        est, lo, hi = (np.array(r[x]) for x in ("est", "low", "high"))
        ok = np.isfinite(lo) & np.isfinite(hi)
        n = int(ok.sum())
        truth, sd = float(est.mean()), float(est.std(ddof=1))
        hits = int(((lo <= truth) & (truth <= hi))[ok].sum())
        contains = bool(((lo <= est) & (est <= hi))[ok].all())
        width = float((hi - lo)[ok].mean() / (3.92 * sd)) if sd > 0 and n else math.nan
        cov = hits / n if n else math.nan
        cl, ch = wilson(hits, n)
        holds = bool(n == len(est) and cl <= 0.97 and ch >= 0.93 and width <= 1.15
                     and contains)
        extra = ""
        withheld = m in WITHHELD
        if withheld:  # the tables give no interval: none is wrong; say what it would be
            holds = True
            extra = "; WITHHELD in the tables (NaN + reason): no calibrated interval"
        if r["group"]:
            ow = oracle_width(sd, float(np.mean(r["group"])), model.groups)
            extra += f"; oracle width {ow:.2f}x"
        if r["low_c"]:
            lc, hc = np.array(r["low_c"]), np.array(r["high_c"])
            extra += f"; concepts-only interval {np.mean((lc <= truth) & (truth <= hc)):.3f}"
        rows.append({
            "check": f"interval coverage, {model.name}, k={k}, {m}",
            "target": "coverage 93-97 % (Wilson 95 % CI meets it), width <= 1.15x ideal, "
                      "contains its estimate",
            "measured": f"coverage {cov:.3f} ({cl:.3f}-{ch:.3f}, {n} studies), contains "
                        f"estimate {'all' if contains else 'NOT all'}, width {width:.2f}x "
                        f"(truth {truth:.4f}, SD {sd:.4f}){extra}; {seconds:.0f} s",
            "holds": holds, "model": model.name, "k": k, "measure": m, "coverage": cov,
            "contains": contains, "width": width, "studies": n})
        if r["p1"] and not withheld:
            for key, what, upper_only in (("p1", "paired test layer 1 - layer 0", False),
                                          ("fwe", "Holm family {1, 2} - 0", True),
                                          ("trend", "depth-trend slope", False)):
                p = np.array(r[key])
                fin = np.isfinite(p)
                hits_p = int((p[fin] < 0.05).sum())
                rate = hits_p / max(int(fin.sum()), 1)
                pl, ph = wilson(hits_p, int(fin.sum()))
                good = ph >= 0.03 and pl <= 0.07 if not upper_only else pl <= 0.07
                rows.append({
                    "check": f"false positives, {model.name}, k={k}, {m}: {what}",
                    "target": "p < 0.05 rate 3-7 % (family-wise: <= 7 %)",
                    "measured": f"{rate:.3f} ({pl:.3f}-{ph:.3f}, {int(fin.sum())} studies)",
                    "holds": bool(good), "model": model.name, "k": k, "measure": m,
                    "rate": rate})
    return rows


MODELS = {"concepts": Model("concepts", layers=3), "null": Model("null", signal=0.0,
                                                                  layers=3),
          "groups-2": Model("groups-2", groups=2, fixed_groups=True),
          "groups-3": Model("groups-3", groups=3),
          "groups-5": Model("groups-5", groups=5)}


def bench_coverage(rows: list[dict], *, quick: bool = False, ks: tuple[int, ...] = K_VALUES,
                   models: tuple[str, ...] = tuple(MODELS), n_pairs: int | None = None,
                   verbose: bool = True) -> None:
    """Append the calibration rows (the default pairs: the pipeline's default)."""
    import numba

    from emergence.stats.jackknife import DEFAULT_PAIRS

    pairs = DEFAULT_PAIRS if n_pairs is None else n_pairs
    for k in ks:
        for name in models:
            model = MODELS[name]
            if k >= 500:  # the costliest cells: one layer (no paired tests), 3 groups only
                if model.groups > 1 and model.groups != 3:
                    continue
                model = Model(model.name, model.groups, model.signal, 1, model.fixed_groups)
            t = time.perf_counter()
            numba.set_num_threads(1 if k < 166 else min(os.cpu_count() or 1, 2,
                                                        numba.config.NUMBA_NUM_THREADS))
            rec = run(model, k, studies_for(k, quick), pairs)
            new = summarise(model, k, rec, time.perf_counter() - t)
            rows.extend(new)
            if verbose:
                for r in new:
                    print(f"{'OK  ' if r['holds'] else 'MISS'} {r['check']}: {r['measured']}",
                          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a fifth of the studies")
    ap.add_argument("--k", type=int, nargs="*", default=list(K_VALUES))
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--pairs", type=int, default=None, help="delete-two pairs (default: "
                    "the pipeline's)")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(min(os.cpu_count() or 1, 2)))
    rows: list[dict] = []
    t = time.perf_counter()
    bench_coverage(rows, quick=args.quick, ks=tuple(args.k), models=tuple(args.models),
                   n_pairs=args.pairs)
    print(f"# {len(rows)} rows, {sum(r['holds'] for r in rows)} hold; "
          f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
