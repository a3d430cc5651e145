"""The statistics at THINGS scale, k = 1,854 concepts (C(1854, 2) = 1,717,731 pairs).

No hidden k limit in the statistics path: pair indices, the certified float32 engine (one
matrix, batches, permutations), the permutation null and the 1 vs 2 test give the float64
definition's results at k = 1,854. The literal reference is slow (one pair at a time), so it
checks a random subset of pairs and tests; the float64 definition checks every pair.
"""

from __future__ import annotations

import numpy as np
import pytest

import emergence
from emergence.stats import _two_vs_two_cpu
from emergence.stats.permutation import permutation_null, permutations
from emergence.stats.two_vs_two import TwoVsTwo, pair_indices
from tests import literal

K = 1854
PAIRS = K * (K - 1) // 2


@pytest.fixture(scope="module")
def spaces() -> tuple[np.ndarray, np.ndarray, TwoVsTwo]:
    rng = np.random.default_rng(1854)
    latent = rng.standard_normal((K, 6))
    x = latent @ rng.standard_normal((6, 40)) * 0.1 + rng.standard_normal((K, 40))
    y = latent @ rng.standard_normal((6, 30)) * 0.1 + rng.standard_normal((K, 30))
    w, i = emergence.similarity_matrix(x), emergence.similarity_matrix(y)
    return w, i, TwoVsTwo(w)


def _passed(engine: TwoVsTwo, i_mat: np.ndarray) -> np.ndarray:
    """Pass/fail of every pair by the float64 definition."""
    return engine.outcomes(i_mat).numpy()


def test_pair_indices_at_k_1854() -> None:
    a, b = pair_indices(K)
    assert a.dtype == b.dtype == np.int64 and a.size == PAIRS == 1_717_731
    assert (a[0], b[0], a[-1], b[-1]) == (0, 1, K - 2, K - 1)
    assert np.all(a < b)
    assert _two_vs_two_cpu.cross_product_error(K) < 1e-3  # the bound stays usable


def test_engine_equals_float64_definition_and_literal_at_k_1854(spaces) -> None:
    w, i, engine = spaces
    passed = _passed(engine, i)
    assert engine.n_pairs == PAIRS
    acc = float(engine.accuracy(i))
    assert acc == passed.sum() / PAIRS
    assert 0.55 < acc < 0.95  # a planted signal, not a degenerate all-pass/all-fail case
    # The literal definition on random pairs (and the first and last), in pair order.
    a, b = pair_indices(K)
    rng = np.random.default_rng(0)
    pick = np.concatenate([[0, PAIRS - 1], rng.choice(PAIRS, 150, replace=False)])
    ref = [literal.pair_passes(w, i, int(a[p]), int(b[p])) for p in pick]
    assert passed[pick].tolist() == ref


def test_batches_and_permutations_at_k_1854(spaces) -> None:
    w, i, engine = spaces
    perms = permutations(7, 0, 2, K)
    shuffled = np.stack([i[p][:, p] for p in perms])
    expected = np.array([_passed(engine, m).sum() for m in shuffled]) / PAIRS
    assert np.array_equal(engine.accuracy(shuffled), expected)  # a batch of matrices
    assert np.array_equal(engine.permuted_accuracy(i, perms), expected)
    null = permutation_null(w, [i], seed=7, start=0, stop=2, batch_size=2)["two_vs_two"]
    assert np.array_equal(null[:, 0], expected)


def test_one_vs_two_at_k_1854_equals_literal_on_a_subset(spaces) -> None:
    w, i, _ = spaces
    rng = np.random.default_rng(3)
    predicted = np.arange(K)
    wrong = rng.random(K) < 0.1  # 10 % misclassified into another concept of the set
    predicted[wrong] = (np.flatnonzero(wrong) + rng.integers(1, K, wrong.sum())) % K
    res = emergence.one_vs_two(w, i, predicted, n_permutations=8, seed=0, batch_size=8)
    assert res.image.size == wrong.sum() and res.n_tests == res.image.size
    # Literal on a subset: the same tests over a sub-matrix would change the reference
    # sets, so the literal test runs on the full matrices for a few images.
    for t in rng.choice(res.image.size, 12, replace=False):
        m, p = int(res.image[t]), int(res.predicted[t])
        ref = [c for c in range(K) if predicted[c] == c and c not in (m, p)]
        r_true = literal.pearson(i[m, ref], w[m, ref])
        r_pred = literal.pearson(i[m, ref], w[p, ref])
        assert bool(res.passed[t]) == (r_true - r_pred > literal.TIE)
        assert res.n_reference[t] == len(ref)
        np.testing.assert_allclose([res.r_true[t], res.r_predicted[t]], [r_true, r_pred],
                                   rtol=0, atol=1e-12)
    assert res.null.shape == (8,) and np.isfinite(res.null).all()


def test_batches_are_staged_in_chunks_with_the_same_counts() -> None:
    """A batch larger than the engine's staging chunk (many layers at once) counts as
    matrix by matrix; so does the 1 vs 2 null taken in chunks of tests."""
    rng = np.random.default_rng(4)
    k = 30
    w = emergence.similarity_matrix(rng.standard_normal((k, 12)))
    mats = np.stack([emergence.similarity_matrix(rng.standard_normal((k, 9)))
                     for _ in range(2 * _two_vs_two_cpu.BATCH_CHUNK + 3)])
    engine = TwoVsTwo(w)
    one_by_one = np.array([float(engine.accuracy(m)) for m in mats])
    assert np.array_equal(engine.accuracy(mats), one_by_one)
    assert np.array_equal(one_by_one, [literal.two_vs_two(w, m) for m in mats])


def test_one_vs_two_null_in_chunks_of_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    from emergence.stats import one_vs_two as ovt

    rng = np.random.default_rng(5)
    k = 60
    x = rng.standard_normal((k, 20))
    w = emergence.similarity_matrix(x)
    i = emergence.similarity_matrix(x[:, :8] * 0.3 + rng.standard_normal((k, 8)))
    predicted = np.arange(k)
    predicted[:20] = np.arange(1, 21)
    whole = ovt.one_vs_two(w, i, predicted, n_permutations=40, seed=2, batch_size=16)
    monkeypatch.setattr(ovt, "NULL_CHUNK_BYTES", 3 * 8 * k * 16)  # 3 tests per chunk
    chunked = ovt.one_vs_two(w, i, predicted, n_permutations=40, seed=2, batch_size=16)
    assert np.array_equal(whole.null, chunked.null) and whole.image.size == 20
    assert whole.permutation_p == chunked.permutation_p
