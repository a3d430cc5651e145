"""The bootstrap over concepts (stats/bootstrap.py) against the literal rule in tests/literal.py:
materialise idx = repeat(arange(k), m) and follow "a copy is the concept itself" pair by pair."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

import emergence
from emergence.stats.bootstrap import (
    BOOTSTRAP_STREAM,
    bootstrap_counts,
    bootstrap_distribution,
    bootstrap_samples,
    bootstrap_statistics,
)
from emergence.stats.cka import cka_from_gram, linear_gram
from emergence.stats.knn import mutual_knn_from_similarity
from emergence.stats.permutation import shard_range
from emergence.stats.rsa import kendall_tau_a, rsa_from_similarity
from tests import literal

ALL = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")


def planted(k: int, seed: int, *, duplicates: bool = False, ties: bool = False,
            signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two embeddings of k concepts sharing a latent structure; ``duplicates``: concept 1 is
    an exact copy of concept 0 in both spaces and concept 3 of concept 2 in the images;
    ``ties``: entries rounded to one decimal, so similarities repeat exactly."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 4))
    x = latent @ rng.standard_normal((4, 12)) * signal + rng.standard_normal((k, 12))
    y = latent @ rng.standard_normal((4, 9)) * signal + rng.standard_normal((k, 9))
    if ties:
        x, y = np.round(x), np.round(y)
    if duplicates:
        x[1], y[1], y[3] = x[0], y[0], y[2]
    return x, y


def inputs(k: int, seed: int, **kw: bool) -> tuple[np.ndarray, ...]:
    x, y = planted(k, seed, **kw)
    return (emergence.similarity_matrix(x), emergence.similarity_matrix(y), linear_gram(x),
            linear_gram(y))


# (k, samples, variant): k from 5 (4 where the measure allows it) to 200; fewer samples at
# large k, where the literal is slow
CASES = [(5, 24, {}), (5, 12, {"ties": True}), (6, 12, {"duplicates": True}), (7, 8, {}),
         (8, 8, {"ties": True}), (10, 6, {"duplicates": True}), (13, 4, {}),
         (20, 3, {"duplicates": True, "ties": True}), (40, 2, {}),
         (80, 1, {"duplicates": True}), (120, 1, {}), (200, 1, {})]


@pytest.mark.parametrize(("k", "n", "variant"), CASES)
def test_two_vs_two_equals_literal(k: int, n: int, variant: dict) -> None:
    w, i, _, _ = inputs(k, k, **variant)
    counts = bootstrap_samples(k, 0, n, k)
    got = bootstrap_statistics(w, [i, w], counts, measures=("two_vs_two",))["two_vs_two"]
    for c, row in zip(counts, got, strict=True):
        assert row[0] == literal.boot_two_vs_two(w, i, c)  # the same passes, pair by pair
        if k <= 40:  # identical spaces
            assert row[1] == literal.boot_two_vs_two(w, w, c)


@pytest.mark.parametrize(("k", "n", "variant"), CASES[:9:2])
def test_two_vs_two_torch_path_equals_literal(k: int, n: int, variant: dict) -> None:
    """The CUDA path's float64 torch computation, run here on the CPU: the same passes."""
    from emergence.stats._bootstrap_torch import two_vs_two_torch

    w, i, _, _ = inputs(k, k, **variant)
    counts = bootstrap_samples(k, 0, n, k)
    mats = np.stack([i, np.full_like(i, np.nan), w])
    got = two_vs_two_torch(w, mats, np.array([True, False, True]), counts, 1e-12,
                           torch.device("cpu"))
    for c, row in zip(counts, got, strict=True):
        np.testing.assert_array_equal(row, [literal.boot_two_vs_two(w, i, c), np.nan,
                                            literal.boot_two_vs_two(w, w, c)])


def test_two_vs_two_edge_samples_equal_literal() -> None:
    """One concept drawn k times (nothing tested: NaN), two or three concepts (every row
    constant or empty: all fail), four concepts (correlations exactly +-1, decided exactly)."""
    w, i, _, _ = inputs(6, 3, ties=True)
    for m in ([6, 0, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0], [0, 2, 0, 4, 0, 0], [1, 0, 2, 3, 0, 0],
              [2, 0, 1, 0, 1, 2], [1, 1, 1, 0, 3, 0], [0, 1, 1, 1, 1, 2], [1, 1, 1, 1, 1, 1]):
        from emergence.stats._bootstrap_torch import two_vs_two_torch

        got = bootstrap_statistics(w, [i], np.array([m]), measures=("two_vs_two",))
        ref = literal.boot_two_vs_two(w, i, np.array(m))
        np.testing.assert_array_equal(got["two_vs_two"][0, 0], ref)
        np.testing.assert_array_equal(two_vs_two_torch(w, i[None], np.array([True]),
                                                       np.array([m]), 1e-12,
                                                       torch.device("cpu"))[0, 0], ref)


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
@pytest.mark.parametrize(("k", "n", "variant"), [(4, 10, {}), *CASES[::2]])
def test_rsa_equals_literal(method: str, k: int, n: int, variant: dict) -> None:
    w, i, _, _ = inputs(k, k + 1, **variant)
    counts = bootstrap_samples(k, 1, 1 + n, k)
    got = bootstrap_statistics(w, [i], counts, measures=("rsa",), rsa_method=method)["rsa"]
    for c, value in zip(counts, got[:, 0], strict=True):
        if method == "kendall" and k > 40:  # the pair-by-pair literal is O(k^4): scipy's
            xs, ys = literal.boot_entries(w, i, c)  # tau on the same materialised entries
            assert value == pytest.approx(kendall_tau_a(np.array(xs), np.array(ys)), abs=1e-12)
            continue
        ref = literal.boot_rsa(w, i, c, method)
        if method == "kendall":  # an exact integer count over the same denominator
            np.testing.assert_array_equal(value, ref)
        else:
            np.testing.assert_allclose(value, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("k", "n", "variant"), [(4, 10, {}), *CASES[1::2]])
def test_cka_equals_literal(debiased: bool, k: int, n: int, variant: dict) -> None:
    _, _, kw, ki = inputs(k, k + 2, **variant)
    counts = bootstrap_samples(k, 2, 2 + n, k)
    measure = "cka_debiased" if debiased else "cka"
    got = bootstrap_statistics(np.eye(k), [np.eye(k)], counts, measures=(measure,),
                               word_gram=kw, image_grams=[ki])[measure]
    ref = [literal.boot_cka(kw, ki, c, debiased) for c in counts]
    np.testing.assert_allclose(got[:, 0], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("knn_k", [1, 3, 10])
@pytest.mark.parametrize(("k", "n", "variant"), [(4, 10, {}), *CASES])
def test_mutual_knn_equals_literal(knn_k: int, k: int, n: int, variant: dict) -> None:
    """Including samples with too few candidates for some position (NaN)."""
    if knn_k > k - 1:
        pytest.skip("knn_k must be below k")
    w, i, _, _ = inputs(k, k + 3, **variant)
    counts = bootstrap_samples(k, 3, 3 + n, k)
    got = bootstrap_statistics(w, [i], counts, measures=("mutual_knn",),
                               knn_k=knn_k)["mutual_knn"]
    ref = [literal.boot_mutual_knn(w, i, c, knn_k) for c in counts]
    np.testing.assert_array_equal(got[:, 0], ref)


def test_all_ones_sample_is_the_observed_value() -> None:
    """Every concept drawn once: the bootstrap value is the observed value of each measure."""
    k = 40
    w, i, kw, ki = inputs(k, 5)
    got = bootstrap_statistics(w, [i], np.ones((1, k), dtype=np.int64), measures=ALL,
                               word_gram=kw, image_grams=[ki], knn_k=5)
    assert got["two_vs_two"][0, 0] == emergence.TwoVsTwo(w).accuracy(i)
    assert got["rsa"][0, 0] == pytest.approx(rsa_from_similarity(w, i), abs=1e-13)
    assert got["cka"][0, 0] == pytest.approx(cka_from_gram(kw, ki), abs=1e-13)
    assert got["cka_debiased"][0, 0] == pytest.approx(cka_from_gram(kw, ki, True), abs=1e-13)
    assert got["mutual_knn"][0, 0] == pytest.approx(mutual_knn_from_similarity(w, i, 5),
                                                    abs=1e-15)


def test_counts_reproducible_from_seed_index_and_k() -> None:
    for seed, idx, k in [(0, 0, 5), (7, 123, 166), (2**40, 5, 30)]:
        expected = np.bincount(np.random.default_rng([seed, BOOTSTRAP_STREAM, idx]).integers(
            0, k, size=k), minlength=k)
        np.testing.assert_array_equal(bootstrap_counts(seed, idx, k), expected)
        assert bootstrap_counts(seed, idx, k).sum() == k
    np.testing.assert_array_equal(bootstrap_samples(3, 4, 9, 12)[2], bootstrap_counts(3, 6, 12))
    assert not np.array_equal(bootstrap_counts(0, 1, 50), bootstrap_counts(0, 2, 50))
    # apart from the permutations of the same seed and index
    assert not np.array_equal(bootstrap_counts(0, 1, 50),
                              np.bincount(np.random.default_rng([0, 1]).integers(0, 50, 50),
                                          minlength=50))


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_shards_batches_and_threads_give_the_same_bits(method: str) -> None:
    """Samples bit-identical for 1, 3 and 8 shards, any batch size and thread count; a layer
    that cannot be scored (NaN in I) is NaN in every measure, the others unaffected."""
    k, n = 30, 24
    w, i, kw, ki = inputs(k, 9, duplicates=True)
    bad = i.copy()
    bad[2, 5] = bad[5, 2] = np.nan
    args = dict(measures=ALL, rsa_method=method, word_gram=kw, image_grams=[ki, ki, ki],
                knn_k=4)
    whole = bootstrap_distribution(w, [i, bad, w], seed=11, start=0, stop=n, batch_size=4,
                                   **args)
    np.testing.assert_array_equal(whole["index"], np.arange(n))
    for shards in (1, 3, 8):
        parts = [bootstrap_distribution(w, [i, bad, w], seed=11, batch_size=4, **args,
                                        **dict(zip(("start", "stop"),
                                                   shard_range(n, shards, s, 4), strict=True)))
                 for s in range(shards)]
        for m in (*ALL, "index"):
            np.testing.assert_array_equal(np.concatenate([p[m] for p in parts]), whole[m])
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = bootstrap_distribution(w, [i, bad, w], seed=11, start=5, stop=n,
                                        batch_size=7, **args)
    finally:
        numba.set_num_threads(saved)
    for m in ALL:
        np.testing.assert_array_equal(single[m], whole[m][5:])
        assert np.isnan(whole[m][:, 1]).all()
        assert np.isfinite(whole[m][:, 0]).all()
    alone = bootstrap_distribution(w, [i], seed=11, start=0, stop=n, **dict(args,
                                   image_grams=[ki]))
    for m in ALL:
        np.testing.assert_array_equal(alone[m][:, 0], whole[m][:, 0])


def test_bad_inputs_are_one_line_errors() -> None:
    w, i, kw, ki = inputs(8, 0)
    with pytest.raises(ValueError, match="unknown measure"):
        bootstrap_statistics(w, [i], np.ones((1, 8), np.int64), measures=("nope",))
    with pytest.raises(ValueError, match="word_gram"):
        bootstrap_statistics(w, [i], np.ones((1, 8), np.int64), measures=("cka",))
    with pytest.raises(ValueError, match="summing to 8"):
        bootstrap_statistics(w, [i], np.ones((1, 8), np.int64) * 2)
    with pytest.raises(ValueError, match="at least 5"):
        bootstrap_distribution(w[:4, :4], [i[:4, :4]], seed=0, start=0, stop=1)
    with pytest.raises(ValueError, match="knn_k"):
        bootstrap_statistics(w, [i], np.ones((1, 8), np.int64), measures=("mutual_knn",),
                             knn_k=8)
