"""Intervals and paired tests of the result tables from the jackknife shards.

The tables (``significance.tsv``, ``comparisons.tsv``) hold statistics of one network x
word model: a measure per layer and image group, the mean over groups, and linear
combinations of them (a difference of two layers, of two networks or two word models on
the same concepts, the depth-trend slope). Each is a linear map of the jackknife samples
(:mod:`emergence.stats.jackknife`: sample i deletes the same concepts everywhere), so its
variance is the measure's rule (:mod:`emergence.stats.intervals`) applied to the mapped
samples, and its companion's samples are mapped the same way.

Factors (``intervals.factors``): ``concepts`` generalises over concepts (a group's images
fixed); ``both`` over concepts and image groups (the ``mean`` rows: :func:`~emergence.stats.
intervals.two_factor_variance`); ``auto`` is ``both`` with at least
:data:`MIN_GROUPS_BOTH` image groups, else ``concepts``. A single group's rows are always
over concepts (one group is one sample of images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.intervals import (
    RANGES,
    RULES,
    Variance,
    concept_variance,
    interval,
    t_p_value,
    two_factor_variance,
)
from emergence.stats.jackknife import (
    COMPANIONS,
    DEFAULT_PAIRS,
    jackknife_distribution,
    jackknife_pairs,
    jackknife_size,
)

__all__ = ["FACTORS", "MIN_GROUPS_BOTH", "WITHHELD", "Samples", "interval_and_p",
           "jackknife_names", "measure_interval", "read_samples", "resolve_factors"]

FACTORS = ("auto", "concepts", "both")
MIN_GROUPS_BOTH = 3
"""``auto`` generalises over image groups from this many groups on (with 2, the group
variance has one degree of freedom: an interval over both factors is mostly t_1's width)."""

WITHHELD = {
    "mutual_knn": "no calibrated interval for mutual_knn: its neighbour lists change in "
                  "jumps when a concept is deleted, and every jackknife variance tried "
                  "over-states its spread 1.2-2x (bench/coverage.py)",
}
"""Measures that get no interval (NaN) and why: better none than a wrong one."""

Map = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def jackknife_names(measures: Sequence[str]) -> tuple[str, ...]:
    """What a jackknife shard stores of ``measures``: each that gets an interval (not
    :data:`WITHHELD`), then their companions (:data:`emergence.stats.jackknife.COMPANIONS`)."""
    kept = [m for m in measures if m not in WITHHELD]
    return (*kept, *(COMPANIONS[m] for m in kept if m in COMPANIONS))


def resolve_factors(setting: str, n_groups: int) -> str:
    """``concepts`` or ``both`` for the mean over ``n_groups`` image groups."""
    if setting not in FACTORS:
        raise ValueError(f"intervals.factors = {setting!r}: choose one of {FACTORS}")
    if setting == "auto":
        return "both" if n_groups >= MIN_GROUPS_BOTH else "concepts"
    if setting == "both" and n_groups < 2:
        return "concepts"
    return setting


@dataclass
class Samples:
    """The jackknife samples of one network x word model: {group: {name: (n, L)}}."""

    groups: dict[str, dict[str, NDArray[np.float64]]]
    k: int
    seed: int
    n_pairs: int

    def __post_init__(self) -> None:
        self.pairs = jackknife_pairs(self.seed, self.k, self.n_pairs)
        n = jackknife_size(self.k, self.n_pairs)
        for g, d in self.groups.items():
            for name, arr in d.items():
                if arr.shape[0] != n:
                    raise ValueError(f"group {g}, {name}: {arr.shape[0]} jackknife samples, "
                                     f"expected 1 + k + pairs = {n} (k={self.k})")

    def derive(self, groups: dict[str, dict[str, NDArray[np.float64]]]) -> Samples:
        """The same deletions (k, seed, pairs) with other per-group arrays (a linear
        combination of this side's samples, or of two sides' on the same concepts)."""
        new = object.__new__(Samples)
        new.groups, new.k, new.seed, new.n_pairs = groups, self.k, self.seed, self.n_pairs
        new.pairs = self.pairs
        return new

    def same_deletions(self, other: Samples) -> bool:
        return (self.k, self.seed, self.n_pairs) == (other.k, other.seed, other.n_pairs)

    def has(self, measure: str, groups: Sequence[str]) -> bool:
        return all(measure in self.groups.get(g, {}) for g in groups)

    def variance(self, measure: str, groups: Sequence[str], factors: str,
                 fmap: Map | None = None) -> Variance:
        """The variance of ``fmap`` of the measure for one group (``groups`` of length 1)
        or for the mean over ``groups`` (two factors when ``factors == "both"``)."""
        rule = RULES.get(measure, "smooth")
        comp = COMPANIONS.get(measure) if rule != "smooth" else None

        def take(name: str) -> NDArray[np.float64]:
            per = np.stack([np.asarray(self.groups[g][name], dtype=np.float64)
                            for g in groups])  # (g, n, L)
            return per if fmap is None else np.stack([fmap(x) for x in per])

        vals = take(measure)
        cvals = take(comp) if comp else None
        if len(groups) > 1 and factors == "both":
            return two_factor_variance(vals, self.k, self.pairs, rule=rule,
                                       group_companions=cvals)
        return concept_variance(vals.mean(axis=0), self.k, self.pairs, rule=rule,
                                companion=None if cvals is None else cvals.mean(axis=0))


def interval_and_p(estimate: NDArray[np.float64] | float, var: Variance, confidence: float
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(low, high, two-sided p of "the estimand is 0")."""
    low, high = interval(estimate, var, confidence)
    return low, high, t_p_value(estimate, var)


def read_samples(paths: Sequence[str]) -> Samples | None:
    """The jackknife shards of one network x word model (None without shards)."""
    from emergence.formats.nulls import read_nulls, shard_attrs

    if not paths:
        return None
    attrs = shard_attrs(list(paths))
    if str(attrs.get("kind")) != "jackknife":
        raise ValueError(f"{paths[0]}: a {attrs.get('kind')} shard, expected jackknife "
                         "samples; delete it so that it is made again")
    groups = {g: {m: np.asarray(v, dtype=np.float64) for m, v in d.items()}
              for g, d in read_nulls(list(paths)).items()}
    return Samples(groups, int(attrs["k"]), int(attrs["seed"]), int(attrs["n_pairs"]))


def from_arrays(samples: Mapping[str, Mapping[str, NDArray[np.float64]]], k: int, seed: int,
                n_pairs: int) -> Samples:
    """A :class:`Samples` from {group: {name: (n, L)}} (tests, the public API)."""
    return Samples({g: {m: np.asarray(v, dtype=np.float64) for m, v in d.items()}
                    for g, d in samples.items()}, k, seed, n_pairs)


def measure_interval(x: ArrayLike, y: ArrayLike, measure: str = "two_vs_two", *,
                     confidence: float = 0.95, n: int = DEFAULT_PAIRS, seed: int = 0,
                     **options: Any) -> tuple[float, float, float]:
    """``(estimate, low, high)``: one measure between two embeddings (rows = concepts,
    aligned) and its interval over concepts, exactly as the pipeline computes a single
    group's (the jackknife with ``n`` deleted pairs drawn from ``seed``; one embedding pair
    is one image group, so concepts only). Options: ``k`` (mutual kNN's neighbours, 10),
    ``method`` (RSA: pearson, spearman, kendall). A measure without a calibrated interval
    (:data:`WITHHELD`: mutual kNN) returns NaN bounds."""
    from emergence.stats.cka import linear_gram
    from emergence.stats.measures import MEASURES, MeasureSpec
    from emergence.stats.similarity import similarity_matrix

    unknown = set(options) - {"k", "method"}
    if unknown:
        raise TypeError(f"interval() got unexpected option(s) {sorted(unknown)}; options: "
                        "k (mutual_knn), method (rsa)")
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {MEASURES}")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 2 or ya.ndim != 2 or xa.shape[0] != ya.shape[0]:
        raise ValueError(f"x and y must be embeddings with one row per concept (the same "
                         f"concepts), got shapes {xa.shape} and {ya.shape}")
    spec = MeasureSpec(tuple(dict.fromkeys(("two_vs_two", measure))),
                       str(options.get("method", "pearson")), int(options.get("k", 10)))
    w, i = similarity_matrix(xa), similarity_matrix(ya)
    grams = {}
    if measure in ("cka", "cka_debiased"):
        grams = {"word_gram": linear_gram(xa), "image_grams": [linear_gram(ya)]}
    estimate = float(spec.observed(w, [i], **grams)[measure][0])
    if measure in WITHHELD:
        return estimate, math.nan, math.nan
    k = xa.shape[0]
    samples = jackknife_distribution(w, [i], seed=seed, n_pairs=n, measures=(measure,),
                                     rsa_method=spec.rsa_method, knn_k=spec.knn_k, **grams)
    rule = RULES.get(measure, "smooth")
    comp = COMPANIONS.get(measure)
    var = concept_variance(samples[measure][:, 0], k, jackknife_pairs(seed, k, n), rule=rule,
                           companion=samples[comp][:, 0] if comp and rule != "smooth" else None)
    low, high = interval(estimate, var, confidence, RANGES.get(measure))
    return estimate, float(low), float(high)
