"""Representational similarity analysis (Kriegeskorte et al. 2008), the companion score.

RSA correlates the two similarity matrices directly: the correlation between the
off-diagonal upper triangles of ``W`` and ``I`` (Pearson by default, as in the
paper's description; Spearman on request).

Every reduction here is numpy's pairwise summation of elementwise products, never a
BLAS dot product: OpenBLAS splits long dot products across its threads, so
``scipy.stats.pearsonr`` (and ``np.linalg.norm``) give different last bits at different
thread counts. These sums give the same bits for any thread count.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from emergence.stats.similarity import similarity_matrix

__all__ = ["centred_norm", "pearson_r", "rsa", "rsa_from_similarity", "upper_triangle"]

Method = Literal["pearson", "spearman"]


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


def rsa_from_similarity(
    word_similarity: ArrayLike, image_similarity: ArrayLike, method: Method = "pearson"
) -> float:
    """Correlation between the upper triangles of two k x k similarity matrices.

    NaN when either matrix has a NaN or infinite entry (a constant row: the correlation
    is undefined), as for the 2 vs 2 accuracy.
    """
    w, i = upper_triangle(word_similarity), upper_triangle(image_similarity)
    if w.shape != i.shape:
        raise ValueError(f"similarity matrices differ in size: {w.shape} vs {i.shape}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"unknown RSA method {method!r}; use 'pearson' or 'spearman'")
    if not (np.isfinite(w).all() and np.isfinite(i).all()):
        return float("nan")
    if method == "pearson":
        return pearson_r(w, i)
    if method == "spearman":
        return pearson_r(stats.rankdata(w), stats.rankdata(i))
    raise ValueError(f"unknown RSA method {method!r}; use 'pearson' or 'spearman'")


def rsa(x: ArrayLike, y: ArrayLike, method: Method = "pearson") -> float:
    """RSA between embeddings ``x`` (k x p) and ``y`` (k x q), rows aligned by concept."""
    return rsa_from_similarity(similarity_matrix(x), similarity_matrix(y), method)
