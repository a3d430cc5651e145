"""Every figure function writes PNG and PDF from small synthetic tables: significance tables
with and without the CI and null columns (older tables plot without bands), a 1 vs 2 table,
and comparison rows for the control-difference figure."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from emergence import figures
from emergence.io import read_tsv, write_tsv
from emergence.tables import comparison_table as comparisons

LAYERS = ["pixels", "conv1", "conv2", "fc", "logits"]


def significance(network: str, shift: float, bands: bool, nan_layer: int | None = None
                 ) -> list[dict[str, str]]:
    """A significance table as read_tsv gives it (strings), groups photo, drawing and mean."""
    rows = []
    for gi, g in enumerate(("photo", "drawing", "mean")):
        for j, lay in enumerate(LAYERS):
            acc = 0.5 + shift + 0.06 * j + 0.01 * gi
            row = {"network": network, "model": network, "word_model": "wm", "group": g,
                   "layer": lay, "layer_index": str(j), "module": lay, "k": "20",
                   "two_vs_two": repr(acc), "p_value": "0.01" if j else "0.4",
                   "n_permutations": "100", "significant": "true" if j else "false",
                   "reason": ""}
            if bands:
                row.update(ci_low=repr(acc - 0.04), ci_high=repr(acc + 0.04),
                           null_low="0.46", null_high="0.54", confidence="0.95")
                if j == 2:
                    row["ci_low"] = "nan"  # a band with a hole
            if nan_layer == j:
                row.update(two_vs_two="nan", reason="constant activations")
                if bands:
                    row.update(ci_low="nan", ci_high="nan", null_low="nan", null_high="nan")
            rows.append(row)
    return rows


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures drawn (kept open to count their bands), still saved as usual."""
    figs: list[Figure] = []
    save = figures._save

    def keep(fig: Figure, paths: list[Path]) -> None:
        figs.append(fig)
        save(fig, paths)

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def bands(fig: Figure) -> int:
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def written(tmp_path: Path, stem: str) -> list[Path]:
    paths = [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]
    return paths


def check(paths: list[Path]) -> None:
    for p in paths:
        assert p.stat().st_size > 1000, p
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


Draw = Callable[[bool, list[Path]], None]
DRAW: dict[str, Draw] = {
    "fig1": lambda b, paths: figures.plot_word_models(
        {"wm": significance("net", 0.1, b), "wm2": significance("net", 0.05, b, nan_layer=3)},
        {"wm": "Word model"}, "net", 0.05, paths),
    "fig2": lambda b, paths: figures.plot_network(
        significance("net", 0.1, b), "Net", significance("ctrl", 0.0, b, nan_layer=0),
        "Control", "wm", 0.05, paths),
    "fig2_no_control": lambda b, paths: figures.plot_network(
        significance("net", 0.1, b), "Net", None, "", "wm", 0.05, paths),
    "overview": lambda b, paths: figures.plot_overview(
        {"net": significance("net", 0.1, b), "ctrl": significance("ctrl", 0.0, b)},
        {"net": "Net"}, ["ctrl"], "wm", 0.05, paths),
}
N_LINES = {"fig1": 2, "fig2": 2, "fig2_no_control": 1, "overview": 2}


@pytest.mark.parametrize("with_bands", [True, False])
@pytest.mark.parametrize("name", list(DRAW))
def test_line_figures(tmp_path: Path, captured: list[Figure], name: str,
                      with_bands: bool) -> None:
    paths = written(tmp_path, name)
    DRAW[name](with_bands, paths)
    check(paths)
    # One CI band per line and one null band per table, or none for tables without them.
    assert bands(captured[0]) == (2 * N_LINES[name] if with_bands else 0)
    title = captured[0].axes[0].get_title()
    assert ("95 % CI" in title) == with_bands


def test_pdf_is_reproducible(tmp_path: Path) -> None:
    a, b = written(tmp_path / "a", "fig2"), written(tmp_path / "b", "fig2")
    DRAW["fig2"](True, a)
    DRAW["fig2"](True, b)
    assert a[1].read_bytes() == b[1].read_bytes()


def test_one_vs_two(tmp_path: Path) -> None:
    rows = [{"group": "all", "layer": lay, "layer_index": str(j), "accuracy": repr(0.5 + 0.05 * j),
             "permutation_p": "0.01" if j > 2 else "0.3", "n_tests": "12"}
            for j, lay in enumerate(LAYERS)]
    paths = written(tmp_path, "fig4")
    figures.plot_one_vs_two(rows, "Net", "wm", 0.05, paths)
    check(paths)


def comparison_table(controls: list[str]) -> list[dict]:
    """comparison_rows of a planted network (values rising, 0.1 above its control)."""
    from emergence.stats.jackknife import jackknife_size
    from emergence.uncertainty import from_arrays

    rng = np.random.default_rng(0)
    scores, jack, concepts = {}, {}, {}
    n = jackknife_size(8, 10)
    for net, shift in (("net", 0.1), ("ctrl", 0.0)):
        rows, arrays = [], {}
        for g in ("photo", "drawing"):
            arrays[g] = {}
            for m in ("two_vs_two", "cka", "two_vs_two_margin"):
                arrays[g][m] = (0.5 + shift + 0.05 * np.arange(len(LAYERS))
                                + rng.normal(0, 0.003, (n, len(LAYERS))))
            for j, lay in enumerate(LAYERS):
                value = repr(0.5 + shift + 0.05 * j)
                rows.append({"group": g, "layer": lay, "layer_index": str(j),
                             "two_vs_two": value, "cka": "nan" if j == 0 else value,
                             "reason": ""})
        scores[net, "wm"], concepts[net, "wm"] = rows, ["a", "b"]
        jack[net, "wm"] = from_arrays(arrays, 8, 0, 10)
    return comparisons.comparison_rows("net", "wm", scores=scores, jackknife=jack,
                                       concepts=concepts, measures=("two_vs_two", "cka"),
                                       controls=controls, word_models=[])


def test_control_difference(tmp_path: Path, captured: list[Figure]) -> None:
    rows = comparison_table(["ctrl"])
    write_tsv(tmp_path / "comparisons.tsv", rows, comparisons.COMPARISON_COLUMNS)
    table = read_tsv(tmp_path / "comparisons.tsv")
    paths = written(tmp_path, "fig3")
    figures.plot_control_difference(table, {"net": "Net", "ctrl": "Control"}, paths, alpha=0.05)
    check(paths)
    fig = captured[0]
    assert len(fig.axes) == 2  # one panel per measure
    assert [ax.get_ylabel().split("\n")[0] for ax in fig.axes] == ["two_vs_two", "cka"]
    assert "95 % CI" in fig.axes[0].get_title() and "Holm" in fig.axes[0].get_title()
    # The dicts of comparison_rows plot too (floats, not strings).
    figures.plot_control_difference(rows, {}, written(tmp_path, "fig3b"))
    check(written(tmp_path, "fig3b"))
    # An interval that does not contain the estimate (a table of the bootstrap era): drawn.
    skewed = [dict(r, ci_low=float(r["estimate"]) + 0.1, ci_high=float(r["estimate"]) + 0.2)
              if r["comparison"] == "layer_vs_control" and math.isfinite(float(r["estimate"]))
              else r for r in rows]
    figures.plot_control_difference(skewed, {}, written(tmp_path, "fig3c"))
    check(written(tmp_path, "fig3c"))


def test_control_difference_without_control(tmp_path: Path, captured: list[Figure]) -> None:
    rows = comparison_table([])
    assert all(math.isnan(r["estimate"]) for r in rows if r["comparison"] == "layer_vs_control")
    paths = written(tmp_path, "fig3")
    figures.plot_control_difference(rows, {}, paths)
    check(paths)
    texts = [t.get_text() for ax in captured[0].axes for t in ax.texts]
    assert texts == ["not compared: no untrained control for this network"] * 2
    # No rows at all (an empty table): one panel saying so.
    figures.plot_control_difference([], {}, written(tmp_path, "empty"))
    check(written(tmp_path, "empty"))


def test_control_difference_marks_the_family_wise_p(tmp_path: Path,
                                                    captured: list[Figure]) -> None:
    """Filled markers: Holm's p_value_fwe < alpha, not the single test's p."""
    rows = [dict(r, p_value=0.01, p_value_fwe=0.2) if r["comparison"] == "layer_vs_control"
            else r for r in comparison_table(["ctrl"])]
    figures.plot_control_difference(rows, {}, written(tmp_path, "fig3"), alpha=0.05)
    filled, hollow = (c.get_offsets() for c in captured[0].axes[0].collections[-2:])
    assert len(filled) == 0 and len(hollow) == len(LAYERS)
