"""The jackknife over concepts (stats/jackknife.py) and the calibrated intervals
(stats/intervals.py, uncertainty.py) against the literal definitions in tests/literal.py:
every sample is the measure of the kept concepts' matrices; the corrected variance, the
two-factor variance, Holm and the trend slope computed loop by loop."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import stats

import emergence
from emergence.stats.cka import linear_gram
from emergence.stats.intervals import (
    concept_variance,
    holm,
    interval,
    t_p_value,
    trend_weights,
    two_factor_variance,
)
from emergence.stats.jackknife import (
    JACKKNIFE_STREAM,
    jackknife_deletions,
    jackknife_distribution,
    jackknife_pairs,
    jackknife_size,
)
from emergence.stats.permutation import shard_range
from emergence.uncertainty import WITHHELD, resolve_factors
from tests import literal

ALL = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")
STORED = (*ALL, "two_vs_two_margin", "mutual_knn_fixed")


def inputs(k: int, seed: int, *, ties: bool = False, duplicates: bool = False,
           signal: float = 1.0) -> tuple[np.ndarray, ...]:
    """W, I and the Gram matrices of two embeddings of k concepts sharing a latent
    structure; ``ties``: entries rounded (similarities repeat exactly); ``duplicates``:
    concept 1 is a copy of concept 0 in both spaces."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 4))
    x = latent @ rng.standard_normal((4, 12)) * signal + rng.standard_normal((k, 12))
    y = latent @ rng.standard_normal((4, 9)) * signal + rng.standard_normal((k, 9))
    if ties:
        x, y = np.round(x), np.round(y)
    if duplicates:
        x[1], y[1] = x[0], y[0]
    return (emergence.similarity_matrix(x), emergence.similarity_matrix(y), linear_gram(x),
            linear_gram(y))


@pytest.mark.parametrize(("k", "pairs", "variant"), [
    (7, 21, {}), (8, 6, {"ties": True}), (9, 12, {"duplicates": True}), (12, 8, {}),
    (16, 5, {"ties": True, "duplicates": True})])
def test_every_sample_equals_the_literal_measure_of_the_kept_concepts(
        k: int, pairs: int, variant: dict) -> None:
    w, i, kw, ki = inputs(k, k, **variant)
    got = jackknife_distribution(w, [i], seed=5, n_pairs=pairs, measures=ALL, word_gram=kw,
                                 image_grams=[ki], knn_k=3, batch_size=5)
    deletions = jackknife_deletions(5, k, pairs)
    assert len(deletions) == jackknife_size(k, pairs) == 1 + k + min(pairs, k * (k - 1) // 2)
    for row, (d1, d2) in enumerate(deletions):
        for m in STORED:
            want = literal.jackknife_value(m, w, i, kw, ki, (int(d1), int(d2)), knn=3)
            if m in ("two_vs_two", "mutual_knn", "mutual_knn_fixed"):
                assert got[m][row, 0] == pytest.approx(want, abs=1e-15), (m, d1, d2)
            else:
                assert got[m][row, 0] == pytest.approx(want, abs=1e-12), (m, d1, d2)
    # sample 0 is the measure itself
    assert got["two_vs_two"][0, 0] == emergence.two_vs_two_from_similarity(w, i)


def test_kendall_and_spearman_use_the_weighted_kernels() -> None:
    w, i, kw, ki = inputs(10, 3, ties=True)
    got = jackknife_distribution(w, [i], seed=1, n_pairs=6, measures=("two_vs_two", "rsa"),
                                 rsa_method="kendall")
    for row, (d1, d2) in enumerate(jackknife_deletions(1, 10, 6)):
        want = literal.jackknife_value("rsa_kendall", w, i, kw, ki, (int(d1), int(d2)))
        assert got["rsa"][row, 0] == pytest.approx(want, abs=1e-12)


def test_pairs_are_drawn_from_seed_and_k() -> None:
    k, p = 30, 50
    total = k * (k - 1) // 2
    pick = np.sort(np.random.default_rng([4, JACKKNIFE_STREAM, k]).choice(total, p,
                                                                           replace=False))
    a, b = np.triu_indices(k, 1)
    np.testing.assert_array_equal(jackknife_pairs(4, k, p), np.stack([a[pick], b[pick]], 1))
    assert len({tuple(x) for x in jackknife_pairs(4, k, p)}) == p
    assert len(jackknife_pairs(4, 6, 1000)) == 15  # at most every pair
    assert not np.array_equal(jackknife_pairs(4, k, p), jackknife_pairs(5, k, p))


def test_shards_batches_and_threads_give_the_same_bits() -> None:
    k, p = 24, 40
    w, i, kw, ki = inputs(k, 9, duplicates=True)
    bad = i.copy()
    bad[2, 5] = bad[5, 2] = np.nan
    args = dict(measures=ALL, word_gram=kw, image_grams=[ki, ki, ki], knn_k=4, n_pairs=p)
    whole = jackknife_distribution(w, [i, bad, w], seed=11, batch_size=4, **args)
    n = jackknife_size(k, p)
    np.testing.assert_array_equal(whole["index"], np.arange(n))
    for shards in (1, 3, 8):
        parts = [jackknife_distribution(w, [i, bad, w], seed=11, batch_size=4, **args,
                                        **dict(zip(("start", "stop"),
                                                   shard_range(n, shards, s, 4), strict=True)))
                 for s in range(shards)]
        for m in (*STORED, "index"):
            np.testing.assert_array_equal(np.concatenate([q[m] for q in parts]), whole[m])
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = jackknife_distribution(w, [i, bad, w], seed=11, start=5, batch_size=7, **args)
    finally:
        numba.set_num_threads(saved)
    for m in STORED:
        np.testing.assert_array_equal(single[m], whole[m][5:])
        assert np.isnan(whole[m][:, 1]).all()
        assert np.isfinite(whole[m][:, 0]).all()


def test_too_few_concepts_is_one_line() -> None:
    w, i, _, _ = inputs(6, 0)
    with pytest.raises(ValueError, match="needs at least 7 concepts"):
        jackknife_distribution(w, [i], seed=0, n_pairs=3)


# ---------------------------------------------------------------- the variance


def planted(k: int, p: int, seed: int, layers: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = 0.5 + rng.normal(0, 0.01, (1 + k + p, layers)) + rng.normal(0, 0.02, layers)
    c = v + rng.normal(0, 0.003, v.shape)
    return v, c


@pytest.mark.parametrize("rule", ["smooth", "ratio", "excess"])
@pytest.mark.parametrize(("k", "p"), [(8, 28), (15, 7), (40, 100)])
def test_concept_variance_equals_literal(rule: str, k: int, p: int) -> None:
    pairs = jackknife_pairs(2, k, p)
    v, c = planted(k, len(pairs), k + p)
    got = concept_variance(v, k, pairs, rule=rule, companion=None if rule == "smooth" else c)
    measure = {"smooth": "rsa", "ratio": "two_vs_two", "excess": "mutual_knn"}[rule]
    for j in range(v.shape[1]):
        want_v, want_df = literal.measure_variance(
            measure, list(v[:, j]), k, [tuple(x) for x in pairs], list(c[:, j]))
        assert got.variance[j] == pytest.approx(want_v, rel=1e-10)
        assert got.df[j] == pytest.approx(want_df, rel=1e-8)
        assert got.variance[j] == pytest.approx(got.first[j] + got.second[j], rel=1e-12)


def test_degrees_of_freedom_are_at_least_k_minus_1() -> None:
    """Satterthwaite's ν where it exceeds k - 1, k - 1 where it does not (the floor binds in
    some of these planted columns and not in others), NaN where V is."""
    k, p = 20, 190
    pairs = jackknife_pairs(0, k, p)
    v, _ = planted(k, len(pairs), 5, layers=40)
    # concept effects of growing size in the second half (V1 > 0 there)
    effect = np.linspace(-1, 1, k)[:, None] * np.linspace(0.01, 1.0, 20)
    v[1:k + 1, 20:] += effect
    v[k + 1:, 20:] += effect[pairs[:, 0]] + effect[pairs[:, 1]]
    got = concept_variance(v, k, pairs)
    from emergence.stats.intervals import _parts

    j, m, var_m = _parts(v, k, pairs)
    c1, c2 = (k - 1) * (k - 2) * (k - 3) / k, (k - 2) ** 2 * (k - 3) / (2 * k)
    unbound = got.first > 0
    satterthwaite = 2 * got.variance**2 / (2 * j * j / (k - 1) + (c1 - c2) ** 2 * var_m)
    assert unbound.any()
    want = np.where(unbound, np.maximum(satterthwaite, k - 1), got.df)
    assert np.allclose(got.df, want, rtol=1e-12)
    assert (got.df >= k - 1).all()
    assert (got.df == k - 1).any() and (got.df > k - 1).any()
    v[3, 0] = np.nan
    assert np.isnan(concept_variance(v, k, pairs).df[0])


@pytest.mark.parametrize("rule", ["smooth", "ratio", "excess"])
def test_concept_variance_both_branches_equal_literal(rule: str) -> None:
    """Layer 0 with a large first-order part (V1 > 0: J - c1 m), layer 1 with none (V1 < 0:
    V2 from J / a and c2 m by inverse variance), both equal to the slow reference."""
    k, p = 12, 40
    pairs = jackknife_pairs(3, k, p)
    v, c = planted(k, len(pairs), 77, layers=2)
    effect = np.linspace(-0.2, 0.2, k)  # concept effects, additive: V1 > 0
    for x in (v, c):
        x[1:k + 1, 0] += effect
        x[k + 1:, 0] += effect[pairs[:, 0]] + effect[pairs[:, 1]]
    got = concept_variance(v, k, pairs, rule=rule, companion=None if rule == "smooth" else c)
    assert got.first[0] > 0 and got.first[1] == 0
    measure = {"smooth": "rsa", "ratio": "two_vs_two", "excess": "mutual_knn"}[rule]
    for j in range(2):
        want_v, want_df = literal.measure_variance(
            measure, list(v[:, j]), k, [tuple(x) for x in pairs], list(c[:, j]))
        assert got.variance[j] == pytest.approx(want_v, rel=1e-10)
        assert got.df[j] == pytest.approx(want_df, rel=1e-8)


def test_corrected_variance_is_unbiased_for_a_u_statistic() -> None:
    """For a degree-2 U-statistic (the mean of x_a x_b + 0.3 (y_a + y_b) over pairs) the
    corrected variance J - (k-2)(k-3)/2 m averages to the variance over samples (with V1
    held at 0 where it would be negative: a little above); the delete-one jackknife alone
    to 4/3 of it here."""
    from emergence.stats.intervals import _parts

    rng = np.random.default_rng(0)
    k, reps = 12, 6000
    pairs = jackknife_pairs(0, k, 1000)
    rows = jackknife_deletions(0, k, 1000)
    keep = np.ones((len(rows), k), dtype=bool)
    for r, (d1, d2) in enumerate(rows):
        keep[r, [d for d in (d1, d2) if d >= 0]] = False
    n_pairs = keep.sum(axis=1) * (keep.sum(axis=1) - 1) / 2
    est, raw, var, jack = [], [], [], []
    for _ in range(reps):
        x, y = rng.standard_normal(k), rng.standard_normal(k)
        h = np.outer(x, x) + 0.3 * (y[:, None] + y[None, :])
        np.fill_diagonal(h, 0.0)
        vals = np.einsum("ra,ab,rb->r", keep, h, keep) / 2 / n_pairs  # each kept pair once
        est.append(vals[0])
        j, m, _ = _parts(vals, k, pairs)
        raw.append(j - (k - 2) * (k - 3) / 2 * m)
        var.append(float(concept_variance(vals, k, pairs).variance))
        jack.append(j)
    truth = 4 * 0.09 / k + 2 / (k * (k - 1))  # 4 s1² / k + 2 s2² / (k (k - 1))
    assert np.var(est) == pytest.approx(truth, rel=0.08)
    assert np.mean(raw) == pytest.approx(truth, rel=0.05)
    assert truth < np.mean(var) < 1.15 * truth
    assert np.mean(jack) > 1.25 * truth


@pytest.mark.parametrize("measure", ["rsa", "two_vs_two", "mutual_knn"])
@pytest.mark.parametrize("g", [2, 3, 5])
def test_two_factor_variance_equals_literal(measure: str, g: int) -> None:
    k, p = 10, 20
    pairs = jackknife_pairs(1, k, p)
    per = [planted(k, len(pairs), 10 * g + h, layers=2) for h in range(g)]
    vals = np.stack([v for v, _ in per])
    comps = np.stack([c for _, c in per])
    rule = {"rsa": "smooth", "two_vs_two": "ratio", "mutual_knn": "excess"}[measure]
    got = two_factor_variance(vals, k, pairs, rule=rule,
                              group_companions=None if rule == "smooth" else comps)
    for j in range(2):
        want_v, want_df = literal.two_factor_variance(
            [list(v[:, j]) for v in vals], k, [tuple(x) for x in pairs], measure,
            None if rule == "smooth" else [list(c[:, j]) for c in comps])
        assert got.variance[j] == pytest.approx(want_v, rel=1e-10)
        assert got.df[j] == pytest.approx(want_df, rel=1e-8)


def test_two_factor_variance_of_a_crossed_table_mean() -> None:
    """The mean of a concepts x groups table with row, column and cell effects: the
    two-factor variance averages to the variance over tables (the ANOVA estimator)."""
    rng = np.random.default_rng(5)
    k, g, reps = 15, 4, 2000
    pairs = jackknife_pairs(0, k, 30)
    rows = jackknife_deletions(0, k, 30)
    est, var = [], []
    for _ in range(reps):
        y = (rng.normal(0, 1.0, (k, 1)) + rng.normal(0, 0.8, (1, g))
             + rng.normal(0, 0.5, (k, g)))
        per = np.empty((g, len(rows)))
        for r, (d1, d2) in enumerate(rows):
            keep = [c for c in range(k) if c not in (d1, d2)]
            per[:, r] = y[keep].mean(axis=0)
        est.append(per[:, 0].mean())
        var.append(float(two_factor_variance(per, k, pairs).variance))
    truth = 1.0 / k + 0.64 / g + 0.25 / (k * g)
    assert np.var(est) == pytest.approx(truth, rel=0.07)
    assert np.mean(var) == pytest.approx(truth, rel=0.05)


def test_interval_p_holm_and_trend() -> None:
    from emergence.stats.intervals import Variance

    var = Variance(np.array([0.04, 0.0, 0.0, np.nan]), np.array([7.5, np.inf, np.inf, 3.0]),
                   np.zeros(4), np.zeros(4))
    est = np.array([0.5, 0.2, 0.0, 0.1])
    low, high = interval(est, var, 0.9)
    t = stats.t.ppf(0.95, 7.5)
    assert (low[0], high[0]) == (pytest.approx(0.5 - t * 0.2), pytest.approx(0.5 + t * 0.2))
    assert low[1] == high[1] == 0.2 and np.isnan(low[3])
    assert np.all(low[:3] <= est[:3]) and np.all(est[:3] <= high[:3])  # contains it
    assert interval(est, var, 0.9, (0.0, 0.6))[1][0] == 0.6  # clipped to the range
    p = t_p_value(est, var)
    assert p[0] == pytest.approx(2 * stats.t.sf(2.5, 7.5))
    assert p[1] == 0.0 and p[2] == 1.0 and np.isnan(p[3])
    for ps in ([0.01, 0.04, 0.03, 0.5], [0.2, np.nan, 0.01, 0.01], [np.nan], []):
        np.testing.assert_allclose(holm(ps), literal.holm(list(ps)), rtol=1e-15)
    rng = np.random.default_rng(2)
    for pos in ([0, 1, 2, 3], [0, 2, 3, 7, 9]):
        v = rng.normal(size=len(pos))
        assert v @ trend_weights(pos) == pytest.approx(literal.slope(list(v), pos))
    assert np.isnan(trend_weights([3, 3])).all()


def test_factors_setting() -> None:
    assert resolve_factors("auto", 2) == "concepts" and resolve_factors("auto", 3) == "both"
    assert resolve_factors("both", 1) == "concepts" and resolve_factors("concepts", 5) == \
        "concepts"
    with pytest.raises(ValueError, match="intervals.factors"):
        resolve_factors("images", 3)


def test_public_interval_is_the_pipeline_computation() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((25, 4))
    x = z @ rng.standard_normal((4, 20)) + rng.standard_normal((25, 20))
    y = z @ rng.standard_normal((4, 30)) + rng.standard_normal((25, 30))
    w, i = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
    for m in ("two_vs_two", "rsa", "cka", "cka_debiased"):
        est, low, high = emergence.interval(x, y, m, n=60, seed=3)
        grams = ({"word_gram": linear_gram(x), "image_grams": [linear_gram(y)]}
                 if m.startswith("cka") else {})
        s = jackknife_distribution(w, [i], seed=3, n_pairs=60, measures=(m,), **grams)
        comp = s.get("two_vs_two_margin")
        var = concept_variance(s[m][:, 0], 25, jackknife_pairs(3, 25, 60),
                               rule="ratio" if m == "two_vs_two" else "smooth",
                               companion=None if comp is None else comp[:, 0])
        lo2, hi2 = interval(est, var, 0.95, emergence.stats.intervals.RANGES.get(m))
        assert (low, high) == (float(lo2), float(hi2)) and low <= est <= high
        assert est == pytest.approx(float(s[m][0, 0]), abs=1e-12)
    est, low, high = emergence.interval(x, y, "mutual_knn", k=4)
    assert math.isfinite(est) and math.isnan(low) and "mutual_knn" in WITHHELD
    assert emergence.interval(x, y, "rsa", method="spearman")[0] == pytest.approx(
        emergence.rsa(x, y, method="spearman"))
    with pytest.raises(TypeError, match="unexpected option"):
        emergence.interval(x, y, "rsa", knn=3)
    with pytest.raises(ValueError, match="unknown measure"):
        emergence.interval(x, y, "cosine")
    with pytest.raises(ValueError, match="one row per concept"):
        emergence.interval(x, y[:-1])


def test_old_bootstrap_section_is_a_one_line_error(tmp_path) -> None:
    import yaml

    from emergence.config import ConfigError, check_config
    from tests.conftest import ROOT

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["bootstrap"] = {"n": 1000}
    with pytest.raises(ConfigError, match="config key 'bootstrap': replaced by 'intervals'"):
        check_config(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["intervals"]["factors"] = "images"
    with pytest.raises(ConfigError, match="intervals.factors"):
        check_config(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml")
