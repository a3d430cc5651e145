"""Statistics under undefined input (issue #11, items 1, 2, 2b and 7).

* An image matrix with NaN entries (a concept whose activations are constant in a layer)
  cannot be scored: NaN with a reason on every path, never a number.
* p-values of NaN observations or NaN nulls are NaN; the family-wise maximum runs over
  the layers that can be scored.
* Untested is NaN: 1 vs 2 with ``n_permutations = 0``; fewer than MIN_CONCEPTS concepts
  is an error.
* Permutations are validated before the kernels index with them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

import emergence
from emergence import analysis, figures
from emergence.formats.nulls import read_nulls
from emergence.io import read_tsv, write_tsv
from emergence.stats.permutation import permutations
from emergence.stats.two_vs_two import MIN_CONCEPTS, TwoVsTwo, check_permutations
from tests import literal


def _embedding(k: int, p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 6))
    return latent @ rng.standard_normal((6, p)) + rng.standard_normal((k, p))


def _correlation(x: np.ndarray) -> np.ndarray:
    """The correlation matrix the extraction writes (NaN row, column and diagonal for a
    constant row), via the same streamed accumulator."""
    acc = emergence.PearsonAccumulator(x.shape[0])
    acc.update(x)
    return acc.correlation()


def _constant_row_case(k: int = 20, row: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, a finite I and an I whose concept ``row`` has constant activations (a grey image)."""
    w_mat = emergence.similarity_matrix(_embedding(k, 30, 1))
    y = _embedding(k, 40, 2)
    i_ok = _correlation(y)
    y[row] = 0.5
    i_nan = _correlation(y)
    assert np.isnan(i_nan[row]).all() and np.isnan(i_nan[:, row]).all()
    assert np.isfinite(np.delete(np.delete(i_nan, row, 0), row, 1)).all()
    return w_mat, i_ok, i_nan


# --- item 2: NaN in I is NaN on every engine path ----------------------------------------


def test_constant_row_is_nan_on_every_engine_path() -> None:
    w_mat, i_ok, i_nan = _constant_row_case()
    k = w_mat.shape[0]
    perms = permutations(4, 0, 6, k)
    engine = TwoVsTwo(w_mat)
    # Certified CPU kernel: one matrix, a batch (mixed: the finite one still scored), perms.
    assert np.isnan(engine.accuracy(i_nan)) and engine.accuracy(i_nan).shape == ()
    batch = engine.accuracy(np.stack([i_ok, i_nan, i_ok]))
    assert np.isnan(batch[1]) and batch[0] == batch[2] == engine.accuracy(i_ok)
    assert batch[0] == literal.two_vs_two(w_mat, i_ok)
    assert np.isnan(engine.permuted_accuracy(i_nan, perms)).all()
    assert engine.permuted_accuracy(i_nan, perms).shape == (6,)
    # The float64 torch engine (the CUDA path, here on the CPU).
    assert np.isnan(engine._float64_accuracy(i_nan))
    both = engine._float64_accuracy(np.stack([i_ok, i_nan]))
    assert both[0] == engine.accuracy(i_ok) and np.isnan(both[1])
    # The non-certifiable path: W outside float32's safe range sends everything to float64.
    big = TwoVsTwo(w_mat * 2.0**55)
    assert big._cpu is not None and not big._cpu.w_safe
    assert np.isnan(big.accuracy(i_nan))
    mixed = big.accuracy(np.stack([i_nan, i_ok]))
    assert np.isnan(mixed[0]) and mixed[1] == engine.accuracy(i_ok)
    assert np.isnan(big.permuted_accuracy(i_nan, perms)).all()
    # The functional API: NaN for I; W stays an error (it is fixed for the engine).
    assert math.isnan(emergence.two_vs_two_from_similarity(w_mat, i_nan))
    with pytest.raises(ValueError, match="word similarity W has non-finite"):
        emergence.two_vs_two_from_similarity(i_nan, w_mat)
    # One NaN entry, and an infinite one, are enough.
    for bad in (np.nan, np.inf):
        m = i_ok.copy()
        m[2, 5] = m[5, 2] = bad
        assert np.isnan(engine.accuracy(m)) and np.isnan(big.accuracy(m))
        assert np.isnan(engine.permuted_accuracy(m, perms)).all()


def test_float32_safe_rejects_nan_and_inf() -> None:
    from emergence.stats import _two_vs_two_cpu

    for bad in (np.nan, np.inf, -np.inf):
        m = np.eye(6)
        m[1, 2] = bad
        assert not _two_vs_two_cpu.float32_safe(m)
        out, out_t = np.zeros((6, 8)), np.zeros((6, 8))
        safe, _ = _two_vs_two_cpu.stage_one(m, m.view(np.int64), out, out_t,
                                     np.zeros((6, 6), dtype=np.float32))
        assert not safe


def test_rsa_of_undefined_matrix_is_nan() -> None:
    w_mat, _, i_nan = _constant_row_case()
    assert math.isnan(emergence.rsa_from_similarity(w_mat, i_nan))
    assert math.isnan(emergence.rsa_from_similarity(w_mat, i_nan, "spearman"))


def test_permutation_null_of_undefined_layer_is_nan_not_an_error() -> None:
    """It used to fail with "image similarity matrices must be symmetric" (NaN != NaN)."""
    w_mat, i_ok, i_nan = _constant_row_case()
    for method in ("pearson", "spearman"):
        null = emergence.permutation_null(w_mat, [i_ok, i_nan], seed=3, start=0, stop=9,
                                          batch_size=4, rsa_method=method)
        alone = emergence.permutation_null(w_mat, [i_ok], seed=3, start=0, stop=9,
                                           batch_size=4, rsa_method=method)
        for key in ("two_vs_two", "rsa"):
            assert np.isnan(null[key][:, 1]).all()
            assert np.array_equal(null[key][:, 0], alone[key][:, 0])


# --- item 2: p-values --------------------------------------------------------------------


def test_p_values_of_nan_are_nan() -> None:
    null = np.array([[0.5, 0.4, np.nan], [0.6, 0.7, np.nan], [0.55, 0.5, np.nan],
                     [0.52, 0.45, np.nan]])
    obs = np.array([0.58, np.nan, 0.9])
    p = emergence.p_values(obs, null)
    assert p[0] == (1 + 1) / 5 and np.isnan(p[1]) and np.isnan(p[2])
    assert np.isnan(emergence.p_values([np.nan], np.zeros((10, 1))))[0]
    # Family-wise over the layers that can be scored: only column 0 here.
    fwe = emergence.family_wise_p_values(obs, null)
    assert fwe[0] == p[0] and np.isnan(fwe[1]) and np.isnan(fwe[2])
    both = np.array([0.58, 0.5, np.nan])
    # maxima of columns 0 and 1: 0.5, 0.7, 0.55, 0.52
    assert np.allclose(emergence.family_wise_p_values(both, null)[:2], [2 / 5, 5 / 5])
    assert np.isnan(emergence.family_wise_p_values([np.nan, np.nan], null[:, :2])).all()


# --- item 2: k < MIN_CONCEPTS -------------------------------------------------------------


def test_fewer_than_five_concepts_is_an_error() -> None:
    assert MIN_CONCEPTS == 5
    x = _embedding(4, 10, 0)
    w4 = emergence.similarity_matrix(x)
    message = (r"the 2 vs 2 test needs at least 5 concepts \(each correlation then has "
               r"k - 2 >= 3 entries; at k = 4 every reduced correlation is \+-1\); got k=4")
    with pytest.raises(ValueError, match=message):
        TwoVsTwo(w4)
    with pytest.raises(ValueError, match=message):
        emergence.two_vs_two_from_similarity(w4, w4)
    with pytest.raises(ValueError, match=message):
        emergence.two_vs_two(x, x)
    w5 = emergence.similarity_matrix(_embedding(5, 10, 0))
    assert 0.0 <= emergence.two_vs_two_from_similarity(w5, w5) <= 1.0


# --- item 2: 1 vs 2 without permutations, and with a NaN layer ----------------------------


def test_one_vs_two_without_permutations_is_not_tested() -> None:
    k = 24
    x = _embedding(k, 30, 5)
    w_mat = emergence.similarity_matrix(x)
    i_mat = emergence.similarity_matrix(x + 0.5 * _embedding(k, 30, 6))
    predicted = np.arange(k)
    predicted[[1, 4, 9]] = [2, 7, 10]
    res = emergence.one_vs_two(w_mat, i_mat, predicted, n_permutations=0)
    assert res.n_tests == 3 and res.null.size == 0
    assert np.isnan(res.permutation_p)  # used to be 1.0
    assert not np.isnan(res.binomial_p)
    with pytest.raises(ValueError, match="n_permutations"):
        emergence.one_vs_two(w_mat, i_mat, predicted, n_permutations=-1)
    with pytest.raises(ValueError, match="predicted concept indices"):
        emergence.one_vs_two(w_mat, i_mat, np.full(k, k), n_permutations=0)


def test_one_vs_two_of_undefined_layer_counts_no_test() -> None:
    w_mat, _, i_nan = _constant_row_case()
    k = w_mat.shape[0]
    predicted = np.arange(k)
    predicted[[0, 7]] = [1, 8]
    res = emergence.one_vs_two(w_mat, i_nan, predicted, n_permutations=5)
    assert res.n_tests == 0 and res.n_skipped == 2 and not res.passed.any()
    assert np.isnan(res.accuracy) and np.isnan(res.binomial_p) and np.isnan(res.permutation_p)
    assert all("undefined" in r for r in res.reason)
    with pytest.raises(ValueError, match="W has non-finite"):
        emergence.one_vs_two(i_nan, w_mat, predicted, n_permutations=0)


# --- item 7: permutations are validated ---------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.__setitem__((2, 5), 13), r"row 2 .*index 13 is outside 0\.\.12"),
    (lambda p: p.__setitem__((1, 0), 15), r"row 1 .*index 15 is outside"),  # k <= 15 < kp
    (lambda p: p.__setitem__((0, 3), 10**9), r"row 0 .*index 1000000000 is outside"),
    (lambda p: p.__setitem__((3, 4), -1), r"row 3 .*index -1 is outside"),
    (lambda p: p.__setitem__((2, 6), p[2, 7]), r"row 2 .*appears twice"),
])
def test_bad_permutations_are_rejected_before_the_kernel(change, message) -> None:  # noqa: ANN001
    """An index >= k used to segfault, k..kp-1 gave changing results, -1 wrapped around."""
    k = 13  # padded to 16 lanes: indices 13..15 fall inside the padding
    w_mat, i_mat = (emergence.similarity_matrix(_embedding(k, 20, s)) for s in (1, 2))
    perms = permutations(0, 0, 4, k)
    change(perms)
    for engine in (TwoVsTwo(w_mat), TwoVsTwo(w_mat * 2.0**55)):  # kernel and float64 paths
        with pytest.raises(ValueError, match=message) as err:
            engine.permuted_accuracy(i_mat, perms)
        assert "\n" not in str(err.value)


def test_permutation_shapes_and_types_are_checked() -> None:
    k = 8
    w_mat, i_mat = (emergence.similarity_matrix(_embedding(k, 20, s)) for s in (1, 2))
    engine = TwoVsTwo(w_mat)
    good = permutations(0, 0, 3, k)
    with pytest.raises(ValueError, match=r"\(B, 8\) array.*got shape \(8,\)"):
        engine.permuted_accuracy(i_mat, good[0])
    with pytest.raises(ValueError, match=r"got shape \(3, 7\)"):
        engine.permuted_accuracy(i_mat, good[:, :7])
    with pytest.raises(ValueError, match="integers"):
        engine.permuted_accuracy(i_mat, good.astype(np.float64))
    with pytest.raises(ValueError, match=r"image similarity must be \(8, 8\)"):
        engine.permuted_accuracy(i_mat[:7, :7], good)
    assert engine.permuted_accuracy(i_mat, good.astype(np.int32)).tolist() == \
        engine.permuted_accuracy(i_mat, good).tolist()
    assert engine.permuted_accuracy(i_mat, np.empty((0, k), dtype=np.int64)).shape == (0,)
    assert check_permutations(good.tolist(), k).dtype == np.int64


def test_matrix_views_are_accepted() -> None:
    """A W that is a slice of a larger matrix (not contiguous) used to fail inside numba."""
    s = emergence.similarity_matrix(_embedding(40, 30, 3))
    view = s[:13, :13]
    engine = TwoVsTwo(view)
    assert float(engine.accuracy(view)) == 1.0
    assert engine.permuted_accuracy(view, permutations(0, 0, 2, 13)).shape == (2,)


# --- item 1: a constant row through the analysis tables -----------------------------------


def _groups(k: int = 20) -> tuple[np.ndarray, list[str], list[analysis.GroupSimilarities]]:
    """Two groups, two layers; group "grey" has a uniform image (concept 3) at "pixels"."""
    w_mat, i_ok, i_nan = _constant_row_case(k, row=3)
    i_ok2 = _correlation(_embedding(k, 40, 9))
    wnids = [f"n{c:08d}" for c in range(k)]
    words = [f"word{c}" for c in range(k)]
    predicted = np.arange(k)
    predicted[[0, 3, 7, 12]] = [1, 4, 8, 13]

    def group(name: str, sims: list[np.ndarray]) -> analysis.GroupSimilarities:
        return analysis.GroupSimilarities(
            "net", "model", name, ["pixels", "conv"], ["", "m.conv"], [300, 40],
            np.stack(sims), predicted, [wnids[p] for p in predicted],
            [f"{name}/{w}.png" for w in wnids], wnids, words)

    return w_mat, wnids, [group("grey", [i_nan, i_ok]), group("photo", [i_ok2, i_ok])]


def _tsv_roundtrip(tmp_path: Path, name: str, rows: list[dict], columns: list[str]) -> list:
    write_tsv(tmp_path / name, rows, columns)
    return read_tsv(tmp_path / name)


def test_constant_row_scores_are_nan_with_a_reason(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    w_mat, _, groups = _groups()
    with caplog.at_level(logging.WARNING, logger="emergence.analysis"):
        rows = analysis.score_rows("wm", w_mat, groups)
    table = _tsv_roundtrip(tmp_path, "scores.tsv", rows, analysis.SCORE_COLUMNS)
    assert list(table[0]) == analysis.SCORE_COLUMNS and analysis.SCORE_COLUMNS[-1] == "reason"
    cell = {(r["group"], r["layer"]): r for r in table}
    bad = cell["grey", "pixels"]
    assert bad["two_vs_two"] == "nan" and bad["rsa"] == "nan"
    assert bad["reason"] == ("constant activations for concept(s) n00000003 (word3): "
                             "correlation undefined")
    for key in (("grey", "conv"), ("photo", "pixels"), ("photo", "conv")):
        assert cell[key]["reason"] == "" and 0.0 <= float(cell[key]["two_vs_two"]) <= 1.0
        assert math.isfinite(float(cell[key]["rsa"]))
    # The finite layers are scored as before (same numbers as each alone).
    assert float(cell["grey", "conv"]["two_vs_two"]) == literal.two_vs_two(
        w_mat, groups[0].similarity[1])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["net, group grey, layer pixels: constant activations for concept(s) "
                        "n00000003 (word3): correlation undefined; every measure is nan"]


def test_constant_row_null_and_significance_are_nan_with_a_reason(tmp_path: Path) -> None:
    w_mat, _, groups = _groups()
    scores = _tsv_roundtrip(tmp_path, "scores.tsv", analysis.score_rows("wm", w_mat, groups),
                            analysis.SCORE_COLUMNS)
    shards = [tmp_path / "shard-0.h5", tmp_path / "shard-1.h5"]
    for path, (lo, hi) in zip(shards, [(0, 8), (8, 19)], strict=True):
        analysis.null_shard(path, "wm", w_mat, groups, seed=5, start=lo, stop=hi,
                            batch_size=8, device="cpu", progress=False)
    nulls = read_nulls(shards)
    assert np.isnan(nulls["grey"]["two_vs_two"][:, 0]).all()
    assert np.isnan(nulls["grey"]["rsa"][:, 0]).all()
    assert np.isfinite(nulls["grey"]["two_vs_two"][:, 1]).all()
    assert np.isfinite(nulls["photo"]["two_vs_two"]).all()

    rows = analysis.significance_rows(scores, nulls, alpha=0.05)
    table = _tsv_roundtrip(tmp_path, "significance.tsv", rows, analysis.SIGNIFICANCE_COLUMNS)
    assert analysis.SIGNIFICANCE_COLUMNS[-1] == "reason"
    cell = {(r["group"], r["layer"]): r for r in table}
    reason = "constant activations for concept(s) n00000003 (word3): correlation undefined"
    for g, expected in (("grey", reason), ("mean", f"group grey: {reason}")):
        r = cell[g, "pixels"]
        for col in ("two_vs_two", "p_value", "p_value_fwe", "null_mean", "null_sd", "rsa",
                    "rsa_p_value"):
            assert r[col] == "nan", (g, col)
        assert r["significant"] == "false" and r["reason"] == expected
        # Family-wise over the layers that can be scored: conv alone, so p_fwe = p.
        conv = cell[g, "conv"]
        assert conv["reason"] == "" and conv["p_value_fwe"] == conv["p_value"] != "nan"
    photo = nulls["photo"]["two_vs_two"]
    obs = np.array([float(cell["photo", lay]["two_vs_two"]) for lay in ("pixels", "conv")])
    assert [float(cell["photo", lay]["p_value_fwe"]) for lay in ("pixels", "conv")] == \
        emergence.family_wise_p_values(obs, photo).tolist()

    # Without permutations the mean row is NaN too, not a mean over a NaN (it said 0.333).
    rows0 = analysis.significance_rows(scores, {}, alpha=0.05)
    mean0 = next(r for r in rows0 if r["group"] == "mean" and r["layer"] == "pixels")
    assert math.isnan(mean0["two_vs_two"]) and math.isnan(mean0["rsa"])
    assert mean0["reason"] == f"group grey: {reason}" and not mean0["significant"]

    # The figures skip the point instead of crashing.
    figures.plot_network(table, "net", table, "ctrl", "wm", 0.05, [tmp_path / "f2.png"])
    figures.plot_word_models({"wm": table}, {}, "net", [tmp_path / "f1.png"])
    figures.plot_overview({"net": table}, {}, [], "wm", 0.05, [tmp_path / "ov.png"])
    for name in ("f2.png", "f1.png", "ov.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_constant_row_one_vs_two_rows(tmp_path: Path) -> None:
    w_mat, wnids, groups = _groups()
    for n_perm in (0, 12):
        summary, tests = analysis.one_vs_two_rows("wm", w_mat, wnids, groups,
                                                  n_permutations=n_perm, seed=1)
        table = _tsv_roundtrip(tmp_path, "1v2.tsv", summary, analysis.ONE_VS_TWO_COLUMNS)
        test_table = _tsv_roundtrip(tmp_path, "1v2_tests.tsv", tests,
                                    analysis.ONE_VS_TWO_TEST_COLUMNS)
        cell = {(r["group"], r["layer"]): r for r in table}
        reason = "constant activations for concept(s) n00000003 (word3): correlation undefined"
        bad = cell["grey", "pixels"]
        assert (bad["n_tests"], bad["n_skipped"], bad["n_passed"]) == ("0", "4", "0")
        assert bad["accuracy"] == bad["binomial_p"] == bad["permutation_p"] == "nan"
        assert bad["reason"] == reason and bad["min_reference"] == "3"
        skipped = [t for t in test_table if t["group"] == "grey" and t["layer"] == "pixels"]
        assert len(skipped) == 4
        assert all(t["passed"] == "false" and t["reason"] == reason for t in skipped)
        for key in (("grey", "conv"), ("photo", "pixels"), ("all", "conv")):
            assert cell[key]["reason"] == "" and int(cell[key]["n_tests"]) > 0
            assert (cell[key]["permutation_p"] == "nan") == (n_perm == 0)
        pooled = cell["all", "pixels"]  # pooled over the group that can be scored
        assert pooled["n_tests"] == cell["photo", "pixels"]["n_tests"]
        assert pooled["n_skipped"] == "4" and pooled["reason"] == ""
        assert (pooled["permutation_p"] == "nan") == (n_perm == 0)
        counted = sum(int(r["n_tests"]) + int(r["n_skipped"]) for r in table
                      if r["group"] == "all")
        assert counted == len(test_table)


def test_one_vs_two_rows_with_no_counted_test(tmp_path: Path) -> None:
    """1 correct image of 20: every reference set is empty; NaN, not 0.0, and the reason."""
    w_mat, wnids, groups = _groups()
    g = groups[1]
    predicted = np.zeros(len(wnids), dtype=np.int64)  # everything classified as concept 0
    only = analysis.GroupSimilarities(g.network, g.model, g.group, g.layers, g.modules,
                                      g.n_features, g.similarity, predicted,
                                      [wnids[0]] * len(wnids), g.image_path, wnids, g.concepts)
    summary, tests = analysis.one_vs_two_rows("wm", w_mat, wnids, [only], n_permutations=7,
                                              seed=1)
    for r in summary:
        assert r["n_tests"] == 0 and r["n_skipped"] == len(wnids) - 1
        assert math.isnan(r["accuracy"]) and math.isnan(r["binomial_p"])
        assert math.isnan(r["permutation_p"])
    assert summary[0]["reason"] == "no test counted: 19 skipped (reference set of 0 concepts < 3)"
    assert summary[1]["reason"] == f"group photo: {summary[0]['reason']}"  # the pooled row
    assert {t["reason"] for t in tests} == {"reference set of 0 concepts < 3"}
    table = _tsv_roundtrip(tmp_path, "s.tsv", summary, analysis.ONE_VS_TWO_COLUMNS)
    figures.plot_one_vs_two(table, "net", "wm", 0.05, [tmp_path / "f4.png"])
    assert (tmp_path / "f4.png").stat().st_size > 1000
