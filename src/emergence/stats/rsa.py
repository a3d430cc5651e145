"""Representational similarity analysis (Kriegeskorte et al. 2008), the companion score.

RSA correlates the two similarity matrices directly: the correlation between the
off-diagonal upper triangles of ``W`` and ``I`` (Pearson by default, as in the
paper's description; Spearman or Kendall's tau-a on request). :func:`rsa_matrix` is
the one place the Pearson/Spearman method is applied: the observed value
(:func:`rsa_from_similarity`) and the permutation null
(:func:`emergence.stats.permutation.permutation_null`) both correlate its upper
triangles. Kendall's tau-a (:func:`kendall_tau_a`: concordant minus discordant pairs of
entries over all pairs, ties counting zero) is not a Pearson correlation of transformed
entries, so it has no :func:`rsa_matrix`; the permutation null does not offer it yet.

Every reduction here is numpy's pairwise summation of elementwise products, never a
BLAS dot product: OpenBLAS splits long dot products across its threads, so
``scipy.stats.pearsonr`` (and ``np.linalg.norm``) give different last bits at different
thread counts. These sums give the same bits for any thread count.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from emergence.stats.similarity import similarity_matrix

__all__ = ["METHODS", "centred_norm", "kendall_tau_a", "pearson_r", "rsa",
           "rsa_from_similarity", "rsa_matrix", "upper_triangle"]

Method = Literal["pearson", "spearman", "kendall"]
METHODS = ("pearson", "spearman")  # the methods of rsa_matrix and the permutation null


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


def kendall_tau_a(u: np.ndarray, v: np.ndarray) -> float:
    """Kendall's tau-a of two 1-d vectors: (concordant - discordant) / (n (n - 1) / 2),
    a pair tied in either vector counting zero; from scipy's O(n log n) tau-b, which has
    the same numerator. NaN when either vector is constant."""
    n = len(u)
    pairs = n * (n - 1) / 2

    def tied_pairs(a: np.ndarray) -> float:
        _, counts = np.unique(a, return_counts=True)
        return float(np.sum(counts * (counts - 1) / 2))

    tu, tv = tied_pairs(u), tied_pairs(v)
    if pairs == 0 or tu == pairs or tv == pairs:
        return float("nan")
    tau_b = float(stats.kendalltau(u, v, variant="b").statistic)
    return tau_b * math.sqrt((pairs - tu) * (pairs - tv)) / pairs


def rsa_matrix(m: NDArray[np.float64], method: str) -> NDArray[np.float64]:
    """The matrix whose upper triangle ``method`` correlates by Pearson's r: ``m`` itself
    (Pearson), or the ranks of ``m``'s upper triangle, mirrored (Spearman).

    Symmetric in, symmetric out, so ``rsa_matrix(m)[p][:, p]``'s upper triangle is that
    of ``rsa_matrix(m[p][:, p])`` for a permutation ``p`` (ties share their average rank).
    """
    _check_method(method)
    if method == "pearson":
        return m
    iu = np.triu_indices(m.shape[0], k=1)
    ranks = np.zeros_like(m)
    ranks[iu] = stats.rankdata(m[iu])
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
    _check_method(method, (*METHODS, "kendall"))
    if not (np.isfinite(w).all() and np.isfinite(i).all()):
        return float("nan")
    if method == "kendall":
        return kendall_tau_a(w, i)
    return pearson_r(upper_triangle(rsa_matrix(w_mat, method)),
                     upper_triangle(rsa_matrix(i_mat, method)))


def rsa(x: ArrayLike, y: ArrayLike, method: Method = "pearson") -> float:
    """RSA between embeddings ``x`` (k x p) and ``y`` (k x q), rows aligned by concept."""
    return rsa_from_similarity(similarity_matrix(x), similarity_matrix(y), method)
