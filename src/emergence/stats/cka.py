"""Centred kernel alignment (Kornblith et al. 2019), linear kernels.

For embeddings ``x`` (k x p) and ``y`` (k x q) with rows aligned by concept, the linear
kernels are the concept x concept Gram matrices of the column-centred features,
``K = X_c X_cᵀ`` and ``L = Y_c Y_cᵀ``:

* biased (the original CKA): ``tr(K L) / sqrt(tr(K K) tr(L L))``, which equals
  ``||Y_cᵀ X_c||_F² / (||X_cᵀ X_c||_F ||Y_cᵀ Y_c||_F)``;
* debiased: the same ratio with the unbiased HSIC estimator of Song et al. (2012) in
  place of ``tr(K L)``: with ``K̃``, ``L̃`` the Gram matrices with their diagonals set to
  zero and n = k,
  ``HSIC_u = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1] / (n(n-3))``
  (needs k >= 4).

Both work from the Gram matrices alone (:func:`cka_from_gram`), which is what the
activations file already holds exactly for every layer.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["cka", "cka_from_gram", "linear_gram"]


def linear_gram(x: ArrayLike) -> NDArray[np.float64]:
    """``X_c X_cᵀ``: the k x k Gram matrix of the column-centred rows of ``x`` (k x p)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a k x p embedding, got shape {arr.shape}")
    centred = arr - arr.mean(axis=0)
    return centred @ centred.T


def _hsic_unbiased(k_mat: NDArray[np.float64], l_mat: NDArray[np.float64]) -> float:
    n = k_mat.shape[0]
    k_t, l_t = k_mat.copy(), l_mat.copy()
    np.fill_diagonal(k_t, 0.0)
    np.fill_diagonal(l_t, 0.0)
    trace = float(np.sum(k_t * l_t))  # tr(K̃ L̃) for symmetric L̃
    sums = float(k_t.sum()) * float(l_t.sum()) / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * float(k_t.sum(axis=0) @ l_t.sum(axis=1))  # 1ᵀ K̃ L̃ 1
    return (trace + sums - cross) / (n * (n - 3))


def cka_from_gram(gram_x: ArrayLike, gram_y: ArrayLike, debiased: bool = False) -> float:
    """CKA from two k x k Gram matrices of centred features (:func:`linear_gram`).

    NaN when a Gram matrix has a non-finite entry or a representation has no variance
    (the ratio is undefined).
    """
    k_mat = np.asarray(gram_x, dtype=np.float64)
    l_mat = np.asarray(gram_y, dtype=np.float64)
    if k_mat.ndim != 2 or k_mat.shape[0] != k_mat.shape[1] or k_mat.shape != l_mat.shape:
        raise ValueError(f"expected two k x k Gram matrices of one size, got {k_mat.shape} "
                         f"and {l_mat.shape}")
    n = k_mat.shape[0]
    if n < (4 if debiased else 2):
        raise ValueError(f"{'debiased ' if debiased else ''}CKA needs at least "
                         f"{4 if debiased else 2} concepts, got {n}")
    if not (np.isfinite(k_mat).all() and np.isfinite(l_mat).all()):
        return float("nan")
    if debiased:
        xy, xx, yy = (_hsic_unbiased(k_mat, l_mat), _hsic_unbiased(k_mat, k_mat),
                      _hsic_unbiased(l_mat, l_mat))
    else:
        xy, xx, yy = (float(np.sum(k_mat * l_mat)), float(np.sum(k_mat * k_mat)),
                      float(np.sum(l_mat * l_mat)))
    if xx <= 0.0 or yy <= 0.0:
        return float("nan")
    return xy / math.sqrt(xx * yy)


def cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA between embeddings ``x`` (k x p) and ``y`` (k x q), rows aligned by
    concept: biased (Kornblith et al. 2019) or debiased (unbiased HSIC, Song et al. 2012)."""
    gx, gy = linear_gram(x), linear_gram(y)
    if gx.shape != gy.shape:
        raise ValueError(f"x and y must have the same number of rows (concepts), got "
                         f"{gx.shape[0]} and {gy.shape[0]}")
    return cka_from_gram(gx, gy, debiased)
