"""Paired comparisons on bootstrap samples (comparisons.tsv): the package equals the literal
references in tests/literal.py (percentile interval, counted p-value, Spearman from its
definition) on planted (B, L) arrays and scores rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from emergence import comparisons as cmp
from emergence.io import read_tsv, write_tsv
from emergence.stats import comparisons as sc
from tests import literal

LAYERS = ["pixels", "conv1", "conv2", "fc", "logits"]
GROUPS = ["photo", "drawing"]
MEASURES = ("two_vs_two", "rsa")
CONCEPTS = [f"c{i}" for i in range(12)]
B = 300


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-14, nan_ok=True)


# ---------------------------------------------------------------- stats/comparisons.py


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.5])
@pytest.mark.parametrize("n", [1, 2, 7, 40, 1001])
def test_interval_and_p_equal_literal(n: int, confidence: float) -> None:
    rng = np.random.default_rng([n, int(confidence * 100)])
    x = rng.normal(0.05, 0.1, size=n)
    x[rng.random(n) < 0.1] = np.nan  # undefined samples are dropped
    if n > 3:
        x[:3] = 0.0  # ties at 0 count on both sides
    assert sc.confidence_interval(x, confidence) == tuple(
        approx(v) for v in literal.percentile_interval(list(x), confidence))
    assert sc.bootstrap_p(x) == approx(literal.bootstrap_p(list(x)))


def test_interval_and_p_edge_cases() -> None:
    assert all(math.isnan(v) for v in sc.confidence_interval([np.nan, np.inf]))
    assert math.isnan(sc.bootstrap_p([]))
    assert sc.bootstrap_p(np.ones(99)) == 2 / 100  # all above 0: the smallest p for B = 99
    assert sc.bootstrap_p(np.zeros(9)) == 1.0
    assert sc.bootstrap_p([-1.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match="confidence"):
        sc.confidence_interval([1.0], 1.0)
    with pytest.raises(ValueError, match="shape"):
        sc.paired_difference(np.ones(3), np.ones(4))


@pytest.mark.parametrize("n_layers", [2, 3, 4, 9, 30])
def test_depth_trend_equals_literal_spearman(n_layers: int) -> None:
    rng = np.random.default_rng(n_layers)
    v = np.round(rng.normal(size=(60, n_layers)), 1)  # rounding plants ties
    v[1] = 0.25  # constant row: NaN
    v[2, 0] = np.nan  # an undefined sample: NaN
    v[3] = np.arange(n_layers)  # perfectly increasing: rho = 1
    v[4] = -np.arange(n_layers)
    pos = np.sort(rng.choice(50, size=n_layers, replace=False))  # gaps: layers left out
    got = sc.depth_trend(v, pos)
    want = [literal.spearman(list(row), [float(p) for p in pos]) for row in v]
    assert got.shape == (60,)
    assert [approx(w) for w in want] == list(got)
    if n_layers >= 3:
        assert math.isnan(got[1]) and math.isnan(got[2]) and got[3] == 1.0 and got[4] == -1.0
    else:
        assert np.isnan(got).all()
    # Ranks with ties: exact halves.
    row = [3.0, 1.0, 3.0, 2.0, 1.0]
    assert sc.average_ranks(row).tolist() == literal.average_ranks(row) == [4.5, 1.5, 4.5, 3, 1.5]
    assert sc.depth_trend(v[0]).shape == (1,)


# ---------------------------------------------------------------- planted tables


def planted(network: str, wm: str, shift: float, seed: int, layers: list[str] = LAYERS,
            nan_layer: tuple[str, str] | None = None) -> tuple[list[dict[str, str]], dict]:
    """Scores rows (strings, as read_tsv gives them) and bootstrap arrays {group: {m: (B, L)}}
    with values rising with depth; ``nan_layer`` (group, layer) cannot be scored."""
    rng = np.random.default_rng(seed)
    rows, arrays = [], {}
    for gi, g in enumerate(GROUPS):
        arrays[g], obs = {}, {}
        for m in MEASURES:
            base = 0.05 * np.arange(len(layers)) + 0.01 * gi + shift + (0.5 if m == MEASURES[0]
                                                                       else 0.0)
            obs[m] = np.round(base + rng.normal(0, 0.02, len(layers)), 3)
            boot = obs[m] + rng.normal(0, 0.03, (B, len(layers)))
            boot[rng.random(B) < 0.02, 1] = np.nan  # a few undefined samples
            arrays[g][m] = boot
        for j, lay in enumerate(layers):
            values = {m: repr(float(obs[m][j])) for m in MEASURES}
            reason = ""
            if nan_layer == (g, lay):
                reason = "constant activations for concept(s) c3: correlation undefined"
                values = {m: "nan" for m in MEASURES}
                for m in MEASURES:
                    arrays[g][m][:, j] = np.nan
            rows.append({"network": network, "model": network, "word_model": wm, "group": g,
                         "layer": lay, "layer_index": str(j), **values, "reason": reason})
    return rows, arrays


def study(**nan: tuple[str, str]) -> dict:
    scores, boot, concepts = {}, {}, {}
    spec = {("net", "wm1"): (0.1, 1), ("ctrl", "wm1"): (0.0, 2), ("net", "wm2"): (0.05, 3),
            ("net", "wm3"): (0.02, 4)}
    for (net, wm), (shift, seed) in spec.items():
        scores[net, wm], boot[net, wm] = planted(net, wm, shift, seed,
                                                 nan_layer=nan.get(f"{net}_{wm}"))
        concepts[net, wm] = CONCEPTS if wm != "wm3" else CONCEPTS[:-1]
    return {"scores": scores, "bootstrap": boot, "concepts": concepts}


_SIDES: dict[tuple[int, int, str], tuple[object, object, tuple[dict, dict]]] = {}


def literal_side(scores: list[dict[str, str]], arrays: dict, measure: str) -> tuple[dict, dict]:
    """Observed values and bootstrap samples as Python lists, the mean over groups summed
    group by group, per sample index (cached per table)."""
    key = (id(scores), id(arrays), measure)
    if key not in _SIDES:  # holding the tables keeps their ids from being reused
        _SIDES[key] = (scores, arrays, _literal_side(scores, arrays, measure))
    return _SIDES[key][2]


def _literal_side(scores: list[dict[str, str]], arrays: dict, measure: str) -> tuple[dict, dict]:
    obs = {g: [float(r[measure]) for r in sorted(
        (r for r in scores if r["group"] == g), key=lambda r: int(r["layer_index"]))]
        for g in GROUPS}
    samples = {g: [[float(x) for x in row] for row in arrays[g][measure]] for g in GROUPS}
    obs["mean"] = [sum(obs[g][j] for g in GROUPS) / len(GROUPS) for j in range(len(LAYERS))]
    samples["mean"] = [[sum(samples[g][i][j] for g in GROUPS) / len(GROUPS)
                        for j in range(len(LAYERS))] for i in range(B)]
    return obs, samples


def expected(row: dict, data: dict) -> tuple[float, list[float] | None]:
    """The literal estimate and bootstrap samples of one comparison row."""
    m, g = row["measure"], row["group"]
    obs, samples = literal_side(data["scores"]["net", "wm1"], data["bootstrap"]["net", "wm1"], m)
    c = row["comparison"]
    if c == "depth_trend":
        used = [j for j in range(len(LAYERS)) if math.isfinite(obs[g][j])]
        est = literal.spearman([obs[g][j] for j in used], [float(j) for j in used])
        return est, [literal.spearman([s[j] for j in used], [float(j) for j in used])
                     for s in samples[g]]
    j = LAYERS.index(row["a"] if c in ("layer_vs_pixels", "adjacent_layers") else row["layer"])
    if c in ("layer_vs_pixels", "adjacent_layers"):
        i = LAYERS.index(row["b"])
        return obs[g][j] - obs[g][i], [s[j] - s[i] for s in samples[g]]
    other = ("ctrl", "wm1") if c == "layer_vs_control" else ("net", row["b"])
    o_obs, o_samples = literal_side(data["scores"][other], data["bootstrap"][other], m)
    return obs[g][j] - o_obs[g][j], [s[j] - t[j] for s, t in
                                     zip(samples[g], o_samples[g], strict=True)]


def rows_of(data: dict, **kw: object) -> list[dict]:
    args = {"measures": MEASURES, "confidence": 0.9, "controls": ["ctrl"],
            "word_models": ["wm1", "wm2", "wm3"], **kw}
    return cmp.comparison_rows("net", "wm1", **data, **args)  # type: ignore[arg-type]


def check_literal(rows: list[dict], data: dict) -> int:
    """Every comparable row equals the literal computation; returns how many were checked."""
    checked = 0
    for r in rows:
        if r["reason"]:
            assert math.isnan(r["estimate"]) and math.isnan(r["p_value"]), r
            assert math.isnan(r["ci_low"]) and r["n_bootstrap"] == 0, r
            continue
        est, samples = expected(r, data)
        assert r["estimate"] == approx(est), r
        assert samples is not None
        assert r["n_bootstrap"] == sum(math.isfinite(s) for s in samples)
        low, high = literal.percentile_interval(samples, 0.9)
        assert (r["ci_low"], r["ci_high"]) == (approx(low), approx(high)), r
        # p counts samples on either side of 0: equal unless a sample is within rounding of 0.
        assert r["p_value"] == literal.bootstrap_p(samples), r
        checked += 1
    return checked


def test_all_comparisons_equal_literal(tmp_path: Path) -> None:
    data = study()
    rows = rows_of(data)
    assert rows == rows_of(study())  # deterministic
    n_layers, n_groups = len(LAYERS), len(GROUPS) + 1
    count: dict[tuple[str, str], int] = {}
    for r in rows:
        count[r["measure"], r["comparison"]] = count.get((r["measure"], r["comparison"]), 0) + 1
    for m in MEASURES:
        assert count[m, "layer_vs_pixels"] == (n_layers - 1) * n_groups
        assert count[m, "adjacent_layers"] == (n_layers - 1) * n_groups
        assert count[m, "layer_vs_control"] == n_layers * n_groups
        assert count[m, "word_models"] == 2 * n_layers * n_groups  # wm2, wm3
        assert count[m, "depth_trend"] == n_groups
    # Order: measure, then comparison type.
    assert [r["measure"] for r in rows] == sorted((r["measure"] for r in rows),
                                                  key=MEASURES.index)
    assert check_literal(rows, data) == len(MEASURES) * (4 * 3 * 2 + 5 * 3 * 2 + 3)
    # wm3 kept one concept fewer: not paired.
    for r in rows:
        if r["comparison"] == "word_models" and r["b"] == "wm3":
            assert "concept lists differ" in r["reason"]
        elif r["comparison"] != "depth_trend":
            assert r["reason"] == "", r
    # Planted: values rise with depth (trend and layer - pixels clearly positive), the
    # trained network is 0.1 above its control.
    trend = next(r for r in rows if r["comparison"] == "depth_trend" and r["group"] == "mean")
    assert trend["estimate"] == 1.0 and trend["ci_low"] > 0.5 and trend["p_value"] < 0.01
    last = next(r for r in rows if r["comparison"] == "layer_vs_control" and r["group"] == "mean"
                and r["layer"] == "logits" and r["measure"] == "two_vs_two")
    assert last["a"] == "net" and last["b"] == "ctrl" and last["ci_low"] > 0.0
    assert last["p_value"] == 2 / (1 + last["n_bootstrap"])
    # The table: every column, NaN written as "nan", read back.
    write_tsv(tmp_path / "comparisons.tsv", rows, cmp.COMPARISON_COLUMNS)
    table = read_tsv(tmp_path / "comparisons.tsv", required=cmp.COMPARISON_COLUMNS)
    assert len(table) == len(rows)
    assert table[-1]["comparison"] == "depth_trend" and table[-1]["layer"] == ""
    assert any(t["estimate"] == "nan" for t in table)


def test_nan_layer_rows() -> None:
    data = study(net_wm1=("drawing", "conv2"), ctrl_wm1=("photo", "fc"))
    rows = rows_of(data)
    assert check_literal(rows, data) >= 80
    reason = "constant activations for concept(s) c3: correlation undefined"
    by = {(r["measure"], r["comparison"], r["group"], r["layer"], r["b"]): r for r in rows}
    m = "two_vs_two"
    for g in ("drawing", "mean"):
        r = by[m, "layer_vs_pixels", g, "conv2", "pixels"]
        assert math.isnan(r["estimate"])
        assert r["reason"] == ("layer conv2: " + ("group drawing: " if g == "mean" else "")
                               + reason)
        assert by[m, "adjacent_layers", g, "fc", "conv2"]["reason"].startswith("layer conv2")
        assert math.isnan(by[m, "layer_vs_control", g, "conv2", "ctrl"]["estimate"])
    assert by[m, "layer_vs_pixels", "photo", "conv2", "pixels"]["reason"] == ""
    r = by[m, "layer_vs_control", "photo", "fc", "ctrl"]
    assert r["reason"] == f"ctrl, layer fc: {reason}"
    assert by[m, "layer_vs_control", "drawing", "fc", "ctrl"]["reason"] == ""
    # The trend of the group with a NaN layer runs over the 4 others.
    trend = by[m, "depth_trend", "drawing", "", ""]
    assert trend["reason"] == "" and math.isfinite(trend["estimate"])


def test_no_pixels_no_control_and_short_networks() -> None:
    layers = ["conv1", "fc"]
    scores, arrays = planted("net", "wm1", 0.1, 7, layers=layers)
    data = {"scores": {("net", "wm1"): scores}, "bootstrap": {("net", "wm1"): arrays},
            "concepts": {("net", "wm1"): CONCEPTS}}
    rows = cmp.comparison_rows("net", "wm1", **data, measures=MEASURES)
    kinds = {r["comparison"] for r in rows}
    assert "layer_vs_pixels" not in kinds and "word_models" not in kinds
    control = [r for r in rows if r["comparison"] == "layer_vs_control"]
    assert len(control) == len(layers) * 3 * len(MEASURES)
    assert all(r["reason"] == "no untrained control for this network" and r["b"] == ""
               and math.isnan(r["estimate"]) for r in control)
    trend = [r for r in rows if r["comparison"] == "depth_trend"]
    assert all(r["reason"] == "fewer than 3 layers can be scored (2 of 2)" for r in trend)
    assert all(r["reason"] == "" for r in rows if r["comparison"] == "adjacent_layers")


def test_constant_trend_and_no_bootstrap() -> None:
    data = study()
    for g in GROUPS:
        for r in data["scores"]["net", "wm1"]:
            if r["group"] == g:
                r["rsa"] = "0.25"
    rows = rows_of(data, measures=("rsa",), controls=[], word_models=[])
    trend = [r for r in rows if r["comparison"] == "depth_trend"]
    assert all("constant values" in r["reason"] for r in trend)
    # B = 0 (no bootstrap samples): estimates stay, intervals and p-values are NaN.
    empty = {g: {m: np.empty((0, len(LAYERS))) for m in MEASURES} for g in GROUPS}
    data = study()
    data["bootstrap"]["net", "wm1"] = empty
    rows = rows_of(data, controls=[], word_models=[])
    r = next(r for r in rows if r["comparison"] == "adjacent_layers")
    assert math.isfinite(r["estimate"]) and math.isnan(r["ci_low"])
    assert r["reason"] == "no bootstrap samples" and r["n_bootstrap"] == 0


def test_bad_inputs() -> None:
    data = study()
    with pytest.raises(KeyError, match="no scores for other x wm1"):
        rows_of(data, controls=["other"])
    data["bootstrap"]["net", "wm1"]["photo"]["rsa"] = np.zeros((B, 3))
    with pytest.raises(ValueError, match="expected"):
        rows_of(data)


def test_pixel_layer_name_is_the_layers_one() -> None:
    from emergence.sources.models.layers import PIXELS

    assert cmp.PIXELS == PIXELS


def test_comparisons_are_the_same_for_1_3_and_8_shards() -> None:
    """The paired results, built from bootstrap distributions drawn in 1, 3 or 8 shards of
    the same samples (two networks sharing the concept draws), are identical."""
    from emergence.stats.bootstrap import bootstrap_distribution
    from emergence.stats.measures import MeasureSpec
    from emergence.stats.permutation import shard_range
    from emergence.stats.similarity import similarity_matrix

    rng = np.random.default_rng(3)
    k, layers, groups, n, batch = 14, ["pixels", "a", "b", "c"], ["1", "2"], 20, 4
    latent = rng.standard_normal((k, 5))
    words = latent @ rng.standard_normal((5, 30)) + rng.standard_normal((k, 30))
    w = similarity_matrix(words)
    spec = MeasureSpec(("two_vs_two", "rsa", "mutual_knn"), "pearson", 3)
    images = {(net, g): np.stack([similarity_matrix(
        latent @ rng.standard_normal((5, 40)) * s + rng.standard_normal((k, 40)))
        for s in (0.0, 0.5, 1.0, 2.0)]) for net in ("net", "ctrl") for g in groups}
    scores = {}
    for net in ("net", "ctrl"):
        scores[net, "w"] = [
            {"group": g, "layer": lay, "layer_index": str(j), "reason": "",
             **{m: str(v[j]) for m, v in spec.observed(w, images[net, g]).items()}}
            for g in groups for j, lay in enumerate(layers)]
    concepts = {key: [f"c{i}" for i in range(k)] for key in scores}
    results = []
    for shards in (1, 3, 8):
        boot = {}
        for net in ("net", "ctrl"):
            boot[net, "w"] = {}
            for g in groups:
                parts = [bootstrap_distribution(w, images[net, g], seed=9, start=lo, stop=hi,
                                                batch_size=batch, measures=spec.names,
                                                knn_k=spec.knn_k)
                         for lo, hi in (shard_range(n, shards, s, batch)
                                        for s in range(shards))]
                boot[net, "w"][g] = {m: np.concatenate([p[m] for p in parts])
                                     for m in spec.names}
        results.append(cmp.comparison_rows("net", "w", scores=scores, bootstrap=boot,
                                           concepts=concepts, measures=spec.names,
                                           controls=["ctrl"], word_models=[]))
    assert len(results[0]) > 50
    assert any(r["comparison"] == "layer_vs_control" and np.isfinite(r["p_value"])
               for r in results[0])
    for other in results[1:]:
        assert [str(r) for r in other] == [str(r) for r in results[0]]  # nan == nan as text
