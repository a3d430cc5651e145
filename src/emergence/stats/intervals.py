"""Calibrated intervals from the jackknife over concepts (and over image groups).

The estimand of a measure is its mean over random sets of k concepts (and random images
of them): what another study of k concepts would get on average. The interval is
``estimate ± t_{ν, (1+c)/2} √V``: centred on the estimate (it always contains it), V an
estimate of the estimate's variance over such studies, ν its effective degrees of freedom.
Why this and not the bootstrap percentile interval: ``bench/coverage.py`` measures both
(the README's "Calibration" section).

The variance over concepts (:func:`concept_variance`)
-----------------------------------------------------
The samples of :mod:`emergence.stats.jackknife` for one statistic: S (all k concepts),
d_i (concept i deleted), e_ab (pairs a, b deleted, P of them). With D_i = d_i - mean(d):

* the delete-one jackknife ``J = (k-1)/k Σ D_i²``. Every measure here is a statistic of
  the k x k similarity (or Gram) entries, and a large part of its variance is pairwise:
  the entry between concepts a and b belongs to that pair only (the second-order term of
  the statistic's Hoeffding decomposition). The jackknife counts that part twice
  (Efron & Stein 1981), which is why it alone is 30-70 % too wide;
* the pair interactions ``Q_ab = S - d_a - d_b + e_ab - (D_a + D_b)/(k-2)``, centred over
  the drawn pairs, estimate that part: for a statistic whose Hoeffding terms scale as a
  U-statistic's, ``(k-2)(k-3) Q_ab`` is the pair's U-centred second-order kernel, and with
  ``m = mean Q² · P/(P-1)``:

  - second-order variance ``V2 = (k-2)²(k-3)/(2k) m``,
  - first-order variance ``V1 = J - (k-1)(k-2)(k-3)/k m``,
  - ``V = V1 + V2`` (= ``J - (k-2)(k-3)/2 m``), unbiased for a U-statistic of degree 2
    (tests/literal.py checks the algebra against a slow reference);
  - where V1 < 0 (no first-order variance is seen: every null study, and most at small
    k), V1 = 0 and V2 is the inverse-variance mean of its two estimates, ``J / a`` and
    ``c2 m`` (a = 2(k-1)/(k-2), E[J] = V1 + a V2): the least-squares fit of both
    equations under V1 = 0. Taking ``c2 m`` alone there (as before) made V 1.1-1.7x too
    large at k = 20: m also carries the statistics' higher-order terms, J less so.

* degrees of freedom: Satterthwaite's ``ν = 2V² / Var(V)`` (with ``Var(J) ≈ 2J²/(k-1)``
  and the sampling variance of m over the P pairs), but at least k - 1, the delete-one
  jackknife's own (Tukey's t interval). Satterthwaite's ν fell below k - 1 in 23-48 % of
  the simulated studies at k = 20 (``bench/coverage.py``'s studies), and there it marked a
  V too large, not a noisy one: those studies covered 98-99.7 % with t_ν and still
  97-99 % with t_{k-1}, while the others covered 92.5-96 % either way. Taking ν there made
  the k = 20 intervals 5-8 % wider for nothing (the README's Calibration section).

Two measures change in jumps when a concept is deleted (a pair's pass/fail, a neighbour
list): their Q are dominated by those jumps, not by the pairwise part. They take m from a
companion (:data:`emergence.stats.jackknife.COMPANIONS`), J from themselves:

* 2 vs 2 (rule ``ratio``): the companion is the mean margin the test thresholds; V is J
  times the companion's ``V / J`` (the share of J that is not double counting);
* mutual kNN (rule ``excess``): the companion is mutual kNN with the neighbour lists of
  all k concepts fixed, a U-statistic of the pairs' shared-neighbour indicators; its m
  replaces the measure's.

The variance over concepts and image groups (:func:`two_factor_variance`)
-------------------------------------------------------------------------
With g >= 2 image groups the headline value is the mean over groups. The groups are a
second random factor crossed with the concepts (each group is one drawing/rendering of
every concept). With the per-group samples:

* V_c: the variance over concepts of the mean over groups (as above, on the group-mean
  samples);
* V_g = s²(S_1..S_g) / g: the spread of the groups' values;
* V_cg = Σ_h V(x_h) / (g (g-1)), V(x_h) the variance over concepts (as above, corrected)
  of group h's deviation from the mean over groups, x_h = S_h - mean: the concept x group
  interaction, which both V_c and V_g contain (the two-way random-effects ANOVA's
  correction for counting it twice; with the plain jackknife for V(x_h) it is the ANOVA's
  interaction mean square, (k-1)/k Σ_ih r_ih² / (g (g-1)), r the double-centred
  delete-one values);
* ``V = V_c + max(V_g - V_cg, 0)`` (unbiased for the mean of a two-way crossed
  random-effects table, before the floor);
* ν: g - 1 where the group term is positive (the containment degrees of freedom: the
  group term is known from g values only), V_c's where it is 0. Satterthwaite's ν for the
  sum undercovers (0.91-0.93 at g = 3, k = 166, where the group term is 60-80 % of V): a
  group term that is small by chance gets many degrees of freedom, so the interval is
  narrowest exactly when V is underestimated. The price of calibration with few groups is
  width: t_{2, 0.975} = 4.30 at g = 3 (``bench/coverage.py`` prints both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["RANGES", "RULES", "Variance", "concept_variance", "group_term", "holm", "interval",
           "t_p_value", "two_factor_variance", "trend_weights"]

RULES = {"two_vs_two": "ratio", "mutual_knn": "excess"}
"""How a measure's second-order part is estimated (module doc); the others: ``smooth``."""


RANGES = {"two_vs_two": (0.0, 1.0), "rsa": (-1.0, 1.0), "cka": (0.0, 1.0),
          "mutual_knn": (0.0, 1.0)}
"""Where a measure's values (hence its estimand) lie: its interval is clipped to them."""


@dataclass(frozen=True)
class Variance:
    """The variance of an estimate, its degrees of freedom, and the parts."""

    variance: NDArray[np.float64]
    df: NDArray[np.float64]
    first: NDArray[np.float64]  # V1 (concepts) or V_c (two factors)
    second: NDArray[np.float64]  # V2 (concepts) or the group term (two factors)


def _split(values: ArrayLike, k: int) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                              NDArray[np.float64]]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or v.shape[0] < 1 + k:
        raise ValueError(f"expected 1 + k + P jackknife samples along axis 0 (k={k}), got "
                         f"shape {v.shape}")
    return v[0], v[1:k + 1], v[k + 1:]


def _parts(values: ArrayLike, k: int, pairs: NDArray[np.int64]
           ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """J, m (mean squared pair interaction) and the sampling variance of m."""
    s, d, e = _split(values, k)
    if len(e) != len(pairs):
        raise ValueError(f"{len(e)} delete-two samples but {len(pairs)} pairs")
    dev = d - d.mean(axis=0)
    j = (k - 1) / k * np.sum(dev * dev, axis=0)
    p = len(pairs)
    if p < 2:
        nan = np.full(np.shape(j), np.nan)
        return j, nan, nan
    a, b = pairs[:, 0], pairs[:, 1]
    q = (s - d[a] - d[b] + e) - (dev[a] + dev[b]) / (k - 2)
    q = q - q.mean(axis=0)
    q2 = q * q
    m = q2.mean(axis=0) * p / (p - 1)
    var_m = q2.var(axis=0, ddof=1) / p
    return j, m, var_m


def concept_variance(values: ArrayLike, k: int, pairs: ArrayLike, *, rule: str = "smooth",
                     companion: ArrayLike | None = None) -> Variance:
    """The variance over concepts of the statistic whose jackknife samples are ``values``
    ((1 + k + P, ...): :mod:`emergence.stats.jackknife`'s order), by ``rule`` (module doc;
    ``ratio`` and ``excess`` need the ``companion``'s samples). NaN where any sample is."""
    pr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    j, m, var_m = _parts(values, k, pr)
    if rule == "ratio":
        jc, mc, var_mc = _parts(_need(companion, rule), k, pr)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(jc > 0, j / np.where(jc > 0, jc, 1.0), np.where(j > 0, np.nan, 0.0))
        m, var_m = f * mc, f * f * var_mc
    elif rule == "excess":
        _, m, var_m = _parts(_need(companion, rule), k, pr)
    elif rule != "smooth":
        raise ValueError(f"unknown variance rule {rule!r}: smooth, ratio or excess")
    c1 = (k - 1) * (k - 2) * (k - 3) / k
    c2 = (k - 2) ** 2 * (k - 3) / (2 * k)
    a2 = c1 / c2  # E[J] = V1 + a2 V2, E[c2 m] = V2
    first = j - c1 * m
    # V1 < 0 is impossible: then V1 = 0 and V2 is the inverse-variance mean of its two
    # estimates, J / a2 and c2 m (the least-squares fit of both equations under V1 = 0)
    noise_j, noise_m = 2 * j * j / (k - 1) / (a2 * a2), c2 * c2 * var_m
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(noise_j + noise_m > 0, noise_m / (noise_j + noise_m), 0.0)
    bound = first < 0
    second = np.where(bound, w * j / a2 + (1 - w) * c2 * m, c2 * m)
    first = np.where(bound, 0.0, first)
    var = first + second
    noise = np.where(bound, w * w * noise_j + (1 - w) ** 2 * noise_m,
                     2 * j * j / (k - 1) + (c1 - c2) ** 2 * var_m)
    df = _df(var, noise, floor=k - 1)
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64)).all(axis=0)
    if companion is not None and rule != "smooth":
        bad |= ~np.isfinite(np.asarray(companion, dtype=np.float64)).all(axis=0)
    return Variance(*(np.where(bad, np.nan, x) for x in (var, df, first, second)))


def _need(companion: ArrayLike | None, rule: str) -> ArrayLike:
    if companion is None:
        raise ValueError(f"variance rule {rule!r} needs the companion's jackknife samples")
    return companion


def _df(var: NDArray[np.float64], noise: NDArray[np.float64], *, floor: float
        ) -> NDArray[np.float64]:
    """Satterthwaite: 2 V² / Var(V), at least ``floor`` (the concept variance's k - 1: the
    module doc); infinite when V has no noise, NaN where V is."""
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(noise > 0, 2 * var * var / np.where(noise > 0, noise, 1.0), np.inf)
    return np.where(np.isnan(var), np.nan, np.maximum(df, float(floor)))


def two_factor_variance(group_values: ArrayLike, k: int, pairs: ArrayLike, *,
                        rule: str = "smooth",
                        group_companions: ArrayLike | None = None) -> Variance:
    """The variance over concepts and image groups of the mean over groups (module doc):
    ``group_values`` (g, 1 + k + P, ...) per group, ``group_companions`` likewise."""
    gv = np.asarray(group_values, dtype=np.float64)
    g = gv.shape[0]
    gc = None if group_companions is None else np.asarray(group_companions, dtype=np.float64)
    vc = concept_variance(gv.mean(axis=0), k, pairs, rule=rule,
                          companion=None if gc is None else gc.mean(axis=0))
    group = np.maximum(group_term(gv, k, pairs, rule=rule, group_companions=gc), 0.0)
    var = vc.variance + group
    # the containment degrees of freedom: with a group term, g - 1 (the groups' own);
    # without one (V_g <= V_cg: no image-group effect beyond the interaction), V_c's
    df = np.where(group > 0, float(g - 1), vc.df)
    return Variance(var, np.where(np.isnan(var), np.nan, df), vc.variance, group)


def group_term(group_values: ArrayLike, k: int, pairs: ArrayLike, *, rule: str = "smooth",
               group_companions: ArrayLike | None = None) -> NDArray[np.float64]:
    """The group term of :func:`two_factor_variance` before its floor, ``V_g - V_cg``
    (module doc): unbiased for the group part of the variance. Arguments as there."""
    gv = np.asarray(group_values, dtype=np.float64)
    g = gv.shape[0]
    if g < 2:
        raise ValueError(f"two factors need at least 2 image groups, got {g}")
    gc = None if group_companions is None else np.asarray(group_companions, dtype=np.float64)
    mean, cmean = gv.mean(axis=0), None if gc is None else gc.mean(axis=0)
    vg = np.var(gv[:, 0], axis=0, ddof=1) / g
    # the interaction: each group's deviation from the mean over groups, its variance over
    # concepts (corrected like V_c), summed over groups
    vcg = sum(concept_variance(gv[h] - mean, k, pairs, rule=rule,
                               companion=None if gc is None else gc[h] - cmean).variance
              for h in range(g)) / (g * (g - 1))
    return vg - vcg


def interval(estimate: ArrayLike, variance: Variance, confidence: float = 0.95,
             bounds: tuple[float, float] | None = None
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``estimate ± t_{ν, (1+c)/2} √V`` (NaN where V or the estimate is), clipped to
    ``bounds`` (a measure's :data:`RANGES`) when given."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    from scipy import stats

    est = np.asarray(estimate, dtype=np.float64)
    t = stats.t.ppf((1.0 + confidence) / 2.0, np.where(np.isnan(variance.df), 1.0,
                                                         variance.df))
    half = t * np.sqrt(variance.variance)
    low, high = est - half, est + half
    if bounds is not None:
        low, high = np.maximum(low, bounds[0]), np.minimum(high, bounds[1])
    return low, high


def t_p_value(estimate: ArrayLike, variance: Variance) -> NDArray[np.float64]:
    """Two-sided p of "the estimand is 0": ``2 P(T_ν > |estimate| / √V)``; 1 when both
    are 0, 0 when only V is; NaN where either is."""
    from scipy import stats

    est = np.asarray(estimate, dtype=np.float64)
    v = variance.variance
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(est) / np.sqrt(v)
    p = 2.0 * stats.t.sf(t, np.where(np.isnan(variance.df), 1.0, variance.df))
    p = np.where(v == 0, np.where(est == 0, 1.0, 0.0), p)
    return np.where(np.isnan(est) | np.isnan(v), np.nan, np.minimum(p, 1.0))


def holm(p_values: ArrayLike) -> NDArray[np.float64]:
    """Holm's step-down family-wise adjustment of the finite p-values (NaN stays NaN):
    the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = idx.size
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


def trend_weights(positions: Sequence[float] | ArrayLike) -> NDArray[np.float64]:
    """Weights c_j of the depth trend (the least-squares slope of a measure on layer
    position: Σ c_j v_j); NaN for fewer than 2 distinct positions."""
    x = np.asarray(positions, dtype=np.float64)
    dx = x - x.mean()
    ss = float(np.sum(dx * dx))
    return dx / ss if ss > 0 and math.isfinite(ss) else np.full(x.shape, np.nan)
