"""Representational similarity analysis (Kriegeskorte et al. 2008), the companion score.

RSA correlates the two similarity matrices directly: the correlation between the
off-diagonal upper triangles of ``W`` and ``I`` (Pearson by default, as in the
paper's description; Spearman or Kendall's tau-a on request). :func:`rsa_matrix` is
the one place the Pearson/Spearman method is applied: the observed value
(:func:`rsa_from_similarity`) and the permutation null
(:func:`emergence.stats.permutation.permutation_null`) both correlate its upper
triangles. Kendall's tau-a (:func:`kendall_tau_a`: concordant minus discordant pairs of
entries over all pairs, ties counting zero) is not a Pearson correlation of transformed
entries, so it has no :func:`rsa_matrix`: the observed value and the permutation null
(:class:`KendallNull`) both count pairs with the integer kernel of
:mod:`emergence.stats._rank_kernels` (Knight's O(m log m) merge count), so the null's
entries are the observed statistic of the permuted matrices, bit for bit.

Every reduction here is numpy's pairwise summation of elementwise products, never a
BLAS dot product: OpenBLAS splits long dot products across its threads, so
``scipy.stats.pearsonr`` (and ``np.linalg.norm``) give different last bits at different
thread counts. These sums give the same bits for any thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.similarity import similarity_matrix

__all__ = ["MATRIX_METHODS", "METHODS", "KendallNull", "centred_norm", "kendall_tau_a",
           "pearson_r", "rsa", "rsa_from_similarity", "rsa_matrix", "upper_triangle"]

Method = Literal["pearson", "spearman", "kendall"]
METHODS = ("pearson", "spearman", "kendall")  # the observed value and the permutation null
MATRIX_METHODS = ("pearson", "spearman")  # those that are a Pearson r of rsa_matrix


def _check_method(method: str, methods: tuple[str, ...] = METHODS) -> None:
    if method not in methods:
        raise ValueError(f"unknown RSA method {method!r}; use "
                         + " or ".join(repr(m) for m in methods))


def upper_triangle(m: ArrayLike) -> np.ndarray:
    """Entries above the diagonal of a square matrix, row-major."""
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {arr.shape}")
    return arr[np.triu_indices(arr.shape[0], k=1)]


def centred_norm(v: np.ndarray) -> tuple[np.ndarray, float]:
    """``(v - mean(v), ||v - mean(v)||)``, summed without BLAS (thread-count independent)."""
    centred = v - v.mean()
    return centred, math.sqrt(float(np.sum(centred * centred)))


def pearson_r(u: np.ndarray, v: np.ndarray) -> float:
    """Pearson's r of two 1-d float64 vectors, the same bits for any thread count."""
    cu, nu = centred_norm(u)
    cv, nv = centred_norm(v)
    return float(np.clip(np.sum(cu * cv) / (nu * nv), -1.0, 1.0))


def _tie_runs(values: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Runs of equal values (length > 1) of a sorted vector: ``(starts, stops, tied pairs)``."""
    n = values.shape[0]
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    bounds = np.concatenate(([0], change, [n])).astype(np.int64)
    lengths = np.diff(bounds)
    runs = lengths > 1
    return bounds[:-1][runs], bounds[1:][runs], int(np.sum(lengths * (lengths - 1) // 2))


def _dense_ranks(v: NDArray[np.float64]) -> tuple[NDArray[np.int32], int, int]:
    """Dense ranks of ``v`` (equal values share one; order kept): ``(ranks, distinct values,
    tied pairs)``."""
    _, ranks, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (ranks.reshape(-1).astype(np.int32), len(counts),
            int(np.sum(counts * (counts - 1) // 2)))


def kendall_tau_a(u: np.ndarray, v: np.ndarray) -> float:
    """Kendall's tau-a of two 1-d vectors: (concordant - discordant) / (n (n - 1) / 2),
    a pair tied in either vector counting zero; the numerator counted exactly in integers
    (O(n log n), :mod:`~emergence.stats._rank_kernels`). NaN when either vector is constant."""
    from emergence.stats._rank_kernels import discordant_and_joint_ties

    x = np.asarray(u, dtype=np.float64)
    y = np.asarray(v, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two vectors of one length, got {x.shape} and {y.shape}")
    n = x.shape[0]
    n0 = n * (n - 1) // 2
    if n0 == 0:
        return float("nan")
    order = np.argsort(x, kind="stable")
    starts, stops, n1 = _tie_runs(x[order])
    ranks, n_ranks, n2 = _dense_ranks(y)
    if n1 == n0 or n2 == n0:
        return float("nan")
    dis, n3 = discordant_and_joint_ties(np.ascontiguousarray(ranks[order]), n_ranks, starts,
                                        stops, np.empty(n_ranks + 1, dtype=np.int32))
    return (n0 - n1 - n2 + n3 - 2 * dis) / (n * (n - 1) / 2)


class KendallNull:
    """Kendall's tau-a RSA of a fixed word matrix ``W`` against ``I[p][:, p]`` for batches of
    permutations ``p``, each entry equal to ``rsa_from_similarity(W, I[p][:, p], "kendall")``.

    The word triangle's order and ties are computed once. The image triangle's ranks and
    ties are invariant under permutation (the same values move): only the joint ties and the
    discordant pairs are counted per permutation (O(m log m), m = C(k, 2), numba, integers).
    """

    RANK_CACHE_BYTES = 1 << 22
    """A layer's k x k int32 rank matrix is kept between batches up to this size (k <= 1,024);
    above it, it is recomputed per batch (one sort: ~1/B of the batch's work)."""

    def __init__(self, word_similarity: ArrayLike) -> None:
        w = np.asarray(word_similarity, dtype=np.float64)
        self.k = k = w.shape[0]
        iu = np.triu_indices(k, k=1)
        x = w[iu]
        order = np.argsort(x, kind="stable")
        self._ii = np.ascontiguousarray(iu[0][order], dtype=np.int64)
        self._jj = np.ascontiguousarray(iu[1][order], dtype=np.int64)
        self._starts, self._stops, self._n1 = _tie_runs(x[order])
        m = k * (k - 1) // 2  # entries of a triangle
        self._n0 = m * (m - 1) // 2  # pairs of entries
        self._pairs = m * (m - 1) / 2  # as kendall_tau_a divides

    def _ranks(self, image: NDArray[np.float64]) -> tuple[NDArray[np.int32], int, int]:
        k = self.k
        iu = np.triu_indices(k, k=1)
        flat, n_ranks, n2 = _dense_ranks(image[iu])
        ranks = np.zeros((k, k), dtype=np.int32)
        ranks[iu] = flat
        return ranks + ranks.T, n_ranks, n2

    def layer(self, image_similarity: ArrayLike) -> Callable[[NDArray[np.int64]],
                                                             NDArray[np.float64]]:
        """The null of one (finite, symmetric) image matrix: ``perms`` (B, k) -> (B,)."""
        from emergence.stats._rank_kernels import permuted_kendall_counts

        image = np.ascontiguousarray(image_similarity, dtype=np.float64)
        n0, n1 = self._n0, self._n1
        cached = self._ranks(image) if 4 * self.k**2 <= self.RANK_CACHE_BYTES else None
        n2 = cached[2] if cached is not None else _tie_runs(np.sort(upper_triangle(image)))[2]

        def null(perms: NDArray[np.int64]) -> NDArray[np.float64]:
            if n0 == 0 or n1 == n0 or n2 == n0:
                return np.full(len(perms), np.nan)
            ranks, n_ranks, _ = cached if cached is not None else self._ranks(image)
            dis, n3 = permuted_kendall_counts(ranks, n_ranks, self._ii, self._jj, self._starts,
                                              self._stops, np.ascontiguousarray(perms))
            return (n0 - n1 - n2 + n3 - 2 * dis) / self._pairs

        return null


def rsa_matrix(m: NDArray[np.float64], method: str) -> NDArray[np.float64]:
    """The matrix whose upper triangle ``method`` correlates by Pearson's r: ``m`` itself
    (Pearson), or the ranks of ``m``'s upper triangle, mirrored (Spearman).

    Symmetric in, symmetric out, so ``rsa_matrix(m)[p][:, p]``'s upper triangle is that
    of ``rsa_matrix(m[p][:, p])`` for a permutation ``p`` (ties share their average rank).
    """
    _check_method(method, MATRIX_METHODS)
    if method == "pearson":
        return m
    from scipy.stats import rankdata  # ~0.5 s to import: the Spearman path only

    iu = np.triu_indices(m.shape[0], k=1)
    ranks = np.zeros_like(m)
    ranks[iu] = rankdata(m[iu])
    return ranks + ranks.T


def rsa_from_similarity(
    word_similarity: ArrayLike, image_similarity: ArrayLike, method: Method = "pearson"
) -> float:
    """Correlation between the upper triangles of two k x k similarity matrices.

    NaN when either matrix has a NaN or infinite entry (a constant row: the correlation
    is undefined), as for the 2 vs 2 accuracy.
    """
    w_mat = np.asarray(word_similarity, dtype=np.float64)
    i_mat = np.asarray(image_similarity, dtype=np.float64)
    w, i = upper_triangle(w_mat), upper_triangle(i_mat)
    if w.shape != i.shape:
        raise ValueError(f"similarity matrices differ in size: {w.shape} vs {i.shape}")
    _check_method(method)
    if not (np.isfinite(w).all() and np.isfinite(i).all()):
        return float("nan")
    if method == "kendall":
        return kendall_tau_a(w, i)
    return pearson_r(upper_triangle(rsa_matrix(w_mat, method)),
                     upper_triangle(rsa_matrix(i_mat, method)))


def rsa(x: ArrayLike, y: ArrayLike, method: Method = "pearson") -> float:
    """RSA between embeddings ``x`` (k x p) and ``y`` (k x q), rows aligned by concept."""
    return rsa_from_similarity(similarity_matrix(x), similarity_matrix(y), method)
