"""The paper's figures, drawn from the significance and 1 vs 2 tables.

* Fig. 1: 2 vs 2 accuracy per layer of one network, one line per word model.
* Figs. 2-3: 2 vs 2 accuracy per layer of one network for the primary word model,
  with p < alpha markers and the untrained control beside it.
* Fig. 4: 1 vs 2 accuracy per layer, significant layers marked.
* Overview: every network on a relative-depth axis (the README's main figure).

Filled markers: significant (the significance table's ``significant`` column of the
mean over groups: permutation p < alpha). Hollow: not significant. The 1 vs 2 table has no
such column, so Fig. 4 decides with :func:`emergence.stats.permutation.significant`, the
rule the significance table uses. Layers that could not be scored (NaN, with a ``reason``
in the tables) have no point: the line breaks there.

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

__all__ = ["plot_network", "plot_one_vs_two", "plot_overview", "plot_word_models"]

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


def _line(ax: plt.Axes, rows: Rows, label: str, x: Sequence[float] | None = None,
          **style: object) -> None:
    mean = _mean_rows(rows)
    xs = list(x) if x is not None else list(range(len(mean)))
    ys = [float(r["two_vs_two"]) for r in mean]
    (line,) = ax.plot(xs, ys, label=label, **style)  # type: ignore[arg-type]  # NaN: a gap
    sig = [r["significant"] == "true" for r in mean]
    ax.scatter(*_markers(xs, ys, sig, True), color=line.get_color(), zorder=3, s=22)
    ax.scatter(*_markers(xs, ys, sig, False), facecolors="white",
               edgecolors=line.get_color(), zorder=3, s=22)


def _layer_axis(ax: plt.Axes, rows: Rows) -> None:
    names = [r["layer"] for r in _mean_rows(rows)]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 8 else 0, ha="right", fontsize=8)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_ylabel("2 vs 2 accuracy (mean over groups)")
    ax.set_ylim(0.3, 1.0)
    ax.grid(alpha=0.3)


def plot_word_models(tables: Mapping[str, Rows], labels: Mapping[str, str], network: str,
                     paths: Sequence[str | os.PathLike[str]]) -> None:
    """Fig. 1: one network, one line per word model."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for wm, rows in tables.items():
        _line(ax, rows, labels.get(wm, wm), marker=None)
    _layer_axis(ax, next(iter(tables.values())))
    k = next(iter(tables.values()))[0]["k"]
    ax.set_title(f"2 vs 2 accuracy per layer of {network} (k = {k} concepts)")
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, paths)


def plot_network(rows: Rows, label: str, control: Rows | None, control_label: str,
                 word_model: str, alpha: float, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Figs. 2-3: one network, primary word model, control beside, p < alpha filled."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    _line(ax, rows, label, color="C0")
    if control is not None:
        _line(ax, control, control_label, color="0.45", ls="--")
    groups = sorted({r["group"] for r in rows} - {"mean"})
    for g in groups:
        sub = sorted((r for r in rows if r["group"] == g), key=lambda r: int(r["layer_index"]))
        ax.plot(range(len(sub)), [float(r["two_vs_two"]) for r in sub], color="C0", lw=0.6,
                alpha=0.35)
    _layer_axis(ax, rows)
    n = rows[0]["n_permutations"]
    ax.set_title(f"{label} vs {word_model}: filled = p < {alpha:g} ({n} permutations); "
                 f"thin = single groups", fontsize=9)
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
    """All networks on a relative-depth axis (0 = pixels, 1 = last layer)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (net, rows) in enumerate(tables.items()):
        mean = _mean_rows(rows)
        depth = [j / max(len(mean) - 1, 1) for j in range(len(mean))]
        style: dict[str, object] = (
            {"color": "0.45", "ls": "--"} if net in controls else {"color": f"C{i}"})
        _line(ax, rows, labels.get(net, net), x=depth, **style)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("relative depth (0 = pixels, 1 = logits)")
    ax.set_ylabel("2 vs 2 accuracy (mean over groups)")
    ax.set_ylim(0.3, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(f"Semantics emerge with depth: 2 vs 2 vs {word_model}; filled = p < {alpha:g}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, paths)
