"""The fused Pearson-statistics kernel (emergence.stats._gram) against a literal exact sum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emergence.stats import _gram
from emergence.stats.similarity import SHIFT_COLUMNS, PearsonAccumulator

U64 = 2.0**-53


def literal_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift, sums and Gram matrix from their definitions, one pair of rows at a time.

    The shifted values are the same float64 numbers the kernel forms (one rounded
    subtraction); their products and sums are then exact: each product is split into
    its rounded value and its rounding error (Dekker's two-product with Veltkamp's
    split, no FMA needed) and math.fsum adds all of them exactly.
    """
    v = x.astype(np.float64)
    shift = v[:, :SHIFT_COLUMNS].mean(axis=1)
    c = v - shift[:, None]
    n = x.shape[0]
    sums = np.array([math.fsum(row) for row in c])
    gram = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            gram[i, j] = math.fsum(two_product(c[i], c[j]))
    return shift, sums, gram


def two_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Products and their exact rounding errors: a * b == p + e exactly, elementwise."""

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = x * 134217729.0  # 2^27 + 1
        hi = t - (t - x)
        return hi, x - hi

    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return np.concatenate([p, e])


def bound(x: np.ndarray) -> np.ndarray:
    """Higham's bound for a float64 dot product of length f in any order: gamma_f sum|a||b|."""
    v = np.abs(x.astype(np.float64) - x[:, :SHIFT_COLUMNS].astype(np.float64).mean(1)[:, None])
    f = x.shape[1]
    return (f * U64 / (1 - f * U64)) * (v @ v.T) * 1.01 + 1e-300


@pytest.mark.parametrize(("n", "f", "dtype"), [
    (1, 5, np.float32), (3, 1, np.float64), (4, 1024, np.float32), (5, 1500, np.float32),
    (13, 3000, np.float64), (9, 2049, np.float32),
])
def test_moments_match_literal_within_the_float64_bound(n: int, f: int, dtype: type) -> None:
    rng = np.random.default_rng(n * 1000 + f)
    x = rng.standard_normal((n, f)) * rng.uniform(0.1, 10, (n, 1)) + rng.uniform(-50, 50, (n, 1))
    x = np.maximum(x, 0).astype(dtype)  # post-ReLU-like: many exact zeros, large means
    shift, sums, gram = literal_moments(x)
    acc = PearsonAccumulator(n)
    acc.update(x)
    np.testing.assert_array_equal(acc.shift, shift)
    assert acc.n_features == f
    err = np.abs(acc.gram - gram)
    assert (err <= bound(x)).all(), float((err / bound(x)).max())
    sum_bound = float(f * U64 * np.abs(x).sum()) + 1e-300
    np.testing.assert_allclose(acc.sums, sums, rtol=0, atol=sum_bound)
    g = acc.gram
    np.testing.assert_array_equal(g, g.T)


def test_any_chunking_in_multiples_of_kc_is_bit_identical() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 9 * _gram.KC + 77)).astype(np.float32) + 3
    results = []
    for widths in ([x.shape[1]], [_gram.KC] * 10, [3 * _gram.KC, 2 * _gram.KC, 10**9],
                   [_gram.KC, 5 * _gram.KC, 3 * _gram.KC + 77]):
        acc = PearsonAccumulator(23)
        start = 0
        for w in widths:
            acc.update(x[:, start : start + w])
            start += w
            if start >= x.shape[1]:
                break
        results.append((acc.gram, acc.sums, acc.correlation()))
    for gram, sums, corr in results[1:]:
        np.testing.assert_array_equal(gram, results[0][0])
        np.testing.assert_array_equal(sums, results[0][1])
        np.testing.assert_array_equal(corr, results[0][2])
    # Chunks that are not multiples of KC change only the rounding.
    odd = PearsonAccumulator(23)
    for lo in range(0, x.shape[1], 1000):
        odd.update(x[:, lo : lo + 1000])
    np.testing.assert_allclose(odd.correlation(), results[0][2], rtol=0, atol=1e-13)


def test_strided_views_and_float64_copies_give_the_same_statistics() -> None:
    """The kernel reads rows through a flat view with the row stride; every memory layout
    (column slices, Fortran order, negative and zero strides, column steps, one row)
    gives the bits of a contiguous copy."""
    rng = np.random.default_rng(2)
    big = rng.standard_normal((7, 6000)).astype(np.float32)
    x = big[:, 1000:5000]
    layouts = {
        "column slice": x,
        "contiguous": np.ascontiguousarray(x),
        "fortran": np.asfortranarray(x),
        "rows reversed": np.ascontiguousarray(x[::-1])[::-1],
        "columns reversed": np.ascontiguousarray(x[:, ::-1])[:, ::-1],
        "column step": np.repeat(x, 2, axis=1)[:, ::2],
        "float64": x.astype(np.float64),
    }
    expected = PearsonAccumulator(7)
    expected.update(np.ascontiguousarray(x))
    for name, arr in layouts.items():
        np.testing.assert_array_equal(arr, x)
        acc = PearsonAccumulator(7)
        acc.update(arr)
        np.testing.assert_array_equal(acc.gram, expected.gram, err_msg=name)
        np.testing.assert_array_equal(acc.sums, expected.sums, err_msg=name)
    rows = np.broadcast_to(x[3], (5, x.shape[1]))  # row stride 0
    acc = PearsonAccumulator(5)
    acc.update(rows)
    np.testing.assert_allclose(acc.correlation(), 1.0, rtol=0, atol=1e-12)
    single = []
    for arr in (x[2:3], np.ascontiguousarray(x[2:3, ::-1])[:, ::-1]):
        acc = PearsonAccumulator(1)
        acc.update(arr)
        single.append((acc.gram, acc.sums))
    np.testing.assert_array_equal(single[0][0], single[1][0])
    np.testing.assert_array_equal(single[0][1], single[1][1])


def test_thread_count_does_not_change_the_bits() -> None:
    """Each Gram entry and row sum is accumulated by one thread in column order."""
    import numba

    x = np.random.default_rng(3).standard_normal((41, 3 * _gram.KC + 5)).astype(np.float32)
    results = []
    available = numba.get_num_threads()
    try:
        for threads in sorted({1, 2, available} & set(range(1, available + 1))):
            numba.set_num_threads(threads)
            acc = PearsonAccumulator(41)
            acc.update(x)
            results.append((threads, acc.gram, acc.sums))
    finally:
        numba.set_num_threads(available)
    for threads, gram, sums in results[1:]:
        np.testing.assert_array_equal(gram, results[0][1], err_msg=f"{threads} threads")
        np.testing.assert_array_equal(sums, results[0][2], err_msg=f"{threads} threads")


def test_nan_and_integer_inputs() -> None:
    x = np.arange(40, dtype=np.float32).reshape(4, 10) ** 1.5
    x[2, 3] = np.nan
    acc = PearsonAccumulator(4)
    acc.update(x)
    corr = acc.correlation()
    assert np.isnan(corr[2]).all() and np.isnan(corr[:, 2]).all()  # NaN is not dropped
    assert np.isfinite(np.delete(np.delete(corr, 2, 0), 2, 1)).all()
    ints = PearsonAccumulator(3)
    ints.update(np.array([[1, 2, 3], [3, 1, 2], [2, 2, 5]], dtype=np.int16))
    np.testing.assert_allclose(ints.correlation(), np.corrcoef([[1, 2, 3], [3, 1, 2], [2, 2, 5]]),
                               atol=1e-15)


def test_statistics_from_moments_are_final() -> None:
    acc = PearsonAccumulator.from_moments(np.zeros(2), np.eye(2), np.zeros(2), 5)
    with pytest.raises(ValueError, match="from_moments"):
        acc.update(np.ones((2, 3)))
