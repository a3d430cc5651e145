"""Paired comparisons on jackknife samples (comparisons.tsv): the package equals the literal
references in tests/literal.py (the corrected jackknife variance, the t interval and p,
Holm over the layers, the least-squares trend slope) on planted (n, L) arrays and scores
rows; and stats/comparisons.py's bootstrap helpers equal theirs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from emergence import comparisons as cmp
from emergence.io import read_tsv, write_tsv
from emergence.stats import comparisons as sc
from emergence.stats.jackknife import jackknife_pairs, jackknife_size
from emergence.uncertainty import from_arrays
from tests import literal

LAYERS = ["pixels", "conv1", "conv2", "fc", "logits"]
GROUPS = ["photo", "drawing"]
MEASURES = ("two_vs_two", "rsa")
K, PAIRS, SEED = 12, 20, 7
CONCEPTS = [f"c{i}" for i in range(K)]
B = jackknife_size(K, PAIRS)


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
    """Scores rows (strings, as read_tsv gives them) and jackknife arrays {group: {name:
    (n, L)}} (the 2 vs 2 with its margin companion) with values rising with depth;
    ``nan_layer`` (group, layer) cannot be scored."""
    rng = np.random.default_rng(seed)
    rows, arrays = [], {}
    for gi, g in enumerate(GROUPS):
        arrays[g], obs = {}, {}
        for m in MEASURES:
            base = 0.05 * np.arange(len(layers)) + 0.01 * gi + shift + (0.5 if m == MEASURES[0]
                                                                       else 0.0)
            obs[m] = np.round(base + rng.normal(0, 0.02, len(layers)), 3)
            samples = obs[m] + rng.normal(0, 0.0008, (B, len(layers)))
            samples[0] = obs[m]
            arrays[g][m] = samples
        arrays[g]["two_vs_two_margin"] = (arrays[g]["two_vs_two"]
                                          + rng.normal(0, 0.0002, (B, len(layers))))
        for j, lay in enumerate(layers):
            values = {m: repr(float(obs[m][j])) for m in MEASURES}
            reason = ""
            if nan_layer == (g, lay):
                reason = "constant activations for concept(s) c3: correlation undefined"
                values = {m: "nan" for m in MEASURES}
                for name in arrays[g]:
                    arrays[g][name][:, j] = np.nan
            rows.append({"network": network, "model": network, "word_model": wm, "group": g,
                         "layer": lay, "layer_index": str(j), **values, "reason": reason})
    return rows, arrays


def study(**nan: tuple[str, str]) -> dict:
    scores, jack, concepts, raw = {}, {}, {}, {}
    spec = {("net", "wm1"): (0.1, 1), ("ctrl", "wm1"): (0.0, 2), ("net", "wm2"): (0.05, 3),
            ("net", "wm3"): (0.02, 4)}
    for (net, wm), (shift, seed) in spec.items():
        scores[net, wm], raw[net, wm] = planted(net, wm, shift, seed,
                                                nan_layer=nan.get(f"{net}_{wm}"))
        jack[net, wm] = from_arrays(raw[net, wm], K, SEED, PAIRS)
        concepts[net, wm] = CONCEPTS if wm != "wm3" else CONCEPTS[:-1]
    return {"scores": scores, "jackknife": jack, "concepts": concepts, "raw": raw}


def side_lists(scores: list[dict[str, str]], arrays: dict, name: str) -> tuple[dict, dict]:
    """Observed values and samples as Python lists; the mean over groups summed group by
    group, per sample."""
    obs = {g: [float(r[name]) if name in r else math.nan for r in sorted(
        (r for r in scores if r["group"] == g), key=lambda r: int(r["layer_index"]))]
        for g in GROUPS}
    samples = {g: [[float(x) for x in row] for row in arrays[g][name]] for g in GROUPS}
    obs["mean"] = [sum(obs[g][j] for g in GROUPS) / len(GROUPS) for j in range(len(LAYERS))]
    samples["mean"] = [[sum(samples[g][i][j] for g in GROUPS) / len(GROUPS)
                        for j in range(len(LAYERS))] for i in range(B)]
    return obs, samples


def expected(row: dict, data: dict) -> tuple[float, list[float], list[float]]:
    """The literal estimate and the jackknife samples of one comparison row, and of its
    companion (the 2 vs 2's margin)."""
    m, g, c = row["measure"], row["group"], row["comparison"]
    this = data["scores"]["net", "wm1"], data["raw"]["net", "wm1"]
    other = None
    if c in ("layer_vs_control", "word_models"):
        key = ("ctrl", "wm1") if c == "layer_vs_control" else ("net", row["b"])
        other = data["scores"][key], data["raw"][key]
    out = []
    m_obs = side_lists(*this, m)[0]
    used = [j for j in range(len(LAYERS)) if math.isfinite(m_obs[g][j])]
    for name in (m, "two_vs_two_margin"):
        obs, smp = side_lists(*this, name)
        if c == "depth_trend":
            pos = [float(j) for j in used]
            out.append((literal.slope([m_obs[g][j] for j in used], pos),
                        [literal.slope([s[j] for j in used], pos) for s in smp[g]]))
            continue
        j = LAYERS.index(row["layer"])
        if other is None:
            i = LAYERS.index(row["b"])
            out.append((obs[g][j] - obs[g][i], [s[j] - s[i] for s in smp[g]]))
        else:
            o_obs, o_smp = side_lists(*other, name)
            out.append((obs[g][j] - o_obs[g][j],
                        [s[j] - t[j] for s, t in zip(smp[g], o_smp[g], strict=True)]))
    return out[0][0], out[0][1], out[1][1]


def rows_of(data: dict, **kw: object) -> list[dict]:
    args = {"measures": MEASURES, "confidence": 0.9, "controls": ["ctrl"],
            "word_models": ["wm1", "wm2", "wm3"], **kw}
    tables = {key: data[key] for key in ("scores", "jackknife", "concepts")}
    return cmp.comparison_rows("net", "wm1", **tables, **args)  # type: ignore[arg-type]


def check_literal(rows: list[dict], data: dict) -> int:
    """Every comparable row equals the literal computation; returns how many were checked."""
    pairs = [tuple(int(v) for v in p) for p in jackknife_pairs(SEED, K, PAIRS)]
    checked = 0
    for r in rows:
        if r["reason"]:
            assert math.isnan(r["estimate"]) and math.isnan(r["p_value"]), r
            assert math.isnan(r["ci_low"]) and r["n_jackknife"] == 0, r
            continue
        est, samples, margin = expected(r, data)
        assert r["estimate"] == approx(est), r
        assert r["n_jackknife"] == B
        v, df = literal.measure_variance(r["measure"], samples, K, pairs, margin)
        t = stats.t.ppf(0.95, df)
        assert r["df"] == pytest.approx(df, rel=1e-8), r
        assert r["ci_low"] == pytest.approx(est - t * math.sqrt(v), rel=1e-9, abs=1e-12), r
        assert r["ci_high"] == pytest.approx(est + t * math.sqrt(v), rel=1e-9, abs=1e-12), r
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
        assert r["p_value"] == pytest.approx(2 * stats.t.sf(abs(est) / math.sqrt(v), df),
                                             rel=1e-7, abs=1e-300), r
        checked += 1
    families: dict[tuple, list[dict]] = {}
    for r in rows:
        families.setdefault((r["measure"], r["group"], r["comparison"], r["b"]), []).append(r)
    for fam in families.values():
        want = literal.holm([r["p_value"] for r in fam])
        for r, w in zip(fam, want, strict=True):
            assert r["p_value_fwe"] == approx(w), r
            assert math.isnan(w) or r["p_value_fwe"] >= r["p_value"]
    return checked


def test_all_comparisons_equal_literal(tmp_path: Path) -> None:
    data = study()
    rows = rows_of(data)
    assert [str(r) for r in rows] == [str(r) for r in rows_of(study())]  # deterministic
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
    trend = next(r for r in rows if r["comparison"] == "depth_trend" and r["group"] == "mean"
                 and r["measure"] == "rsa")
    assert 0.03 < trend["estimate"] < 0.07 and trend["ci_low"] > 0 and trend["p_value"] < 0.01
    assert trend["p_value_fwe"] == trend["p_value"]  # a family of one
    last = next(r for r in rows if r["comparison"] == "layer_vs_control" and r["group"] == "mean"
                and r["layer"] == "logits" and r["measure"] == "two_vs_two")
    assert last["a"] == "net" and last["b"] == "ctrl" and last["ci_low"] > 0.0
    assert last["p_value"] < 0.01 and last["interval_factors"] == "concepts"
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
    data = {"scores": {("net", "wm1"): scores},
            "jackknife": {("net", "wm1"): from_arrays(arrays, K, SEED, PAIRS)},
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


def test_constant_trend_and_withheld_measures() -> None:
    data = study()
    for r in data["scores"]["net", "wm1"]:
        r["rsa"] = "0.25"
    rows = rows_of(data, measures=("rsa",), controls=[], word_models=[])
    trend = [r for r in rows if r["comparison"] == "depth_trend"]
    assert all(abs(r["estimate"]) < 1e-15 and r["reason"] == "" for r in trend)  # no trend
    # A measure without a calibrated interval keeps its estimate and says why.
    data = study()
    for g in GROUPS:
        for key in ("net", "wm1"), ("ctrl", "wm1"):
            data["jackknife"][key].groups[g]["mutual_knn"] = data["raw"][key][g]["rsa"]
    for key in data["scores"]:
        for r in data["scores"][key]:
            r["mutual_knn"] = r["rsa"]
    rows = rows_of(data, measures=("mutual_knn",), word_models=[])
    assert all("no calibrated interval for mutual_knn" in r["reason"] and math.isnan(r["ci_low"])
               and math.isnan(r["p_value"]) and math.isfinite(r["estimate"]) for r in rows
               if r["comparison"] != "layer_vs_control" or r["layer"] != "")


def test_bad_inputs() -> None:
    data = study()
    with pytest.raises(KeyError, match="no scores for other x wm1"):
        rows_of(data, controls=["other"])
    data["jackknife"]["net", "wm1"].groups["photo"]["rsa"] = np.zeros((B, 3))
    with pytest.raises(ValueError, match="expected"):
        rows_of(data)
    with pytest.raises(ValueError, match="expected 1 \\+ k \\+ pairs"):
        from_arrays({"photo": {"rsa": np.zeros((B - 1, 5))}}, K, SEED, PAIRS)


def test_pixel_layer_name_is_the_layers_one() -> None:
    from emergence.sources.models.layers import PIXELS

    assert cmp.PIXELS == PIXELS


def test_comparisons_are_the_same_for_1_3_and_8_shards() -> None:
    """The paired results, built from jackknife samples drawn in 1, 3 or 8 shards (two
    networks sharing the concepts and deletions), are identical."""
    from emergence.stats.jackknife import jackknife_distribution
    from emergence.stats.measures import MeasureSpec
    from emergence.stats.permutation import shard_range
    from emergence.stats.similarity import similarity_matrix

    rng = np.random.default_rng(3)
    k, layers, groups, pairs, batch = 14, ["pixels", "a", "b", "c"], ["1", "2"], 20, 4
    latent = rng.standard_normal((k, 5))
    words = latent @ rng.standard_normal((5, 30)) + rng.standard_normal((k, 30))
    w = similarity_matrix(words)
    spec = MeasureSpec(("two_vs_two", "rsa"), "pearson", 3)
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
    n = jackknife_size(k, pairs)
    results = []
    for shards in (1, 3, 8):
        jack = {}
        for net in ("net", "ctrl"):
            arrays = {}
            for g in groups:
                parts = [jackknife_distribution(w, images[net, g], seed=9, n_pairs=pairs,
                                                start=lo, stop=hi, batch_size=batch,
                                                measures=spec.names)
                         for lo, hi in (shard_range(n, shards, s, batch)
                                        for s in range(shards))]
                arrays[g] = {m: np.concatenate([p[m] for p in parts])
                             for m in (*spec.names, "two_vs_two_margin")}
            jack[net, "w"] = from_arrays(arrays, k, 9, pairs)
        results.append(cmp.comparison_rows("net", "w", scores=scores, jackknife=jack,
                                           concepts=concepts, measures=spec.names,
                                           controls=["ctrl"], word_models=[]))
    assert len(results[0]) > 50
    assert any(r["comparison"] == "layer_vs_control" and np.isfinite(r["p_value"])
               for r in results[0])
    for other in results[1:]:
        assert [str(r) for r in other] == [str(r) for r in results[0]]  # nan == nan as text
