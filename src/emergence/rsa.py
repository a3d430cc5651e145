"""Representational similarity analysis (Kriegeskorte et al. 2008), the companion score.

RSA correlates the two similarity matrices directly: the correlation between the
off-diagonal upper triangles of ``W`` and ``I`` (Pearson by default, as in the
paper's description; Spearman on request).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from emergence.similarity import similarity_matrix

__all__ = ["rsa", "rsa_from_similarity", "upper_triangle"]

Method = Literal["pearson", "spearman"]


def upper_triangle(m: ArrayLike) -> np.ndarray:
    """Entries above the diagonal of a square matrix, row-major."""
    arr = np.asarray(m, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {arr.shape}")
    return arr[np.triu_indices(arr.shape[0], k=1)]


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
        return float(stats.pearsonr(w, i).statistic)
    if method == "spearman":
        return float(stats.spearmanr(w, i).statistic)
    raise ValueError(f"unknown RSA method {method!r}; use 'pearson' or 'spearman'")


def rsa(x: ArrayLike, y: ArrayLike, method: Method = "pearson") -> float:
    """RSA between embeddings ``x`` (k x p) and ``y`` (k x q), rows aligned by concept."""
    return rsa_from_similarity(similarity_matrix(x), similarity_matrix(y), method)
