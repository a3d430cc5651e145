"""The vectorised statistics against the literal implementations in tests/literal.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import emergence
from emergence.stats.one_vs_two import MIN_REFERENCE, pool
from emergence.stats.permutation import (
    batch_ranges,
    p_value,
    permutations,
    shard_range,
    significant,
)
from tests import literal


def planted(k: int, p: int, q: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two embeddings of the same k concepts sharing a latent structure of given strength."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 8))
    x = latent @ rng.standard_normal((8, p)) * signal + rng.standard_normal((k, p))
    y = latent @ rng.standard_normal((8, q)) * signal + rng.standard_normal((k, q))
    return x, y


CASES = [  # (k, p, q, signal, seed): 24 cases, k from 5 (MIN_CONCEPTS) to 200, chance to strong
    (k, p, q, s, seed)
    for seed, (k, p, q, s) in enumerate(
        [
            (5, 5, 7, 1.0), (5, 3, 9, 0.0), (6, 10, 4, 2.0), (7, 20, 20, 0.5),
            (8, 6, 30, 1.0), (10, 50, 12, 0.2), (12, 15, 15, 3.0), (16, 40, 8, 0.0),
            (20, 30, 30, 0.7), (25, 64, 16, 1.5), (30, 12, 100, 0.3), (40, 50, 50, 1.0),
            (50, 300, 20, 0.1), (60, 25, 80, 0.8), (75, 100, 100, 0.4), (90, 64, 64, 2.0),
            (100, 300, 384, 0.25), (120, 40, 40, 0.0), (140, 200, 30, 0.6), (166, 300, 512, 0.5),
            (170, 50, 50, 1.2), (180, 90, 60, 0.05), (190, 30, 300, 0.9), (200, 128, 128, 0.3),
        ]
    )
]


@pytest.mark.parametrize(("k", "p", "q", "signal", "seed"), CASES)
def test_two_vs_two_matches_literal(k: int, p: int, q: int, signal: float, seed: int) -> None:
    x, y = planted(k, p, q, signal, seed)
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    expected = literal.two_vs_two(w_mat, i_mat)
    assert emergence.two_vs_two(x, y) == expected
    assert emergence.two_vs_two_from_similarity(w_mat, i_mat) == expected
    assert emergence.rsa(x, y) == pytest.approx(literal.rsa(w_mat, i_mat), abs=1e-12)


def test_similarity_matrix_matches_corrcoef_and_streams() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 1000)) * 5 + 1e4  # large mean: the shift must handle it
    ref = np.corrcoef(x)
    assert np.allclose(emergence.similarity_matrix(x), ref, atol=1e-12)
    assert np.allclose(emergence.similarity_matrix(x, chunk_features=7), ref, atol=1e-12)
    acc = emergence.PearsonAccumulator(30)
    for lo in range(0, 1000, 333):
        acc.update(x[:, lo : lo + 333].astype(np.float32))
    assert np.allclose(acc.correlation(), np.corrcoef(x.astype(np.float32)), atol=1e-6)


def test_similarity_matrix_rejects_constant_rows() -> None:
    x = np.ones((4, 10))
    with pytest.raises(ValueError, match="constant"):
        emergence.similarity_matrix(x)


def test_two_vs_two_extremes_and_ties() -> None:
    x, _ = planted(30, 40, 40, 1.0, 0)
    assert emergence.two_vs_two(x, x) == 1.0
    # Two concepts with identical image rows: every test holding out both is a tie, and fails.
    w_mat = literal.corr_matrix(x)
    i_mat = w_mat.copy()
    i_mat[1, :] = i_mat[0, :]
    i_mat[:, 1] = i_mat[:, 0]
    i_mat[0, 1] = i_mat[1, 0] = i_mat[0, 0] = i_mat[1, 1] = 1.0
    assert emergence.two_vs_two_from_similarity(w_mat, i_mat) == literal.two_vs_two(w_mat, i_mat)
    engine = emergence.TwoVsTwo(w_mat)
    assert not bool(engine.outcomes(i_mat)[0])  # pair (0, 1) is the first pair


def test_two_vs_two_input_errors() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        emergence.two_vs_two(np.zeros((5, 3)), np.zeros((6, 3)))
    with pytest.raises(ValueError, match="at least 5"):
        emergence.two_vs_two_from_similarity(np.eye(3), np.eye(3))


def test_permutation_null_matches_literal() -> None:
    x, y = planted(12, 20, 20, 1.0, 3)
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    i2 = literal.corr_matrix(planted(12, 20, 20, 0.0, 4)[1])
    null = emergence.permutation_null(w_mat, [i_mat, i2], seed=7, start=0, stop=25, batch_size=4)
    for idx in range(25):
        perm = np.random.default_rng([7, idx]).permutation(12)
        for j, m in enumerate([i_mat, i2]):
            pm = literal.permuted(m, perm)
            assert null["two_vs_two"][idx, j] == literal.two_vs_two(w_mat, pm)
            assert null["rsa"][idx, j] == pytest.approx(literal.rsa(w_mat, pm), abs=1e-12)


def test_permutation_null_spearman_rsa() -> None:
    x, y = planted(10, 20, 20, 1.0, 5)
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    null = emergence.permutation_null(w_mat, [i_mat], seed=1, start=3, stop=8,
                                      rsa_method="spearman")
    iu = np.triu_indices(10, k=1)
    for row, idx in enumerate(range(3, 8)):
        pm = literal.permuted(i_mat, np.random.default_rng([1, idx]).permutation(10))
        assert null["rsa"][row, 0] == pytest.approx(
            stats.spearmanr(w_mat[iu], pm[iu]).statistic, abs=1e-12)


@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_shards_reassemble_bit_identically(n_shards: int) -> None:
    x, y = planted(40, 30, 30, 0.5, 9)
    w_mat, i_mat = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
    whole = emergence.permutation_null(w_mat, [i_mat], seed=3, start=0, stop=100, batch_size=16)
    parts = []
    for s in range(n_shards):
        lo, hi = shard_range(100, n_shards, s, 16)
        parts.append(emergence.permutation_null(w_mat, [i_mat], seed=3, start=lo, stop=hi,
                                                batch_size=16)["two_vs_two"])
    assert np.array_equal(np.concatenate(parts), whole["two_vs_two"])


def test_shard_and_batch_ranges_cover_exactly() -> None:
    for n, shards, b in [(1000, 4, 64), (10, 8, 4), (5, 3, 64), (100, 1, 7)]:
        covered = [i for s in range(shards) for i in range(*shard_range(n, shards, s, b))]
        assert covered == list(range(n))
    assert list(batch_ranges(5, 23, 8)) == [(5, 8), (8, 16), (16, 23)]
    assert permutations(1, 0, 3, 5).shape == (3, 5)
    assert np.array_equal(permutations(1, 2, 3, 5)[0], emergence.permutation(1, 2, 5))


def test_p_values_plus_one_and_family_wise() -> None:
    null = np.array([[0.5, 0.4], [0.6, 0.7], [0.55, 0.5], [0.52, 0.45]])
    obs = np.array([0.58, 0.5])
    assert np.allclose(emergence.p_values(obs, null), [(1 + 1) / 5, (1 + 2) / 5])
    # max over layers per permutation: 0.5, 0.7, 0.55, 0.52
    assert np.allclose(emergence.family_wise_p_values(obs, null), [(1 + 1) / 5, (1 + 4) / 5])
    assert p_value(0.5, null[:, 1]) == (1 + 2) / 5 and np.isnan(p_value(np.nan, null[:, 1]))
    assert significant(0.04, 0.05) and not significant(0.05, 0.05)
    assert not significant(np.nan, 0.05)  # untested


def test_pooling_one_group_is_that_group_and_two_add_up() -> None:
    """The pooled 'all' row: passes and tests add up; its null counts the passes of every
    group under the same permutation, so pooling one group gives that group's p-values."""
    rng = np.random.default_rng(21)
    k, n_perm = 30, 40
    w_mat = literal.corr_matrix(rng.standard_normal((k, 20)))
    results = []
    for g in range(2):
        i_mat = literal.corr_matrix(rng.standard_normal((k, 25)))
        predicted = np.arange(k)
        predicted[rng.choice(k, size=9, replace=False)] = rng.integers(0, k, size=9)
        results.append(emergence.one_vs_two(w_mat, i_mat, predicted, n_permutations=n_perm,
                                            seed=3 + g))
    one = results[0]
    alone = pool([one], n_perm)
    assert (alone.n_passed, alone.n_tests, alone.n_skipped) == (one.n_passed, one.n_tests,
                                                                one.n_skipped)
    assert alone.accuracy == one.accuracy and alone.binomial_p == one.binomial_p
    assert alone.permutation_p == one.permutation_p
    both = pool(results, n_perm)
    assert both.n_tests == sum(r.n_tests for r in results)
    null = sum(np.rint(r.null * r.n_tests) for r in results)
    assert both.permutation_p == (1 + (null >= both.n_passed).sum()) / (1 + n_perm)
    assert np.isnan(pool(results, 0).permutation_p)


def test_one_vs_two_matches_literal() -> None:
    rng = np.random.default_rng(11)
    for trial in range(6):
        k = int(rng.integers(8, 60))
        x, y = planted(k, 30, 40, float(rng.uniform(0, 2)), 100 + trial)
        w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
        predicted = np.arange(k)
        wrong = rng.choice(k, size=k // 3, replace=False)
        predicted[wrong] = rng.integers(-1, k, size=wrong.size)
        _check_one_vs_two_against_literal(w_mat, i_mat, predicted)


def _check_one_vs_two_against_literal(w_mat: np.ndarray, i_mat: np.ndarray,
                                      predicted: np.ndarray, n_perm: int = 30) -> None:
    """Outcomes, skips, null and binomial p of one_vs_two equal the literal reference's."""
    k = len(predicted)
    res = emergence.one_vs_two(w_mat, i_mat, predicted, n_permutations=n_perm, seed=2,
                               batch_size=7)
    expected = literal.one_vs_two(w_mat, i_mat, predicted.tolist())
    counted = [e is not None for e in expected]
    assert res.counted.tolist() == counted
    assert res.passed.tolist() == [bool(e) for e in expected]
    assert res.n_tests == sum(counted) and res.n_skipped == len(expected) - sum(counted)
    assert [bool(r) for r in res.reason] == [not c for c in counted]
    if not any(counted):
        assert np.isnan(res.accuracy) and np.isnan(res.binomial_p)
        assert np.isnan(res.permutation_p) and res.null.size == 0
        return
    for idx in range(n_perm):
        perm = np.random.default_rng([2, idx]).permutation(k)
        null_outcomes = literal.one_vs_two(literal.permuted(w_mat, perm), i_mat,
                                           predicted.tolist())
        assert res.null[idx] == pytest.approx(
            np.mean([o for o in null_outcomes if o is not None]), abs=0)
    n_pass = sum(bool(e) for e in expected)
    assert res.accuracy == n_pass / sum(counted)
    assert res.binomial_p == pytest.approx(
        stats.binomtest(n_pass, sum(counted), 0.5, alternative="greater").pvalue)


@pytest.mark.parametrize("n_correct", [1, 2, 3, 4])
def test_one_vs_two_skips_small_reference_sets_like_literal(n_correct: int) -> None:
    """Few correctly classified images: reference sets of 0-2 concepts are skipped (not
    failed), the rest counted; with 1 correct of 40 nothing is counted and the accuracy
    is NaN (it used to be 0.0 with binomial p 1.0). n_correct = 4: nothing skipped."""
    rng = np.random.default_rng(40 + n_correct)
    k = 40
    x, y = planted(k, 30, 40, 1.0, 200 + n_correct)
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    correct = rng.choice(k, size=n_correct, replace=False)
    predicted = rng.choice(correct, size=k)  # every other image classified as a correct one
    predicted[correct] = correct
    predicted[rng.choice(np.setdiff1d(np.arange(k), correct), size=5, replace=False)] = \
        rng.integers(0, k, size=5)  # some into incorrectly classified concepts
    predicted[predicted == np.arange(k)] = -1
    predicted[correct] = correct
    _check_one_vs_two_against_literal(w_mat, i_mat, predicted)
    res = emergence.one_vs_two(w_mat, i_mat, predicted, n_permutations=5)
    # R = the correct concepts minus the predicted one: under 3 when n_correct <= 3.
    assert (res.n_skipped > 0) == (n_correct <= MIN_REFERENCE)
    assert (res.n_reference[res.counted] >= MIN_REFERENCE).all()
    for n_ref, reason in zip(res.n_reference[~res.counted], np.array(res.reason)[~res.counted],
                             strict=True):
        assert n_ref < MIN_REFERENCE and reason == f"reference set of {n_ref} concepts < 3"
    assert not res.passed[~res.counted].any() and np.isnan(res.r_true[~res.counted]).all()
    if n_correct == 1:
        assert res.n_tests == 0 and np.isnan(res.accuracy) and np.isnan(res.binomial_p)
        assert res.n_skipped == k - 1 - (predicted < 0).sum()


def test_one_vs_two_without_misclassifications() -> None:
    w = emergence.similarity_matrix(np.random.default_rng(0).standard_normal((6, 9)))
    res = emergence.one_vs_two(w, w, np.arange(6), n_permutations=10)
    assert res.n_tests == 0 and np.isnan(res.accuracy) and np.isnan(res.permutation_p)


def test_numba_and_torch_engines_agree_on_permutations() -> None:
    x, y = planted(60, 40, 40, 0.4, 21)
    w_mat, i_mat = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
    engine = emergence.TwoVsTwo(w_mat)
    perms = permutations(5, 0, 12, 60)
    batch = np.stack([i_mat[p][:, p] for p in perms])
    float64_torch = engine.outcomes(batch).sum(dim=-1).numpy() / engine.n_pairs
    assert np.array_equal(engine.permuted_accuracy(i_mat, perms), float64_torch)
    assert np.array_equal(engine.accuracy(batch), float64_torch)


def test_permutation_null_rejects_asymmetric_matrices() -> None:
    m = np.random.default_rng(0).standard_normal((6, 6))
    with pytest.raises(ValueError, match="symmetric"):
        emergence.permutation_null(np.eye(6) + 0.1, [m], seed=0, start=0, stop=2)
