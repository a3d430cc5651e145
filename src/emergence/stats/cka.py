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

Permutation null (:class:`CkaNull`): with ``L_p = L[p][:, p]`` (still a centred Gram
matrix: the centring commutes with permutations) the denominators do not change, nor do
``1ᵀL̃1`` and the multiset of ``L̃``'s row sums; per permutation only
``tr(K L_p) = 2 sum_{i<j} K[i, j] L[p_i, p_j] + sum_i K[i, i] L[p_i, p_i]`` (a permuted
upper-triangle dot product, the RSA null's kernel) and ``1ᵀK̃L̃_p1 = sum_j (1ᵀK̃)_j
(L̃1)_{p_j}`` are computed: O(k²) per permutation, equal to :func:`cka_from_gram` of the
permuted matrix up to float64 rounding (~1e-13).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:  # torch is the CUDA path of the null only
    import torch

__all__ = ["CkaNull", "cka", "cka_from_gram", "linear_gram", "permuted_upper_dot"]


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
    if _no_variance(k_mat) or _no_variance(l_mat):
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
    concept: biased (Kornblith et al. 2019) or debiased (unbiased HSIC, Song et al. 2012).

    NaN as :func:`cka_from_gram`, and when every concept has the same row in ``x`` or in
    ``y`` (a constant representation: its centred Gram matrix is rounding noise, ~1e-30)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    gx, gy = linear_gram(xs), linear_gram(ys)
    if gx.shape != gy.shape:
        raise ValueError(f"x and y must have the same number of rows (concepts), got "
                         f"{gx.shape[0]} and {gy.shape[0]}")
    value = cka_from_gram(gx, gy, debiased)
    if len(xs) and ((xs == xs[:1]).all() or (ys == ys[:1]).all()):
        return float("nan")
    return value


def _no_variance(gram: NDArray[np.float64]) -> bool:
    """A Gram matrix of centred features whose entries are all equal: it is zero in exact
    arithmetic (its rows sum to zero), so the representation has no variance (a constant
    one's Gram is ``c 11ᵀ`` with c rounding noise)."""
    return bool((gram == gram.flat[0]).all())


def permuted_upper_dot(w: NDArray[np.float64], m: NDArray[np.float64], perms: NDArray[np.int64],
                       dev: torch.device) -> NDArray[np.float64]:
    """``sum_{i<j} w[i, j] m[p_i, p_j]`` per permutation ``p`` (``w`` zero on and below the
    diagonal): numba on the CPU, float64 torch on CUDA; the same bits at any thread count."""
    if dev.type == "cpu":
        from emergence.stats import _two_vs_two_cpu

        return _two_vs_two_cpu.permuted_upper_dot(w, m, perms)
    import torch

    p = torch.from_numpy(perms).to(dev)
    mt = torch.as_tensor(m, device=dev)[p[:, :, None], p[:, None, :]]
    return (mt * torch.as_tensor(w, device=dev)).sum(dim=(1, 2)).cpu().numpy()


class CkaNull:
    """Biased and/or debiased CKA of a fixed word Gram matrix ``K`` against ``L[p][:, p]``
    for batches of permutations ``p`` (module doc); each entry equals
    ``cka_from_gram(K, L[p][:, p], debiased)`` up to float64 rounding."""

    def __init__(self, word_gram: ArrayLike, *, biased: bool = True, debiased: bool = False,
                 device: torch.device | None = None) -> None:
        k_mat = np.ascontiguousarray(word_gram, dtype=np.float64)
        n = k_mat.shape[0]
        if k_mat.ndim != 2 or k_mat.shape[1] != n:
            raise ValueError(f"expected a k x k word Gram matrix, got shape {k_mat.shape}")
        if not np.isfinite(k_mat).all():
            raise ValueError("the word Gram matrix has NaN or infinite entries")
        if debiased and n < 4:
            raise ValueError(f"debiased CKA needs at least 4 concepts, got {n}")
        self.n, self.biased, self.debiased = n, biased, debiased
        self._flat = _no_variance(k_mat)  # no variance: every null entry is NaN (_ratio)
        if device is None:
            import torch

            device = torch.device("cpu")
        self.dev = device
        self._upper = np.triu(k_mat, 1)
        self._diag = k_mat.diagonal().copy()
        self._xx = float(np.sum(k_mat * k_mat))
        if debiased:
            k_t = k_mat.copy()
            np.fill_diagonal(k_t, 0.0)
            self._xx_u = _hsic_unbiased(k_mat, k_mat)
            self._sum_k = float(k_t.sum())
            self._col_k = k_t.sum(axis=0)

    def layer(self, image_gram: ArrayLike) -> Callable[[NDArray[np.int64]],
                                                      dict[str, NDArray[np.float64]]]:
        """The null of one (finite) image Gram matrix: ``perms`` (B, k) -> ``{"cka": (B,),
        "cka_debiased": (B,)}`` (the requested ones)."""
        l_mat = np.ascontiguousarray(image_gram, dtype=np.float64)
        n = self.n
        if l_mat.shape != (n, n):
            raise ValueError(f"every image Gram matrix must be {n} x {n}, got {l_mat.shape}")
        l_diag = l_mat.diagonal().copy()
        yy = float(np.sum(l_mat * l_mat))
        flat = self._flat or _no_variance(l_mat)  # a side without variance: NaN
        if self.debiased:
            l_t = l_mat.copy()
            np.fill_diagonal(l_t, 0.0)
            yy_u = _hsic_unbiased(l_mat, l_mat)
            sums = self._sum_k * float(l_t.sum()) / ((n - 1) * (n - 2))
            row_l = l_t.sum(axis=1)

        def null(perms: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
            perms = np.ascontiguousarray(perms)
            upper = permuted_upper_dot(self._upper, l_mat, perms, self.dev)
            out = {}
            if self.biased:
                xy = 2.0 * upper + (self._diag[None, :] * l_diag[perms]).sum(axis=1)
                out["cka"] = _ratio(xy, self._xx, yy, flat)
            if self.debiased:
                cross = 2.0 / (n - 2) * (self._col_k[None, :] * row_l[perms]).sum(axis=1)
                xy = (2.0 * upper + sums - cross) / (n * (n - 3))
                out["cka_debiased"] = _ratio(xy, self._xx_u, yy_u, flat)
            return out

        return null


def _ratio(xy: NDArray[np.float64], xx: float, yy: float, flat: bool) -> NDArray[np.float64]:
    if flat or xx <= 0.0 or yy <= 0.0:  # no variance: undefined, as cka_from_gram
        return np.full(xy.shape, np.nan)
    return xy / math.sqrt(xx * yy)
