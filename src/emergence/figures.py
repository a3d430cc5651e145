"""The paper's figures, drawn from the significance, 1 vs 2 and comparisons tables.

* Fig. 1: 2 vs 2 accuracy per layer of one network, one line per one-vector word model (a
  layered model's layers: in its grid figure; every word space where no model has one vector).
* Figs. 2-3: 2 vs 2 accuracy per layer of one network for the primary word model,
  with p < alpha markers and the untrained control beside it.
* Fig. 3 (control difference): trained minus untrained control per layer, one panel per
  measure, with jackknife confidence intervals (``comparisons.tsv``, mean over groups).
* Fig. 4: 1 vs 2 accuracy per layer, significant layers marked.
* Overview: every network on a relative-depth axis (the README's main figure).
* Grid: one network x one layered word model, a heatmap of 2 vs 2 accuracy over vision
  depth x language depth (``grid/<network>/<model>.tsv``, mean over groups), cells with the
  grid's family-wise p < alpha marked; beside it the best language layer's curve (by mean
  2 vs 2 over the vision layers) with the one-vector word models' curves (Fig. 1).

Filled markers: significant at the figures' ``alpha`` (``figures.alpha``): the permutation
p-value of the mean over groups (the significance table's ``p_value``; Fig. 4: the 1 vs 2
table's ``permutation_p``) below it, decided by :func:`emergence.stats.permutation.significant`,
the rule of the table's ``significant`` column (whose level is ``permutations.alpha``: a
figure setting never changes a table). Hollow: not significant. Layers that could not be
scored (NaN, with a ``reason`` in the tables) have no point: the line breaks there.

Bands (Figs. 1, 2 and the overview): the shaded band in a line's colour is the jackknife
confidence interval of the mean over groups (``ci_low`` .. ``ci_high``, at the table's
``confidence``; over concepts, or concepts and image groups: ``interval_factors``); the
hatched grey band is the permutation null's central 95 %
(``null_low`` .. ``null_high``): chance for a finite k is not exactly 0.5. A band is drawn
only where the table has those columns and they are finite (tables written before them
plot without).
In the control-difference figure, filled markers are family-wise p < alpha (``p_value_fwe``:
Holm over the layers, of "difference = 0"; :mod:`emergence.tables.comparison_table`; tables
without the column fall back to ``p_value``).

One function per figure; each figure rule has its own script that calls it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emergence.stats.permutation import significant  # noqa: E402

__all__ = ["best_language_layer", "plot_control_difference", "plot_grid", "plot_network",
           "plot_one_vs_two", "plot_overview", "plot_word_models"]

Rows = Sequence[Mapping[str, str]]


def _save(fig: Figure, paths: Sequence[str | os.PathLike[str]]) -> None:
    from emergence.io import atomic_path

    for p in paths:
        suffix = os.fspath(p).rsplit(".", 1)[-1]
        with atomic_path(p) as tmp:
            # Fixed metadata keeps PDFs byte-identical across reruns.
            meta = {"CreationDate": None} if suffix == "pdf" else {}
            fig.savefig(tmp, format=suffix, dpi=150, bbox_inches="tight",
                        metadata=meta or None)
    plt.close(fig)


def _mean_rows(rows: Rows) -> list[Mapping[str, str]]:
    out = [r for r in rows if r["group"] == "mean"]
    return sorted(out, key=lambda r: int(r["layer_index"]))


def _markers(xs: Sequence[float], ys: Sequence[float], sig: Sequence[bool],
             want: bool) -> tuple[list[float], list[float]]:
    """The points whose significance is ``want``, NaN values (layers not scored) left out."""
    kept = [(a, b) for a, b, s in zip(xs, ys, sig, strict=True) if s == want and math.isfinite(b)]
    return [a for a, _ in kept], [b for _, b in kept]


def _column(rows: Sequence[Mapping[str, str]], name: str) -> list[float] | None:
    """A float column of ``rows``; None when absent (older tables) or nowhere finite."""
    if not rows or name not in rows[0]:
        return None
    values = []
    for r in rows:
        try:
            values.append(float(r[name]))
        except (TypeError, ValueError):
            values.append(math.nan)
    return values if any(math.isfinite(v) for v in values) else None


def _band(ax: plt.Axes, xs: Sequence[float], rows: Sequence[Mapping[str, str]], low: str,
          high: str, **style: object) -> bool:
    """Shade ``low`` .. ``high`` where both are finite; False when there is nothing to shade."""
    lo, hi = _column(rows, low), _column(rows, high)
    if lo is None or hi is None:
        return False
    where = [math.isfinite(a) and math.isfinite(b) for a, b in zip(lo, hi, strict=True)]
    if not any(where):
        return False
    ax.fill_between(list(xs), [a if ok else 0.0 for a, ok in zip(lo, where, strict=True)],
                    [b if ok else 0.0 for b, ok in zip(hi, where, strict=True)], where=where,
                    lw=0, **style)  # type: ignore[arg-type]
    return True


def _null_band(ax: plt.Axes, rows: Rows, x: Sequence[float] | None = None,
               label: bool = True) -> bool:
    """The permutation null's central 95 % of the mean over groups, hatched grey."""
    mean = _mean_rows(rows)
    xs = list(x) if x is not None else list(range(len(mean)))
    return _band(ax, xs, mean, "null_low", "null_high", facecolor="none", edgecolor="0.6",
                 hatch="////", label="null 95 %" if label else None)


def _confidence(rows: Rows) -> str:
    """"95 %" from the table's ``confidence`` column (95 % when absent)."""
    c = _column(list(rows)[:1], "confidence")
    return f"{100 * c[0]:g} %" if c else "95 %"


def _line(ax: plt.Axes, rows: Rows, label: str, alpha: float, x: Sequence[float] | None = None,
          **style: object) -> bool:
    """The mean-over-groups line with p < ``alpha`` markers and its CI band (True if drawn)."""
    mean = _mean_rows(rows)
    xs = list(x) if x is not None else list(range(len(mean)))
    ys = [float(r["two_vs_two"]) for r in mean]
    (line,) = ax.plot(xs, ys, label=label, **style)  # type: ignore[arg-type]  # NaN: a gap
    sig = [significant(float(r["p_value"]), alpha) for r in mean]
    ax.scatter(*_markers(xs, ys, sig, True), color=line.get_color(), zorder=3, s=22)
    ax.scatter(*_markers(xs, ys, sig, False), facecolors="white",
               edgecolors=line.get_color(), zorder=3, s=22)
    return _band(ax, xs, mean, "ci_low", "ci_high", color=line.get_color(), alpha=0.18)


def _bands_note(ci: bool, null: bool, rows: Rows) -> str:
    parts = ([f"shaded: {_confidence(rows)} CI"] if ci else []) + \
        (["hatched: null 95 %"] if null else [])
    return ("; " + ", ".join(parts)) if parts else ""


def _layer_axis(ax: plt.Axes, rows: Rows) -> None:
    names = [r["layer"] for r in _mean_rows(rows)]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 8 else 0, ha="right", fontsize=8)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_ylabel("2 vs 2 accuracy (mean over groups)")
    ax.set_ylim(0.3, 1.0)
    ax.grid(alpha=0.3)


def plot_word_models(tables: Mapping[str, Rows], labels: Mapping[str, str], network: str,
                     alpha: float, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Fig. 1: one network, one line per word model, p < alpha filled, CI and null bands
    where available."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ci = null = False
    for wm, rows in tables.items():
        null = _null_band(ax, rows, label=not null) or null
        ci = _line(ax, rows, labels.get(wm, wm), alpha, marker=None) or ci
    first = next(iter(tables.values()))
    _layer_axis(ax, first)
    k = first[0]["k"]
    note = _bands_note(ci, null, first)
    ax.set_title(f"2 vs 2 accuracy per layer of {network} (k = {k} concepts){note}",
                 **({"fontsize": 9} if note else {}))
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, paths)


def plot_network(rows: Rows, label: str, control: Rows | None, control_label: str,
                 word_model: str, alpha: float, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Figs. 2-3: one network, primary word model, control beside, p < alpha filled; CI and
    null bands where the tables have them."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    null = _null_band(ax, rows)
    ci = _line(ax, rows, label, alpha, color="C0")
    if control is not None:
        null = _null_band(ax, control, label=not null) or null
        ci = _line(ax, control, control_label, alpha, color="0.45", ls="--") or ci
    groups = sorted({r["group"] for r in rows} - {"mean"})
    for g in groups:
        sub = sorted((r for r in rows if r["group"] == g), key=lambda r: int(r["layer_index"]))
        ax.plot(range(len(sub)), [float(r["two_vs_two"]) for r in sub], color="C0", lw=0.6,
                alpha=0.35)
    _layer_axis(ax, rows)
    n = rows[0]["n_permutations"]
    ax.set_title(f"{label} vs {word_model}: filled = p < {alpha:g} ({n} permutations); "
                 f"thin = single groups{_bands_note(ci, null, rows)}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, paths)


def plot_one_vs_two(rows: Rows, label: str, word_model: str, alpha: float,
                    paths: Sequence[str | os.PathLike[str]]) -> None:
    """Fig. 4: pooled 1 vs 2 accuracy per layer; black dots where permutation p < alpha."""
    pooled = sorted((r for r in rows if r["group"] == "all"), key=lambda r: int(r["layer_index"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    xs = range(len(pooled))
    ys = [float(r["accuracy"]) for r in pooled]
    ax.plot(xs, ys, color="C3", label="1 vs 2 accuracy")
    sig = [significant(float(r["permutation_p"]), alpha) for r in pooled]
    ax.scatter(*_markers(xs, ys, sig, True), color="black", zorder=3,
               label=f"p < {alpha:g} (permutation)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["layer"] for r in pooled], rotation=60 if len(pooled) > 8 else 0,
                       ha="right", fontsize=8)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="chance")
    n = pooled[0]["n_tests"] if pooled else 0
    ax.set_title(f"1 vs 2 test, {label} vs {word_model}: {n} misclassified images "
                 "(all groups pooled)", fontsize=9)
    ax.set_ylabel("1 vs 2 accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, paths)


def plot_overview(tables: Mapping[str, Rows], labels: Mapping[str, str],
                  controls: Sequence[str], word_model: str, alpha: float,
                  paths: Sequence[str | os.PathLike[str]]) -> None:
    """All networks on a relative-depth axis (0 = pixels, 1 = last layer), with each
    network's CI band and the null bands where the tables have them."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ci = null = False
    for i, (net, rows) in enumerate(tables.items()):
        mean = _mean_rows(rows)
        depth = [j / max(len(mean) - 1, 1) for j in range(len(mean))]
        style: dict[str, object] = (
            {"color": "0.45", "ls": "--"} if net in controls else {"color": f"C{i}"})
        null = _null_band(ax, rows, x=depth, label=not null) or null
        ci = _line(ax, rows, labels.get(net, net), alpha, x=depth, **style) or ci
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("relative depth (0 = pixels, 1 = logits)")
    ax.set_ylabel("2 vs 2 accuracy (mean over groups)")
    ax.set_ylim(0.3, 1.0)
    ax.grid(alpha=0.3)
    first = next(iter(tables.values()), [])
    ax.set_title(f"Semantics emerge with depth: 2 vs 2 vs {word_model}; filled = p < {alpha:g}"
                 f"{_bands_note(ci, null, first)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, paths)


def _comparison_panel(ax: plt.Axes, rows: Sequence[Mapping[str, str]], measure: str,
                      labels: Mapping[str, str], alpha: float) -> None:
    """One measure of the control-difference figure: one series per control."""
    controls = list(dict.fromkeys(r["b"] for r in rows))
    drawn = False
    for c, b in enumerate(controls):
        sub = sorted((r for r in rows if r["b"] == b), key=lambda r: int(r["layer_index"]))
        xs = [int(r["layer_index"]) for r in sub]
        est, lo, hi = (_column(sub, col) or [math.nan] * len(sub)
                       for col in ("estimate", "ci_low", "ci_high"))
        if not any(math.isfinite(v) for v in est):
            continue
        drawn = True
        color = f"C{c}"
        ok = [math.isfinite(e) and math.isfinite(a) and math.isfinite(z)
              for e, a, z in zip(est, lo, hi, strict=True)]
        # The interval as a segment (tables from the bootstrap era: a percentile interval
        # need not contain the estimate, so it is not drawn as an error bar around it).
        ax.vlines([x for x, o in zip(xs, ok, strict=True) if o],
                  [a for a, o in zip(lo, ok, strict=True) if o],
                  [z for z, o in zip(hi, ok, strict=True) if o], colors=color, lw=1.0)
        ax.plot(xs, est, color=color, lw=1.0,
                label=f"{labels.get(sub[0]['a'], sub[0]['a'])} - {labels.get(b, b)}")
        p = (_column(sub, "p_value_fwe") or _column(sub, "p_value")
             or [math.nan] * len(sub))
        sig = [significant(v, alpha) for v in p]
        ax.scatter(*_markers(xs, est, sig, True), color=color, zorder=3, s=22)
        ax.scatter(*_markers(xs, est, sig, False), facecolors="white", edgecolors=color,
                   zorder=3, s=22)
    if not drawn:
        why = next((r["reason"] for r in rows if r.get("reason")), "no rows")
        ax.text(0.5, 0.5, f"not compared: {why}", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, wrap=True)
    ax.axhline(0.0, color="0.4", lw=0.8)
    ax.set_ylabel(f"{measure}\ntrained - control", fontsize=8)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="best")


def plot_control_difference(rows: Rows, labels: Mapping[str, str],
                            paths: Sequence[str | os.PathLike[str]], alpha: float = 0.05) -> None:
    """Trained minus untrained control per layer with jackknife CIs, one panel per measure.

    ``rows``: ``comparisons.tsv`` of one network x word model (read_tsv strings or the
    dicts of :func:`emergence.tables.comparison_table.comparison_rows`); the rows with
    ``comparison == layer_vs_control`` and ``group == mean`` are drawn. ``labels``: display
    names of the network, its controls and the word model (ids not in it are shown as they
    are).
    Filled markers: family-wise p < alpha (Holm over the layers). A measure without a
    comparable layer (or without an interval) says why.
    """
    sel = [r for r in rows if r["comparison"] == "layer_vs_control" and r["group"] == "mean"]
    measures = list(dict.fromkeys(r["measure"] for r in sel)) or [""]
    fig, axes = plt.subplots(len(measures), 1, figsize=(7.5, 1.2 + 2.2 * len(measures)),
                             sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], measures, strict=True):
        _comparison_panel(ax, [r for r in sel if r["measure"] == m], m, labels, alpha)
    first = sorted((r for r in sel if r["measure"] == measures[0]),
                   key=lambda r: int(r["layer_index"]))
    bottom = axes[-1, 0]
    bottom.set_xticks([int(r["layer_index"]) for r in first])
    bottom.set_xticklabels([r["layer"] for r in first], rotation=60 if len(first) > 8 else 0,
                           ha="right", fontsize=8)
    net = rows[0]["network"] if rows else ""
    wm = rows[0]["word_model"] if rows else ""
    conf = _column(sel[:1], "confidence")
    level = f"{100 * conf[0]:g} %" if conf else "95 %"
    axes[0, 0].set_title(
        f"{labels.get(net, net)} minus its untrained control vs {labels.get(wm, wm)} (mean over "
        f"groups): bars = {level} CI, filled = Holm p < {alpha:g} over the layers",
        fontsize=9)
    _save(fig, paths)


def best_language_layer(grid: Rows) -> str:
    """The language layer whose mean-over-groups 2 vs 2 accuracy, averaged over the vision
    layers that could be scored, is highest (the first of equals)."""
    means: dict[str, list[float]] = {}
    for r in grid:
        if r["group"] == "mean" and math.isfinite(float(r["two_vs_two"])):
            means.setdefault(r["word_model"], []).append(float(r["two_vs_two"]))
    return max(means, key=lambda s: sum(means[s]) / len(means[s]))


def plot_grid(grid: Rows, beside: Mapping[str, Rows], labels: Mapping[str, str], network: str,
              model: str, alpha: float, paths: Sequence[str | os.PathLike[str]]) -> None:
    """The vision x language grid (module doc): left the heatmap, right the best language
    layer's curve beside the one-vector word models' (Fig. 1)."""
    import numpy as np

    mean = [r for r in grid if r["group"] == "mean"]
    spaces = list(dict.fromkeys(r["word_model"] for r in mean))
    layers = list(dict.fromkeys(r["language_layer"] for r in mean))
    vision = [r["layer"] for r in _mean_rows([r for r in mean if r["word_model"] == spaces[0]])]
    value = np.full((len(spaces), len(vision)), np.nan)
    sig = np.zeros(value.shape, dtype=bool)
    for r in mean:
        j, i = spaces.index(r["word_model"]), int(r["layer_index"])
        value[j, i] = float(r["two_vs_two"])
        sig[j, i] = significant(float(r["p_value_fwe_grid"]), alpha)
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(13, 4.6),
                                    gridspec_kw={"width_ratios": [1.1, 1]})
    image = ax.imshow(value, origin="lower", aspect="auto", cmap="viridis", vmin=0.5,
                      vmax=max(0.5001, float(np.nanmax(value)) if np.isfinite(value).any()
                               else 1.0))
    fig.colorbar(image, ax=ax, label="2 vs 2 accuracy (mean over groups)")
    rows, cols = np.nonzero(sig)
    ax.scatter(cols, rows, marker="*", s=40, color="white", edgecolors="black", lw=0.5,
               label=f"grid family-wise p < {alpha:g}")
    ax.set_xticks(range(len(vision)))
    ax.set_xticklabels(vision, rotation=60 if len(vision) > 8 else 0, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(layers, fontsize=8)
    ax.set_xlabel(f"vision layer of {network}")
    ax.set_ylabel(f"language layer of {model}")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    best = best_language_layer(grid)
    ci = null = False
    for wm, rows_ in {best: [r for r in grid if r["word_model"] == best], **beside}.items():
        null = _null_band(curve, rows_, label=not null) or null
        ci = _line(curve, rows_, labels.get(wm, wm), alpha, marker=None) or ci
    _layer_axis(curve, [r for r in grid if r["word_model"] == best])
    curve.legend(fontsize=7, loc="lower right")
    curve.set_title(f"best language layer ({labels.get(best, best)}: highest mean 2 vs 2 over "
                    f"vision layers)\nbeside Fig. 1{_bands_note(ci, null, grid)}", fontsize=8)
    ax.set_title(f"{network} x {model}: 2 vs 2 accuracy per (vision, language) layer, "
                 f"k = {mean[0]['k']}", fontsize=9)
    _save(fig, paths)
