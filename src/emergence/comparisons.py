"""The rows of ``comparisons.tsv``: paired comparisons on the same jackknife samples.

One table per network x word model. Every row compares two numbers (or states one trend)
for one measure and one image group, or the mean over groups (``group = "mean"``):

========================  ==================  =========  ==================================
``comparison``            ``a``               ``b``      estimate
========================  ==================  =========  ==================================
``layer_vs_pixels``       the layer           pixels     a's value - the pixel layer's
``layer_vs_control``      the network         control    trained - untrained, same layer name
``adjacent_layers``       layer j             layer j-1  layer j - layer j-1
``word_models``           this word model     other one  this - other, same layer
``depth_trend``           (empty)             (empty)    least-squares slope of the value on
                                                         the layer index (per layer)
========================  ==================  =========  ==================================

``estimate`` is the observed statistic, from the scores rows (``scores.tsv``). Each is a
linear combination of measure values, so the same combination of the jackknife samples
(sample *i* deletes the same concepts for every layer, group, network and word model that
share the concept list and seed) is its jackknife, and :mod:`emergence.uncertainty` gives
its variance (the measure's rule, over concepts; over concepts and image groups for the
``mean`` rows when ``interval_factors`` says so). ``ci_low``..``ci_high`` is
``estimate ± t_df √V``; ``p_value`` the two-sided t-test of "the estimand is 0" (no
difference, or no trend); ``p_value_fwe`` Holm's family-wise adjustment over the layers of
the same measure, group, comparison and ``b`` (the 10 layers vs the pixels are one family;
the depth trend is a family of one). ``n_jackknife`` counts the samples.

Why not the permutation null: it is "this layer's image space is unrelated to the word
space"; two layers far above chance both reject it, and comparing their permutation
p-values does not test "A = B". The jackknife recomputes A and B on the same deletions, so
the variance of A - B includes their correlation.

Rows that cannot be compared
----------------------------
NaN estimate, interval and p-value, with the ``reason``: a layer that cannot be scored
(its scores ``reason``), the other side has no layer of that name or no such group, the
concept lists (or the jackknife's seed and pairs) differ (so sample *i* deletes other
concepts on the two sides), no control for this network (``layer_vs_control``), fewer
than 3 layers that can be scored (``depth_trend``). A measure without a calibrated
interval (:data:`emergence.uncertainty.WITHHELD`) keeps its estimate and says why its
interval and p-values are NaN. ``layer_vs_pixels`` has no rows when no layer is named
``pixels``, and none for the pixel layer itself.

The depth trend uses the layers whose observed value is finite, at their ``layer_index``
(the pixel layer, index 0, included). Its ``layer`` and ``layer_index`` are empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.stats.comparisons import MIN_TREND_LAYERS
from emergence.stats.intervals import Variance, holm, trend_weights
from emergence.stats.jackknife import COMPANIONS
from emergence.uncertainty import WITHHELD, Samples, interval_and_p, resolve_factors

PIXELS = "pixels"
"""The pixel baseline's layer name (:data:`emergence.sources.models.layers.PIXELS`; not imported
from there, which needs torch: this module runs in the statistics env)."""

__all__ = ["COMPARISONS", "COMPARISON_COLUMNS", "comparison_rows"]

COMPARISON_COLUMNS = ["network", "word_model", "measure", "group", "comparison", "a", "b",
                      "layer", "layer_index", "estimate", "ci_low", "ci_high", "p_value",
                      "p_value_fwe", "df", "n_jackknife", "confidence", "interval_factors",
                      "reason"]
COMPARISONS = ("layer_vs_pixels", "layer_vs_control", "adjacent_layers", "word_models",
               "depth_trend")
MEAN = "mean"
FACTOR_LABEL = {"concepts": "concepts", "both": "concepts+groups"}

Key = tuple[str, str]  # (network, word model)
Rows = Sequence[Mapping[str, str]]


@dataclass
class _Side:
    """One network x word model: observed values and reasons per group (``mean``
    included) and measure, and its jackknife samples (image groups only)."""

    key: Key
    layers: list[str]
    groups: list[str]  # image groups, then "mean"
    observed: dict[str, dict[str, NDArray[np.float64]]]  # {group: {measure: (L,)}}
    why: dict[str, list[str]]  # {group: reason per layer}
    samples: Samples
    concepts: list[str]

    def index(self, layer: str) -> int | None:
        return self.layers.index(layer) if layer in self.layers else None

    def members(self, group: str) -> list[str]:
        return self.groups[:-1] if group == MEAN else [group]


def _side(key: Key, rows: Rows, samples: Samples, concepts: Sequence[str],
          measures: Sequence[str]) -> _Side:
    if not rows:
        raise ValueError(f"{key[0]} x {key[1]}: no scores rows")
    missing = [m for m in measures if m not in rows[0]]
    if missing:
        raise ValueError(f"{key[0]} x {key[1]}: scores rows lack measure column(s) {missing}")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    order = sorted({(int(r["layer_index"]), r["layer"]) for r in rows})
    layers = [name for _, name in order]
    cell = {(r["group"], r["layer"]): r for r in rows}
    observed: dict[str, dict[str, NDArray[np.float64]]] = {}
    why: dict[str, list[str]] = {}
    for g in groups:
        if g not in samples.groups:
            raise ValueError(f"{key[0]} x {key[1]}: no jackknife samples for group {g}")
        observed[g] = {}
        why[g] = [(cell[g, lay].get("reason") or "") if (g, lay) in cell
                  else "no scores row" for lay in layers]
        for m in measures:
            observed[g][m] = np.array([float(cell[g, lay][m]) if (g, lay) in cell
                                       else math.nan for lay in layers])
            for name in (m, COMPANIONS.get(m)):
                if name is None or m in WITHHELD or name not in samples.groups[g]:
                    continue
                arr = samples.groups[g][name]
                if arr.ndim != 2 or arr.shape[1] != len(layers):
                    raise ValueError(f"{key[0]} x {key[1]}, group {g}, {name}: jackknife "
                                     f"samples of shape {arr.shape}, expected (n, "
                                     f"{len(layers)} layers)")
    observed[MEAN] = {m: np.mean([observed[g][m] for g in groups], axis=0) for m in measures}
    why[MEAN] = ["; ".join(f"group {g}: {why[g][j]}" for g in groups if why[g][j])
                 for j in range(len(layers))]
    return _Side(key, layers, [*groups, MEAN], observed, why, samples, list(concepts))


def _layer_reason(side: _Side, group: str, j: int, measure: str, who: str) -> str:
    """Why ``side``'s value at layer j is NaN ("" when it is finite)."""
    if math.isfinite(float(side.observed[group][measure][j])):
        return ""
    what = side.why[group][j] or f"{measure} is nan"
    return f"{who}layer {side.layers[j]}: {what}"


Variances = Callable[[], Variance]


class _Builder:
    def __init__(self, network: str, word_model: str, confidence: float, factors: str,
                 n_jackknife: int) -> None:
        self.network, self.word_model, self.confidence = network, word_model, confidence
        self.factors, self.n = factors, n_jackknife
        self.rows: list[dict[str, Any]] = []

    def add(self, measure: str, group: str, comparison: str, a: str, b: str,
            layer: str, layer_index: int | str, estimate: float,
            variance: Variances | None, reason: str) -> None:
        low = high = p = df = math.nan
        if reason or not math.isfinite(estimate):
            estimate = math.nan
            reason = reason or "estimate undefined (nan)"
        elif measure in WITHHELD:
            reason = WITHHELD[measure]
        elif variance is not None:
            var = variance()
            lo, hi, pv = interval_and_p(estimate, var, self.confidence)
            low, high, p, df = (float(np.ravel(x)[0]) for x in (lo, hi, pv, var.df))
            if not math.isfinite(low):
                reason = "interval undefined: a jackknife sample is nan"
        factors = self.factors if group == MEAN else "concepts"
        self.rows.append({
            "network": self.network, "word_model": self.word_model, "measure": measure,
            "group": group, "comparison": comparison, "a": a, "b": b, "layer": layer,
            "layer_index": layer_index, "estimate": float(estimate), "ci_low": low,
            "ci_high": high, "p_value": p, "p_value_fwe": math.nan, "df": df,
            "n_jackknife": self.n if math.isfinite(low) else 0,
            "confidence": self.confidence, "interval_factors": FACTOR_LABEL[factors],
            "reason": reason,
        })


def _within(out: _Builder, side: _Side, measure: str) -> None:
    """layer_vs_pixels and adjacent_layers: two layers of the same network."""
    pix = side.index(PIXELS)
    n = len(side.layers)
    for comparison, pairs in (
            ("layer_vs_pixels", [(j, pix) for j in range(n) if pix is not None and j != pix]),
            ("adjacent_layers", [(j, j - 1) for j in range(1, n)])):
        for g in side.groups:
            obs = side.observed[g][measure]
            factors = out.factors if g == MEAN else "concepts"
            for j, i in pairs:
                reason = "; ".join(r for r in (_layer_reason(side, g, j, measure, ""),
                                               _layer_reason(side, g, i, measure, "")) if r)

                def variance(j: int = j, i: int = i, g: str = g, f: str = factors) -> Variance:
                    return side.samples.variance(measure, side.members(g), f,
                                                 lambda x: x[:, j] - x[:, i])

                out.add(measure, g, comparison, side.layers[j], side.layers[i],
                        side.layers[j], j, float(obs[j] - obs[i]), variance, reason)


def _across(out: _Builder, comparison: str, side: _Side, other: _Side | None, a: str, b: str,
            measure: str, missing: str) -> None:
    """layer_vs_control and word_models: the same layer name on two sides."""
    names = [measure, *([COMPANIONS[measure]] if measure in COMPANIONS else [])]
    for g in side.groups:
        factors = out.factors if g == MEAN else "concepts"
        for j, layer in enumerate(side.layers):
            reason = missing
            estimate = math.nan
            variance = None
            if other is not None and not reason:
                i = other.index(layer)
                if (side.concepts != other.concepts
                        or not side.samples.same_deletions(other.samples)):
                    reason = (f"concept lists differ ({len(side.concepts)} vs "
                              f"{len(other.concepts)} concepts, their order, or the "
                              "jackknife's seed and pairs): the samples are not paired")
                elif g not in other.groups:
                    reason = f"{b} has no group {g}"
                elif i is None:
                    reason = f"{b} has no layer {layer}"
                else:
                    reason = "; ".join(r for r in (
                        _layer_reason(side, g, j, measure, ""),
                        _layer_reason(other, g, i, measure, f"{b}, ")) if r)
                    estimate = float(side.observed[g][measure][j]
                                     - other.observed[g][measure][i])

                    def variance(j: int = j, i: int = i, g: str = g,
                                 f: str = factors) -> Variance:
                        groups = {h: {n: side.samples.groups[h][n][:, j:j + 1]
                                      - other.samples.groups[h][n][:, i:i + 1]
                                      for n in names if n in side.samples.groups[h]
                                      and n in other.samples.groups[h]}
                                  for h in side.members(g)}
                        return side.samples.derive(groups).variance(measure, side.members(g),
                                                                    f)
            out.add(measure, g, comparison, a, b, layer, j, estimate, variance, reason)


def _trend(out: _Builder, side: _Side, measure: str) -> None:
    for g in side.groups:
        obs = side.observed[g][measure]
        used = np.flatnonzero(np.isfinite(obs))
        reason = ""
        variance = None
        estimate = math.nan
        if used.size < MIN_TREND_LAYERS:
            reason = (f"fewer than {MIN_TREND_LAYERS} layers can be scored "
                      f"({used.size} of {len(side.layers)})")
        else:
            weights = trend_weights(used)
            estimate = float(obs[used] @ weights)
            factors = out.factors if g == MEAN else "concepts"

            def variance(g: str = g, f: str = factors, used: NDArray[np.int64] = used,
                         w: NDArray[np.float64] = weights) -> Variance:
                return side.samples.variance(measure, side.members(g), f,
                                             lambda x: x[:, used] @ w)
        out.add(measure, g, "depth_trend", "", "", "", "", estimate, variance, reason)


def _family_wise(rows: list[dict[str, Any]]) -> None:
    """Holm over the layers of each (measure, group, comparison, b); the trend alone."""
    families: dict[tuple[str, str, str, str], list[int]] = {}
    for n, r in enumerate(rows):
        families.setdefault((r["measure"], r["group"], r["comparison"], r["b"]), []).append(n)
    for idx in families.values():
        adj = holm([rows[n]["p_value"] for n in idx])
        for n, p in zip(idx, adj, strict=True):
            rows[n]["p_value_fwe"] = float(p)


def comparison_rows(network: str, word_model: str, *, scores: Mapping[Key, Rows],
                    jackknife: Mapping[Key, Samples], concepts: Mapping[Key, Sequence[str]],
                    measures: Sequence[str], confidence: float = 0.95,
                    factors: str = "auto", controls: Sequence[str] = (),
                    word_models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``comparisons.tsv`` (:data:`COMPARISON_COLUMNS`) for ``network`` x ``word_model``.

    Keys of ``scores`` (scores.tsv rows as read by :func:`emergence.io.read_tsv`),
    ``jackknife`` (:class:`~emergence.uncertainty.Samples`, layers in ``layer_index``
    order) and ``concepts`` (the kept concepts in matrix order) are (network, word model)
    pairs: this one, each of ``controls`` with ``word_model``, and ``network`` with each of
    ``word_models`` (default: every other word model of ``network`` in ``scores``). Layer
    names and indices come from the scores rows. ``factors``: ``intervals.factors`` for
    the ``mean`` rows. ``controls`` empty: the layer_vs_control rows are NaN ("no
    untrained control").
    """
    key = (network, word_model)

    def side(k: Key) -> _Side:
        for what, table in (("scores", scores), ("jackknife samples", jackknife),
                            ("concepts", concepts)):
            if k not in table:
                raise KeyError(f"comparisons of {network} x {word_model}: no {what} for "
                               f"{k[0]} x {k[1]}")
        return _side(k, scores[k], jackknife[k], concepts[k], measures)

    this = side(key)
    others = ([wm for wm in word_models if wm != word_model] if word_models is not None
              else [wm for net, wm in scores if net == network and wm != word_model])
    control_sides = [side((c, word_model)) for c in controls]
    wm_sides = [side((network, wm)) for wm in dict.fromkeys(others)]
    n_jack = next(iter(next(iter(this.samples.groups.values())).values())).shape[0]
    out = _Builder(network, word_model, confidence,
                   resolve_factors(factors, len(this.groups) - 1), n_jack)
    for m in measures:
        _within(out, this, m)
        if not control_sides:
            _across(out, "layer_vs_control", this, None, network, "", m,
                    "no untrained control for this network")
        for c, cs in zip(controls, control_sides, strict=True):
            _across(out, "layer_vs_control", this, cs, network, c, m, "")
        for ws in wm_sides:
            _across(out, "word_models", this, ws, word_model, ws.key[1], m, "")
        _trend(out, this, m)
    _family_wise(out.rows)
    # Canonical order within a measure: by comparison type (stable for the rest).
    rank = {c: i for i, c in enumerate(COMPARISONS)}
    order = {m: i for i, m in enumerate(measures)}
    return sorted(out.rows, key=lambda r: (order[r["measure"]], rank[r["comparison"]]))
