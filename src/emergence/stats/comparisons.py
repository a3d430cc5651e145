"""Inference from bootstrap samples: percentile intervals, two-sided bootstrap p-values,
paired differences and the depth-trend statistic.

Every function takes the bootstrap samples of a statistic (one value per bootstrap sample
index, computed on the same resampled concepts for everything that is paired) and is
deterministic: plain numpy reductions, no BLAS, no randomness of its own.

* :func:`confidence_interval`: the percentile interval, ``np.quantile`` of the finite
  samples at ``(1 - c)/2`` and ``(1 + c)/2`` (numpy's default, linear interpolation).
  Non-finite samples (a resample on which the statistic is undefined) are dropped.
* :func:`bootstrap_p`: two-sided p-value of "the difference is 0", by counting the finite
  samples on either side of 0 with the +1 correction,
  ``min(1, 2 min(1 + #{d <= 0}, 1 + #{d >= 0}) / (1 + B))``, B the number of finite
  samples. It is the smallest two-sided level at which the percentile interval excludes 0
  (the test dual to the interval), never 0.
* :func:`paired_difference`: ``a - b`` sample by sample (same bootstrap index: same
  resampled concepts), NaN where either is.
* :func:`depth_trend`: Spearman's rho of a measure vs layer position over the given layers,
  for every bootstrap sample at once, (B, L) -> (B,), average ranks for ties; NaN for a
  sample with fewer than 3 layers, a non-finite value among them, or constant values.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["average_ranks", "bootstrap_p", "confidence_interval", "depth_trend",
           "interval_levels", "p_from_counts", "paired_difference"]

MIN_TREND_LAYERS = 3


def _finite(samples: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of bootstrap samples, got shape {arr.shape}")
    return arr[np.isfinite(arr)]


def interval_levels(confidence: float) -> list[float]:
    """The quantile levels of the central ``confidence`` percentile interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]


def confidence_interval(samples: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite ``samples``; (nan, nan) when there are none."""
    levels = interval_levels(confidence)
    finite = _finite(samples)
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, levels)
    return float(low), float(high)


def p_from_counts(below: int, above: int, n: int) -> float:
    """The two-sided bootstrap p-value from ``#{d <= 0}``, ``#{d >= 0}`` and the number of
    finite samples ``n`` > 0 (the formula of :func:`bootstrap_p`, whose counts may come
    block by block)."""
    return min(1.0, 2.0 * min(1 + below, 1 + above) / (1 + n))


def bootstrap_p(samples: ArrayLike) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0" from its finite samples (module
    docstring); nan when there are none."""
    finite = _finite(samples)
    n = finite.size
    if n == 0:
        return math.nan
    return p_from_counts(int(np.count_nonzero(finite <= 0.0)),
                         int(np.count_nonzero(finite >= 0.0)), n)


def paired_difference(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """``a - b`` per bootstrap sample; both must hold the same sample indices."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} vs {y.shape}")
    return x - y


def average_ranks(values: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..L along the last axis, ties sharing their average rank.

    rank_i = #{j: v_j < v_i} + (#{j: v_j == v_i} + 1) / 2: exact (halves), O(L²) per row,
    fine for the few dozen layers of a network.
    """
    v = np.asarray(values, dtype=np.float64)
    less = (v[..., None, :] < v[..., :, None]).sum(axis=-1)
    equal = (v[..., None, :] == v[..., :, None]).sum(axis=-1)
    return less + (equal + 1) / 2.0


def depth_trend(values: ArrayLike, positions: ArrayLike | None = None) -> NDArray[np.float64]:
    """Spearman's rho of ``values`` (B, L) vs ``positions`` (L,) for each of the B rows.

    ``values`` holds the layers to score, in any order, with their layer positions
    (default 0..L-1). A row with a non-finite value, fewer than 3 layers, or constant values
    (or positions) gets NaN. A 1-D ``values`` is one row; the result is then shape (1,).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"expected (B, L) values, got shape {v.shape}")
    n_rows, n_layers = v.shape
    pos = (np.arange(n_layers, dtype=np.float64) if positions is None
           else np.asarray(positions, dtype=np.float64))
    if pos.shape != (n_layers,):
        raise ValueError(f"{n_layers} layers but positions of shape {pos.shape}")
    out = np.full(n_rows, np.nan)
    ok = np.isfinite(v).all(axis=1)
    if n_layers < MIN_TREND_LAYERS or not ok.any() or not np.isfinite(pos).all():
        return out
    rv = average_ranks(v[ok])
    rp = average_ranks(pos)
    dv = rv - rv.mean(axis=1, keepdims=True)
    dp = rp - rp.mean()
    num = (dv * dp).sum(axis=1)
    den = np.sqrt((dv * dv).sum(axis=1) * float((dp * dp).sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    out[ok] = np.clip(rho, -1.0, 1.0)
    return out
