"""The rows of ``comparisons.tsv``: paired comparisons on the same bootstrap samples.

One table per network x word model. Every row compares two numbers (or states one trend)
for one measure and one image group, or the mean over groups (``group = "mean"``):

========================  ==================  =========  ==================================
``comparison``            ``a``               ``b``      estimate
========================  ==================  =========  ==================================
``layer_vs_pixels``       the layer           pixels     a's value - the pixel layer's
``layer_vs_control``      the network         control    trained - untrained, same layer name
``adjacent_layers``       layer j             layer j-1  layer j - layer j-1
``word_models``           this word model     other one  this - other, same layer
``depth_trend``           (empty)             (empty)    Spearman rho of value vs layer index
========================  ==================  =========  ==================================

``estimate`` is the observed statistic, from the scores rows (``scores.tsv``). ``ci_low``,
``ci_high`` and ``p_value`` come from the bootstrap over concepts: the same statistic on
every bootstrap sample, paired by sample index (sample *i* resamples the same concepts for
every layer, group, network and word model that share the concept list and seed), then
:func:`~emergence.stats.comparisons.confidence_interval` (percentile) and
:func:`~emergence.stats.comparisons.bootstrap_p` (two-sided, of "difference = 0", or
"rho = 0" for the trend). ``n_bootstrap`` counts the finite bootstrap samples used. The
``mean`` rows use the mean over groups of the same bootstrap sample index, as the
significance table's ``mean`` rows do with the permutations.

Why bootstrap p-values and not the permutation null
---------------------------------------------------
The permutation null of a layer is "this layer's image space is unrelated to the word
space". Two layers that are both far above chance both reject it, and comparing their
permutation p-values (or their values against one another's null) does not test "A = B":
under "A = B" neither layer is at chance, so no permutation of concepts produces that
null exactly. The bootstrap resamples the concepts once and recomputes both A and B on the
same resample, so the spread of A - B includes their correlation; the p-value is the
test dual to the percentile interval (the smallest two-sided level at which the interval
excludes 0). It is approximate (as any bootstrap test), not exact.

Rows that cannot be compared
----------------------------
NaN estimate, interval and p-value, with the ``reason``: a layer that cannot be scored
(its scores ``reason``), the other side has no layer of that name or no such group, the
concept lists differ (two word models or a control kept different concepts, so bootstrap
sample *i* is not the same resample on both sides), no control for this network
(``layer_vs_control``), fewer than 3 layers that can be scored or constant values
(``depth_trend``). An estimate with no finite bootstrap sample has a NaN interval and
p-value and says so. ``layer_vs_pixels`` has no rows when no layer is named ``pixels``,
and none for the pixel layer itself.

The depth trend uses the layers whose observed value is finite, at their ``layer_index``
(the pixel layer, index 0, included): a bootstrap sample NaN at any of them is dropped.
Its ``layer`` and ``layer_index`` are empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.nulls import BLOCK_BYTES, ArraySamples, Samples, Shards, samples_of
from emergence.stats.comparisons import (
    MIN_TREND_LAYERS,
    depth_trend,
    interval_levels,
    p_from_counts,
    paired_difference,
)
from emergence.stats.streaming import quantiles

PIXELS = "pixels"
"""The pixel baseline's layer name (:data:`emergence.sources.models.layers.PIXELS`; not imported
from there, which needs torch: this module runs in the statistics env)."""

__all__ = ["COMPARISONS", "COMPARISON_COLUMNS", "comparison_rows"]

COMPARISON_COLUMNS = ["network", "word_model", "measure", "group", "comparison", "a", "b",
                      "layer", "layer_index", "estimate", "ci_low", "ci_high", "p_value",
                      "n_bootstrap", "confidence", "reason"]
COMPARISONS = ("layer_vs_pixels", "layer_vs_control", "adjacent_layers", "word_models",
               "depth_trend")
MEAN = "mean"

Key = tuple[str, str]  # (network, word model)
Rows = Sequence[Mapping[str, str]]
Arrays = Mapping[str, Mapping[str, NDArray[np.float64]]]  # {group: {measure: (B, L)}}
Source = Arrays | Samples


@dataclass
class _Side:
    """One network x word model: observed values, reasons and bootstrap samples per group
    (``mean`` included) and measure."""

    key: Key
    layers: list[str]
    groups: list[str]  # image groups, then "mean"
    observed: dict[str, dict[str, NDArray[np.float64]]]  # {group: {measure: (L,)}}
    why: dict[str, list[str]]  # {group: reason per layer}
    samples: dict[str, dict[str, NDArray[np.float64]]]  # {group: {measure: (B, L)}}
    concepts: list[str]

    def index(self, layer: str) -> int | None:
        return self.layers.index(layer) if layer in self.layers else None


def _side(key: Key, rows: Rows, arrays: Arrays, concepts: Sequence[str],
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
    samples: dict[str, dict[str, NDArray[np.float64]]] = {}
    for g in groups:
        if g not in arrays:
            raise ValueError(f"{key[0]} x {key[1]}: no bootstrap samples for group {g}")
        observed[g], samples[g] = {}, {}
        why[g] = [(cell[g, lay].get("reason") or "") if (g, lay) in cell
                  else "no scores row" for lay in layers]
        for m in measures:
            observed[g][m] = np.array([float(cell[g, lay][m]) if (g, lay) in cell
                                       else math.nan for lay in layers])
            if m not in arrays[g]:
                raise ValueError(f"{key[0]} x {key[1]}, group {g}: no bootstrap samples "
                                 f"of {m}")
            arr = np.asarray(arrays[g][m], dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != len(layers):
                raise ValueError(f"{key[0]} x {key[1]}, group {g}, {m}: bootstrap samples of "
                                 f"shape {arr.shape}, expected (B, {len(layers)} layers)")
            samples[g][m] = arr
    n_boot = min(samples[g][m].shape[0] for g in groups for m in measures) if measures else 0
    observed[MEAN] = {m: np.mean([observed[g][m] for g in groups], axis=0) for m in measures}
    samples[MEAN] = {m: np.mean([samples[g][m][:n_boot] for g in groups], axis=0)
                     for m in measures}
    why[MEAN] = ["; ".join(f"group {g}: {why[g][j]}" for g in groups if why[g][j])
                 for j in range(len(layers))]
    return _Side(key, layers, [*groups, MEAN], observed, why, samples, list(concepts))


def _layer_reason(side: _Side, group: str, j: int, measure: str, who: str) -> str:
    """Why ``side``'s value at layer j is NaN ("" when it is finite)."""
    if math.isfinite(float(side.observed[group][measure][j])):
        return ""
    what = side.why[group][j] or f"{measure} is nan"
    return f"{who}layer {side.layers[j]}: {what}"


class _Builder:
    """The rows, each with its bootstrap samples (None when it has no interval to take):
    built once per block of sample indices, the intervals taken over all of them."""

    def __init__(self, network: str, word_model: str, confidence: float) -> None:
        self.network, self.word_model, self.confidence = network, word_model, confidence
        self.rows: list[dict[str, Any]] = []
        self.samples: list[NDArray[np.float64] | None] = []

    def add(self, measure: str, group: str, comparison: str, a: str, b: str,
            layer: str, layer_index: int | str, estimate: float,
            samples: NDArray[np.float64] | None, reason: str) -> None:
        if reason or not math.isfinite(estimate):
            estimate = math.nan
            reason = reason or "estimate undefined (nan)"
            samples = None
        self.rows.append({
            "network": self.network, "word_model": self.word_model, "measure": measure,
            "group": group, "comparison": comparison, "a": a, "b": b, "layer": layer,
            "layer_index": layer_index, "estimate": float(estimate), "ci_low": math.nan,
            "ci_high": math.nan, "p_value": math.nan, "n_bootstrap": 0,
            "confidence": self.confidence, "reason": reason,
        })
        self.samples.append(samples)

    def intervals(self, build: Callable[[int, int], _Builder],
                  ranges: Sequence[tuple[int, int]]) -> None:
        """Fill in each row's interval, p-value and n_bootstrap from its samples over every
        block of sample indices (``build(lo, hi)``: the rows on samples lo..hi-1): counts in
        one pass, the percentile interval's order statistics in the next (exact, as
        :func:`~emergence.stats.comparisons.confidence_interval` on all of them)."""
        cols = [i for i, v in enumerate(self.samples) if v is not None]
        if not cols:
            return

        def derived(lo: int, hi: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
            """The rows' samples lo..hi-1 as columns (NaN below a shorter one), and how
            many each has."""
            part = build(lo, hi).samples
            table = np.full((hi - lo, len(cols)), np.nan)
            sizes = np.zeros(len(cols), dtype=np.int64)
            for j, i in enumerate(cols):
                v = part[i]
                assert v is not None
                table[:v.size, j], sizes[j] = v, v.size
            return table, sizes

        size, finite, below, above = (np.zeros(len(cols), dtype=np.int64) for _ in range(4))
        kept = None
        for lo, hi in ranges:
            table, sizes = derived(lo, hi)
            ok = np.isfinite(table)
            size += sizes
            finite += ok.sum(axis=0)
            below += (ok & (table <= 0.0)).sum(axis=0)
            above += (ok & (table >= 0.0)).sum(axis=0)
            kept = table if len(ranges) == 1 else None

        def blocks() -> Iterator[NDArray[np.float64]]:
            if kept is not None:  # one block: made once
                yield kept
                return
            for lo, hi in ranges:
                yield derived(lo, hi)[0]

        levels = interval_levels(self.confidence) if finite.any() else []
        bands = quantiles(blocks, len(cols), levels, finite=finite) if levels else None
        for j, i in enumerate(cols):
            row, n = self.rows[i], int(finite[j])
            row["n_bootstrap"] = n
            if n and bands is not None:
                row["ci_low"], row["ci_high"] = float(bands[0, j]), float(bands[1, j])
                row["p_value"] = p_from_counts(int(below[j]), int(above[j]), n)
            else:
                row["reason"] = ("no bootstrap samples" if size[j] == 0
                                 else "no finite bootstrap sample")


def _paired(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Difference of two sample vectors over their common sample indices 0..B-1."""
    n = min(x.shape[0], y.shape[0])
    return paired_difference(x[:n], y[:n])


def _within(out: _Builder, side: _Side, measure: str) -> None:
    """layer_vs_pixels and adjacent_layers: two layers of the same network."""
    pix = side.index(PIXELS)
    n = len(side.layers)
    for comparison, pairs in (
            ("layer_vs_pixels", [(j, pix) for j in range(n) if pix is not None and j != pix]),
            ("adjacent_layers", [(j, j - 1) for j in range(1, n)])):
        for g in side.groups:
            obs, boot = side.observed[g][measure], side.samples[g][measure]
            for j, i in pairs:
                reason = "; ".join(r for r in (_layer_reason(side, g, j, measure, ""),
                                               _layer_reason(side, g, i, measure, "")) if r)
                out.add(measure, g, comparison, side.layers[j], side.layers[i],
                        side.layers[j], j, float(obs[j] - obs[i]),
                        paired_difference(boot[:, j], boot[:, i]), reason)


def _across(out: _Builder, comparison: str, side: _Side, other: _Side | None, a: str, b: str,
            measure: str, missing: str) -> None:
    """layer_vs_control and word_models: the same layer name on two sides."""
    for g in side.groups:
        for j, layer in enumerate(side.layers):
            reason = missing
            estimate = math.nan
            samples = None
            if other is not None and not reason:
                i = other.index(layer)
                if side.concepts != other.concepts:
                    reason = (f"concept lists differ ({len(side.concepts)} vs "
                              f"{len(other.concepts)} concepts, or their order): bootstrap "
                              "samples are not paired")
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
                    samples = _paired(side.samples[g][measure][:, j],
                                      other.samples[g][measure][:, i])
            out.add(measure, g, comparison, a, b, layer, j, estimate, samples, reason)


def _trend(out: _Builder, side: _Side, measure: str) -> None:
    for g in side.groups:
        obs = side.observed[g][measure]
        used = np.flatnonzero(np.isfinite(obs))
        reason = ""
        samples = None
        estimate = math.nan
        if used.size < MIN_TREND_LAYERS:
            reason = (f"fewer than {MIN_TREND_LAYERS} layers can be scored "
                      f"({used.size} of {len(side.layers)})")
        else:
            estimate = float(depth_trend(obs[used], used)[0])
            if not math.isfinite(estimate):
                reason = "constant values over the layers: rank correlation undefined"
            else:
                samples = depth_trend(side.samples[g][measure][:, used], used)
        out.add(measure, g, "depth_trend", "", "", "", "", estimate, samples, reason)


def comparison_rows(network: str, word_model: str, *, scores: Mapping[Key, Rows],
                    bootstrap: Mapping[Key, Source], concepts: Mapping[Key, Sequence[str]],
                    measures: Sequence[str], confidence: float = 0.95,
                    controls: Sequence[str] = (),
                    word_models: Sequence[str] | None = None,
                    block_bytes: int = BLOCK_BYTES) -> list[dict[str, Any]]:
    """Rows of ``comparisons.tsv`` (:data:`COMPARISON_COLUMNS`) for ``network`` x ``word_model``.

    Keys of ``scores`` (scores.tsv rows as read by :func:`emergence.io.read_tsv`),
    ``bootstrap`` ({group: {measure: (B, L)}}, sample i in row i, layers in
    ``layer_index`` order) and ``concepts`` (the kept concepts in matrix order) are
    (network, word model) pairs: this one, each of ``controls`` with ``word_model``, and
    ``network`` with each of ``word_models`` (default: every other word model of
    ``network`` in ``scores``). Layer names and indices come from the scores rows.
    ``controls`` empty: the layer_vs_control rows are NaN ("no untrained control").

    A ``bootstrap`` entry may also be the shard files (:class:`~emergence.formats.nulls.
    Shards`): the samples are then read ``block_bytes`` at a time, every side in step, in
    two passes (the same numbers as with every sample in memory).
    """
    key = (network, word_model)
    others = ([wm for wm in word_models if wm != word_model] if word_models is not None
              else [wm for net, wm in scores if net == network and wm != word_model])
    keys = list(dict.fromkeys([key, *((c, word_model) for c in controls),
                               *((network, wm) for wm in others)]))
    for k in keys:
        for what, table in (("scores", scores), ("bootstrap", bootstrap),
                            ("concepts", concepts)):
            if k not in table:
                raise KeyError(f"comparisons of {network} x {word_model}: no {what} for "
                               f"{k[0]} x {k[1]}")
    sources = {k: samples_of(bootstrap[k]) or ArraySamples({}) for k in keys}

    def build(lo: int, hi: int) -> _Builder:
        """The rows, with the samples lo..hi-1 of every side (fewer where a side has fewer)."""
        arrays = {k: src.read(min(lo, src.n), min(hi, src.n)) for k, src in sources.items()}

        def side(k: Key) -> _Side:
            return _side(k, scores[k], arrays[k], concepts[k], measures)

        this = side(key)
        control_sides = [side((c, word_model)) for c in controls]
        wm_sides = [side((network, wm)) for wm in dict.fromkeys(others)]
        out = _Builder(network, word_model, confidence)
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
        return out

    out = build(0, 0)
    out.intervals(build, _ranges(list(sources.values()), len(out.rows), block_bytes))
    # Canonical order within a measure: by comparison type (stable for the rest).
    rank = {c: i for i, c in enumerate(COMPARISONS)}
    order = {m: i for i, m in enumerate(measures)}
    return sorted(out.rows, key=lambda r: (order[r["measure"]], rank[r["comparison"]]))


def _ranges(sources: Sequence[Samples], n_rows: int, block_bytes: int
            ) -> list[tuple[int, int]]:
    """Blocks of sample indices over the longest side: one block when every side is in
    memory already, else about ``block_bytes`` of samples and rows' samples each."""
    n = max((s.n for s in sources), default=0)
    if all(isinstance(s, ArraySamples) for s in sources):
        return [(0, n)] if n else []
    row_bytes = 8 * n_rows + sum(s.row_bytes() for s in sources if isinstance(s, Shards))
    step = max(1, block_bytes // max(row_bytes, 1))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]
