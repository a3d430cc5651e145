"""CKA (biased and debiased), mutual kNN and RSA with Kendall's tau-a against their literal
implementations (tests/literal.py) on planted cases, k from 4 to 200 (issue #14)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import emergence
from emergence.stats.cka import CkaNull, cka_from_gram, linear_gram
from emergence.stats.knn import nearest_neighbours
from emergence.stats.rsa import rsa_from_similarity, rsa_matrix, upper_triangle
from tests import literal
from tests.test_statistics import planted

ALIGNMENT_CASES = [  # (k, p, q, signal, seed): chance to strong, k from 4 to 200
    (4, 6, 3, 1.0, 0), (5, 7, 9, 0.0, 1), (9, 12, 5, 2.0, 2), (17, 30, 8, 0.3, 3),
    (40, 25, 60, 1.0, 4), (83, 16, 16, 0.1, 5), (200, 20, 12, 1.5, 6),
]


@pytest.mark.parametrize(("k", "p", "q", "signal", "seed"), ALIGNMENT_CASES)
def test_cka_equals_literal(k: int, p: int, q: int, signal: float, seed: int) -> None:
    x, y = planted(k, p, q, signal, seed)
    assert emergence.cka(x, y) == pytest.approx(literal.cka(x, y), rel=1e-12, abs=1e-14)
    assert emergence.cka(x, y, debiased=True) == pytest.approx(
        literal.cka_debiased(x, y), rel=1e-10, abs=1e-12)
    assert emergence.cka(x, x) == pytest.approx(1.0, abs=1e-14)
    assert emergence.cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariances_and_the_gram_form() -> None:
    """Invariant to isotropic scaling and orthogonal transforms of either side; from Gram
    matrices equal to from features; debiased needs 4 concepts."""
    x, y = planted(30, 10, 7, 1.0, 11)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 10)))
    base = emergence.cka(x, y)
    assert emergence.cka(3.5 * x @ q, y) == pytest.approx(base, rel=1e-12)
    assert cka_from_gram(linear_gram(x), linear_gram(y)) == base
    assert cka_from_gram(linear_gram(x), linear_gram(y), debiased=True) \
        == emergence.cka(x, y, debiased=True)
    with pytest.raises(ValueError, match="debiased CKA needs at least 4 concepts"):
        emergence.cka(x[:3], y[:3], debiased=True)
    assert np.isnan(emergence.cka(np.ones((6, 3)), y[:6]))  # no variance: undefined


@pytest.mark.parametrize("k", [5, 12, 166])
def test_cka_of_a_constant_representation_is_nan_on_every_path(k: int) -> None:
    """Every concept with the same row: its column means are not exact (0.1 * random), so
    the centred Gram matrix is rounding noise (~1e-30), and the ratio of noise was returned
    (~1e-17). NaN from the features, the Gram matrices and the permutation null, either side."""
    rng = np.random.default_rng(k)
    flat = np.tile(0.1 * rng.standard_normal(40) + 3.7, (k, 1))
    y = rng.standard_normal((k, 9))
    perms = np.stack([rng.permutation(k) for _ in range(4)])
    for debiased in (False, True):
        assert np.isnan(emergence.cka(flat, y, debiased=debiased))
        assert np.isnan(emergence.cka(y, flat, debiased=debiased))
        assert np.isnan(cka_from_gram(linear_gram(flat), linear_gram(y), debiased))
        assert np.isnan(cka_from_gram(linear_gram(y), linear_gram(flat), debiased))
    for word, image in ((y, flat), (flat, y)):
        null = CkaNull(linear_gram(word), biased=True, debiased=True).layer(linear_gram(image))
        values = null(perms)
        assert np.isnan(values["cka"]).all() and np.isnan(values["cka_debiased"]).all()
    # the null of a representation with variance is unchanged: the observed CKA at p = id
    values = CkaNull(linear_gram(y), debiased=True).layer(linear_gram(y))(np.arange(k)[None])
    assert values["cka"][0] == pytest.approx(1.0, abs=1e-12)
    assert values["cka_debiased"][0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("k", "p", "q", "signal", "seed"), ALIGNMENT_CASES)
def test_mutual_knn_equals_literal(k: int, p: int, q: int, signal: float, seed: int) -> None:
    x, y = planted(k, p, q, signal, seed)
    for n_neighbours in sorted({1, min(3, k - 1), min(10, k - 1), k - 1}):
        assert emergence.mutual_knn(x, y, n_neighbours) == pytest.approx(
            literal.mutual_knn(x, y, n_neighbours), abs=1e-15)
    assert emergence.mutual_knn(x, y, k - 1) == 1.0  # every other concept is a neighbour


def test_mutual_knn_ties_go_to_the_lower_index() -> None:
    """Duplicated concepts tie exactly: the lower index is the nearer neighbour."""
    x, y = planted(12, 6, 6, 1.0, 3)
    x[7] = x[2]  # concepts 2 and 7 identical: equal similarity to every other concept
    x[9] = x[2]
    near = nearest_neighbours(emergence.similarity_matrix(x), 3)
    assert list(near[2][:2]) == [7, 9] and list(near[7][:2]) == [2, 9]
    assert emergence.mutual_knn(x, y, 3) == pytest.approx(literal.mutual_knn(x, y, 3))
    with pytest.raises(ValueError, match=r"choose 1 <= k <= 11"):
        emergence.mutual_knn(x, y, 12)


@pytest.mark.parametrize(("k", "p", "q", "signal", "seed"), ALIGNMENT_CASES[:5])
def test_rsa_kendall_tau_a_equals_literal(k: int, p: int, q: int, signal: float,
                                          seed: int) -> None:
    x, y = planted(k, p, q, signal, seed)
    w_mat, i_mat = literal.corr_matrix(x), literal.corr_matrix(y)
    assert emergence.rsa(x, y, method="kendall") == pytest.approx(
        literal.rsa_kendall(w_mat, i_mat), abs=1e-12)


def test_kendall_tau_a_counts_ties_as_zero() -> None:
    """With ties tau-a differs from scipy's default tau-b: the pairs tied count zero."""
    x, _ = planted(10, 5, 5, 1.0, 1)
    w = emergence.similarity_matrix(x)
    i = np.round(w, 1)  # many ties in the image space
    tau_a = rsa_from_similarity(w, i, "kendall")
    assert tau_a == pytest.approx(literal.rsa_kendall(w, i), abs=1e-12)
    assert abs(tau_a) < abs(stats.kendalltau(upper_triangle(w), upper_triangle(i)).statistic)
    with pytest.raises(ValueError, match="unknown RSA method 'kendall'"):
        rsa_matrix(w, "kendall")  # tau-a is no Pearson of transformed entries: no rsa_matrix
