"""Permutation nulls of RSA (Kendall's tau-a), CKA (biased, debiased) and mutual kNN (issue #14).

Each null entry must be the measure of the fixed word side against the explicitly permuted
image side (tests/literal.py, section "permutation nulls of the new measures"), from the same
seeded permutations as the 2 vs 2 null, for k from 5 to 200, with ties, undefined layers and
any sharding.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from scipy import stats

import emergence
from emergence.stats.cka import cka_from_gram, linear_gram
from emergence.stats.knn import mutual_knn_from_similarity, nearest_neighbours
from emergence.stats.permutation import MEASURES, permutation, permutation_null, shard_range
from emergence.stats.rsa import rsa_from_similarity
from tests import literal
from tests.test_statistics import planted

NEW = ("cka", "cka_debiased", "mutual_knn")


def spaces(k: int, signal: float, seed: int, p: int = 24, q: int = 30
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """W, I (Pearson similarities, bitwise symmetric) and Kw, Ki (centred linear Grams)."""
    x, y = planted(k, p, q, signal, seed)
    if k <= 40:
        w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    else:
        w_mat, i_mat = (emergence.similarity_matrix(v) for v in (x, y))
        w_mat, i_mat = (w_mat + w_mat.T) / 2, (i_mat + i_mat.T) / 2
    return w_mat, i_mat, linear_gram(x), linear_gram(y)


def check_entry(null: dict, row: int, col: int, perm: np.ndarray, w_mat: np.ndarray,
                i_mat: np.ndarray, kw: np.ndarray, ki: np.ndarray, knn_k: int) -> None:
    """One null entry of each new measure against the permuted matrices."""
    pk = ki[perm][:, perm]
    pi = i_mat[perm][:, perm]
    assert np.array_equal(pi, literal.permuted(i_mat, perm))
    assert null["cka"][row, col] == pytest.approx(cka_from_gram(kw, pk), rel=1e-12, abs=1e-13)
    assert null["cka"][row, col] == pytest.approx(literal.null_entry("cka", kw, ki, perm),
                                                  rel=1e-10, abs=1e-12)
    assert null["cka_debiased"][row, col] == pytest.approx(cka_from_gram(kw, pk, True),
                                                           rel=1e-12, abs=1e-13)
    assert null["cka_debiased"][row, col] == pytest.approx(
        literal.null_entry("cka_debiased", kw, ki, perm), rel=1e-10, abs=1e-12)
    assert null["mutual_knn"][row, col] == mutual_knn_from_similarity(w_mat, pi, knn_k)
    assert null["mutual_knn"][row, col] == pytest.approx(
        literal.null_entry("mutual_knn", w_mat, i_mat, perm, knn_k), abs=1e-15)


NULL_CASES = [  # (k, signal, seed, n_permutations, knn_k): few permutations at large k
    (5, 1.0, 0, 12, 2), (6, 0.0, 1, 12, 3), (9, 2.0, 2, 10, 4), (17, 0.5, 3, 8, 5),
    (40, 1.0, 4, 6, 10), (90, 0.3, 5, 3, 10), (166, 0.5, 6, 2, 10), (200, 1.5, 7, 2, 20),
]


@pytest.mark.parametrize(("k", "signal", "seed", "n_perm", "knn_k"), NULL_CASES)
def test_new_nulls_are_the_measures_of_the_permuted_matrices(
        k: int, signal: float, seed: int, n_perm: int, knn_k: int) -> None:
    w_mat, i_mat, kw, ki = spaces(k, signal, seed)
    i2, k2 = spaces(k, 0.0, seed + 100)[1::2]
    null = permutation_null(w_mat, [i_mat, i2], seed=11, start=3, stop=3 + n_perm,
                            batch_size=4, measures=NEW, word_gram=kw, image_grams=[ki, k2],
                            knn_k=knn_k)
    assert sorted(null) == sorted((*NEW, "index"))
    assert list(null["index"]) == list(range(3, 3 + n_perm))
    for row, idx in enumerate(null["index"]):
        perm = permutation(11, idx, k)
        assert np.array_equal(perm, np.random.default_rng([11, idx]).permutation(k))
        for col, (im, gm) in enumerate([(i_mat, ki), (i2, k2)]):
            check_entry(null, row, col, perm, w_mat, im, kw, gm, knn_k)


@pytest.mark.parametrize(("k", "n_perm"), [(5, 12), (8, 10), (14, 6), (25, 3), (90, 3),
                                           (166, 2), (200, 2)])
def test_kendall_null_is_tau_a_of_the_permuted_matrices(k: int, n_perm: int) -> None:
    w_mat, i_mat, _, _ = spaces(k, 1.0, k)
    null = permutation_null(w_mat, [i_mat], seed=5, start=0, stop=n_perm,
                            rsa_method="kendall", measures=("rsa",))
    assert sorted(null) == ["index", "rsa"]
    iu = np.triu_indices(k, k=1)
    for idx in range(n_perm):
        perm = permutation(5, idx, k)
        pi = literal.permuted(i_mat, perm)
        value = null["rsa"][idx, 0]
        assert value == rsa_from_similarity(w_mat, pi, "kendall")  # the observed statistic
        if k <= 25:  # the literal count is O(m^2), m = C(k, 2)
            assert value == literal.null_entry("rsa_kendall", w_mat, i_mat, perm)
        # no ties: tau-a is scipy's tau-b
        assert value == pytest.approx(stats.kendalltau(w_mat[iu], pi[iu]).statistic,
                                      abs=1e-12)


@pytest.mark.parametrize("k", [6, 12, 20])
def test_kendall_null_with_ties_on_both_sides(k: int) -> None:
    """Rounded similarities: ties in x, in y and in both count zero (tau-a), exactly."""
    w_mat, i_mat, _, _ = spaces(k, 1.0, 40 + k)
    w_mat, i_mat = np.round(w_mat, 1), np.round(i_mat, 1)
    images = [i_mat, np.round(i_mat, 0)]
    null = permutation_null(w_mat, images, seed=2, start=0, stop=8, rsa_method="kendall",
                            measures=("two_vs_two", "rsa"))
    for idx in range(8):
        perm = permutation(2, idx, k)
        for col, im in enumerate(images):
            assert null["rsa"][idx, col] == literal.null_entry("rsa_kendall", w_mat, im, perm)
    # the 2 vs 2 null beside it is the one of the default measures
    default = permutation_null(w_mat, images, seed=2, start=0, stop=8)
    assert null["two_vs_two"].tobytes() == default["two_vs_two"].tobytes()


def straddling_rows(s: np.ndarray, knn_k: int) -> int:
    """Rows whose k-th neighbour's similarity is shared by a concept outside the k."""
    s = s.copy()
    np.fill_diagonal(s, -np.inf)
    kth = s[np.arange(len(s)), nearest_neighbours(s, knn_k)[:, -1]][:, None]
    return int(np.sum(np.sum(s >= kth, axis=1) > knn_k))


@pytest.mark.parametrize("k", [8, 15, 40])
def test_mutual_knn_null_with_planted_ties(k: int) -> None:
    """Duplicated concepts (exact ties, in both spaces) and rounded similarities: ties at the
    k-th neighbour go to the lower permuted index, as for the observed value."""
    x, y = planted(k, 12, 12, 1.0, k)
    y[3] = y[1]
    y[k - 1] = y[1]  # three identical image concepts
    y[5] = y[2]
    x[4] = x[0]
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    rounded = np.round(i_mat, 1)
    straddles = 0
    for knn_k in sorted({1, 2, 3, k // 2, k - 2}):
        straddles += straddling_rows(i_mat, knn_k) + straddling_rows(rounded, knn_k)
        null = permutation_null(w_mat, [i_mat, rounded], seed=9, start=0, stop=10,
                                batch_size=3, measures=("mutual_knn",), knn_k=knn_k)
        for idx in range(10):
            perm = permutation(9, idx, k)
            for col, im in enumerate([i_mat, rounded]):
                pi = literal.permuted(im, perm)
                assert null["mutual_knn"][idx, col] == mutual_knn_from_similarity(
                    w_mat, pi, knn_k)
                assert null["mutual_knn"][idx, col] * knn_k * k == pytest.approx(
                    sum(literal.shared_neighbours(w_mat, pi, knn_k)), abs=1e-9)
    assert straddles >= 5  # the tie path was exercised


def test_planted_signal_beats_every_null_entry() -> None:
    """A strong shared structure: each measure's observed value is above its whole null."""
    k = 40
    w_mat, i_mat, kw, ki = spaces(k, 3.0, 21)
    null = permutation_null(w_mat, [i_mat], seed=4, start=0, stop=60, measures=MEASURES,
                            word_gram=kw, image_grams=[ki], knn_k=5)
    kendall = permutation_null(w_mat, [i_mat], seed=4, start=0, stop=60, measures=("rsa",),
                               rsa_method="kendall")["rsa"]
    observed = {"two_vs_two": emergence.two_vs_two_from_similarity(w_mat, i_mat),
                "rsa": rsa_from_similarity(w_mat, i_mat),
                "cka": cka_from_gram(kw, ki), "cka_debiased": cka_from_gram(kw, ki, True),
                "mutual_knn": mutual_knn_from_similarity(w_mat, i_mat, 5)}
    for name, value in observed.items():
        assert value > null[name].max(), name
    assert rsa_from_similarity(w_mat, i_mat, "kendall") > kendall.max()
    assert abs(np.median(null["cka_debiased"])) < 0.05  # debiased: centred near 0 by chance


def test_layers_that_cannot_be_scored_are_nan_in_every_measure() -> None:
    k = 12
    w_mat, i_mat, kw, ki = spaces(k, 1.0, 8)
    i_nan = i_mat.copy()
    i_nan[2, :] = i_nan[:, 2] = np.nan  # a constant concept: undefined correlations
    k_inf = ki.copy()
    k_inf[0, 0] = np.inf
    kwargs = dict(seed=3, start=0, stop=9, batch_size=4, measures=MEASURES, word_gram=kw)
    null = permutation_null(w_mat, [i_mat, i_nan, i_mat], image_grams=[ki, ki, k_inf],
                            **kwargs)
    alone = permutation_null(w_mat, [i_mat], image_grams=[ki], **kwargs)
    for name in MEASURES:
        assert np.isnan(null[name][:, 1:]).all(), name
        assert np.array_equal(null[name][:, 0], alone[name][:, 0]), name


@pytest.mark.parametrize("rsa_method", ["pearson", "kendall"])
@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_shards_reassemble_bit_identically(n_shards: int, rsa_method: str) -> None:
    k = 30
    w_mat, i_mat, kw, ki = spaces(k, 0.7, 13)
    i2, k2 = spaces(k, 0.0, 14)[1::2]
    kwargs = dict(batch_size=8, rsa_method=rsa_method, measures=MEASURES, word_gram=kw,
                  image_grams=[ki, k2], knn_k=4)
    whole = permutation_null(w_mat, [i_mat, i2], seed=6, start=0, stop=60, **kwargs)
    parts = []
    for shard in range(n_shards):
        lo, hi = shard_range(60, n_shards, shard, 8)
        parts.append(permutation_null(w_mat, [i_mat, i2], seed=6, start=lo, stop=hi, **kwargs))
    for name in (*MEASURES, "index"):
        assert np.concatenate([p[name] for p in parts]).tobytes() == whole[name].tobytes()


def test_each_measure_alone_equals_it_among_all_and_threads_change_no_bit() -> None:
    """The permutations are shared: a measure's null does not depend on which others were
    asked for, nor on the numba thread count."""
    k = 20
    w_mat, i_mat, kw, ki = spaces(k, 0.5, 17)
    kwargs = dict(seed=1, start=2, stop=21, batch_size=5, word_gram=kw, image_grams=[ki],
                  knn_k=3, rsa_method="kendall")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        together = permutation_null(w_mat, [i_mat], measures=MEASURES, **kwargs)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        for name in MEASURES:
            alone = permutation_null(w_mat, [i_mat], measures=(name,), **kwargs)
            assert sorted(alone) == sorted([name, "index"])
            assert alone[name].tobytes() == together[name].tobytes(), name
    finally:
        numba.set_num_threads(threads)


def test_default_measures_and_input_errors() -> None:
    k = 10
    w_mat, i_mat, kw, ki = spaces(k, 1.0, 2)
    default = permutation_null(w_mat, [i_mat], seed=0, start=0, stop=4)
    assert list(default) == ["two_vs_two", "rsa", "index"]
    with pytest.raises(ValueError, match="unknown measures"):
        permutation_null(w_mat, [i_mat], seed=0, start=0, stop=4, measures=("cca",))
    with pytest.raises(ValueError, match="need word_gram and image_grams"):
        permutation_null(w_mat, [i_mat], seed=0, start=0, stop=4, measures=("cka",))
    with pytest.raises(ValueError, match="1 image Gram matrices for 2 layers"):
        permutation_null(w_mat, [i_mat, i_mat], seed=0, start=0, stop=4, measures=("cka",),
                         word_gram=kw, image_grams=[ki])
    with pytest.raises(ValueError, match="unknown RSA method 'tau'"):
        permutation_null(w_mat, [i_mat], seed=0, start=0, stop=4, rsa_method="tau")
    with pytest.raises(ValueError, match=r"choose 1 <= k <= 9"):
        permutation_null(w_mat, [i_mat], seed=0, start=0, stop=4, measures=("mutual_knn",),
                         knn_k=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nulls_equal_the_cpu_ones() -> None:
    """CKA's permuted dot product runs in float64 torch on CUDA: equal to rounding; the
    rank-based nulls (Kendall, mutual kNN) run the same CPU kernels: bit-identical."""
    k = 50
    w_mat, i_mat, kw, ki = spaces(k, 1.0, 31)
    kwargs = dict(seed=2, start=0, stop=20, measures=MEASURES, word_gram=kw,
                  image_grams=[ki], knn_k=5, rsa_method="kendall")
    cpu = permutation_null(w_mat, [i_mat], device="cpu", **kwargs)
    gpu = permutation_null(w_mat, [i_mat], device="cuda", **kwargs)
    for name in ("cka", "cka_debiased"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-12, atol=1e-13)
    for name in ("rsa", "mutual_knn", "two_vs_two"):
        assert gpu[name].tobytes() == cpu[name].tobytes(), name
