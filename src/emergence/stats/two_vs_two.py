"""The 2 vs 2 test of similarity encoding (Xu et al. 2016; Dharmaretnam & Fyshe 2018, sec. 2).

Given the concept x concept correlation matrices of two spaces, ``W`` (words) and
``I`` (images), each pair of concepts ``(c1, c2)`` is held out in turn. The rows of
both matrices for ``c1`` and ``c2`` with the columns ``c1`` and ``c2`` removed give
``w1, w2, i1, i2`` (length k - 2). The test passes when::

    corr(w1, i1) + corr(w2, i2) > corr(w1, i2) + corr(w2, i1)      (strict: ties fail)

and the 2 vs 2 accuracy is the fraction of the C(k, 2) pairs that pass. A tie is a
difference of at most ``TIE_TOLERANCE`` (1e-12): below float64 rounding, two ways of
computing the same correlations disagree in sign, so exact ties (duplicate images,
k = 4 where every correlation is +-1) would otherwise pass or fail by chance.

All pairs are evaluated at once from k x k sufficient statistics: with
``n = k - 2`` and the two removed columns subtracted from full-row sums, every
Pearson correlation needed is a few gathers into row sums, row sums of squares and
the cross-product matrix ``C = W I^T``. Batches of image matrices (the permutation
null) are one batched matmul. On CUDA everything is float64 torch; on the CPU a fused
numba kernel computes ``C`` in float32 and certifies each pair's decision against the
float64 one, recomputing the few it cannot certify in float64 (:mod:`emergence.stats._kernels`),
so both give the float64 counts.

Undefined inputs. ``W`` is fixed for an engine and must be finite (a constant word
vector is an error, raised at construction). An image matrix ``I`` with any NaN or
infinite entry (a concept whose activations are constant in that layer has an undefined
correlation with every other) cannot be scored: its accuracy is NaN, on every path
(one matrix, a batch, permutations, CPU or CUDA), never a count in which the undefined
pairs silently fail. At least :data:`MIN_CONCEPTS` concepts are required.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from emergence.device import resolve_device
from emergence.stats.similarity import similarity_matrix

__all__ = [
    "MIN_CONCEPTS",
    "TIE_TOLERANCE",
    "TwoVsTwo",
    "check_permutations",
    "pair_indices",
    "two_vs_two",
    "two_vs_two_from_similarity",
]


TIE_TOLERANCE = 1e-12
"""Differences of summed correlations at or below this are ties (and ties fail)."""

MIN_CONCEPTS = 5
"""Fewest concepts the 2 vs 2 test accepts: each held-out correlation is then over k - 2 >= 3
entries. At k = 4 every reduced correlation is over 2 entries, hence +-1, and the score is
meaningless."""


def pair_indices(k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The C(k, 2) held-out pairs ``(a, b)`` with ``a < b``, in row-major order."""
    a, b = np.triu_indices(k, k=1)
    return a.astype(np.int64), b.astype(np.int64)


def _check_shape(name: str, m: NDArray[np.float64]) -> None:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square k x k similarity matrix, got shape {m.shape}")
    if m.shape[0] < MIN_CONCEPTS:
        raise ValueError(f"the 2 vs 2 test needs at least {MIN_CONCEPTS} concepts (each "
                         "correlation then has k - 2 >= 3 entries; at k = 4 every reduced "
                         f"correlation is +-1); got k={m.shape[0]}")


def _check_square(name: str, m: NDArray[np.float64]) -> None:
    _check_shape(name, m)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} has non-finite entries (a constant embedding row?)")


def check_permutations(perms: ArrayLike, k: int) -> NDArray[np.int64]:
    """``perms`` as a contiguous (B, k) int64 array, after checking that every row is a
    permutation of ``0 .. k-1``; a one-line ValueError naming the first bad row otherwise.

    The kernels index with these values unchecked (an index >= k reads outside the
    matrix), so every entry point that takes permutations calls this first. One O(B k)
    pass (:func:`emergence.stats._kernels.invalid_permutation`).
    """
    arr = np.asarray(perms)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"permutations must be a (B, {k}) array, one permutation of the "
                         f"{k} concepts per row; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"permutations must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    from emergence.stats import _kernels

    row, col = _kernels.invalid_permutation(arr, k)
    if row >= 0:
        v = int(arr[row, col])
        why = (f"index {v} is outside 0..{k - 1}" if not 0 <= v < k
               else f"index {v} appears twice")
        raise ValueError(f"permutation row {row} is not a permutation of 0..{k - 1}: {why} "
                         f"(column {col})")
    return arr


@dataclass
class TwoVsTwo:
    """All-pairs 2 vs 2 engine for one fixed word-space matrix ``W``.

    Precomputes everything that depends on ``W`` only, so that evaluating many
    image-space matrices (layers, permutations) costs one matmul and O(k^2) gathers
    each.

    Parameters
    ----------
    word_similarity:
        ``W``, k x k with k >= :data:`MIN_CONCEPTS`, finite (need not be symmetric; rows
        are what is compared). Raises ValueError otherwise.
    device:
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    word_similarity: ArrayLike
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        w = np.ascontiguousarray(self.word_similarity, dtype=np.float64)  # views: kernels
        _check_square("word similarity W", w)
        self.k = w.shape[0]
        self.n = float(self.k - 2)
        self._device = resolve_device(self.device)
        a, b = pair_indices(self.k)
        self.a = torch.from_numpy(a).to(self._device)
        self.b = torch.from_numpy(b).to(self._device)
        self.W = torch.from_numpy(w).to(self._device)
        self.sx_a, self.var_w_a = self._reduced_moments(self.W, self.a, self.a, self.b)
        self.sx_b, self.var_w_b = self._reduced_moments(self.W, self.b, self.a, self.b)
        # W entries at the removed columns, for the cross-product correction.
        self.w_aa, self.w_ab = self.W[self.a, self.a], self.W[self.a, self.b]
        self.w_ba, self.w_bb = self.W[self.b, self.a], self.W[self.b, self.b]

    @property
    def n_pairs(self) -> int:
        return self.k * (self.k - 1) // 2

    def _reduced_moments(
        self, m: torch.Tensor, rows: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row sum and ``n * sum(x^2) - sum(x)^2`` of ``m[rows]`` without columns a, b.

        ``m`` is (..., k, k); returns (..., P) tensors.
        """
        row_sum = m.sum(dim=-1)
        row_sq = (m * m).sum(dim=-1)
        ma = m[..., rows, a]
        mb = m[..., rows, b]
        s = row_sum[..., rows] - ma - mb
        ss = row_sq[..., rows] - ma * ma - mb * mb
        return s, self.n * ss - s * s

    def outcomes(self, image_similarity: ArrayLike | torch.Tensor) -> torch.Tensor:
        """Pass/fail of every pair: bool tensor (..., C(k,2)) for I of shape (..., k, k).

        The float64 torch engine (any device), pairs in :func:`pair_indices` order. A pair
        whose correlations are undefined (NaN entries in I) fails here; :meth:`accuracy`
        reports such a matrix as NaN.
        """
        i_mat = torch.as_tensor(image_similarity, dtype=torch.float64, device=self._device)
        if i_mat.shape[-2:] != (self.k, self.k):
            raise ValueError(
                f"image similarity must be (..., {self.k}, {self.k}), got {tuple(i_mat.shape)}"
            )
        a, b, n = self.a, self.b, self.n
        sy_a, var_i_a = self._reduced_moments(i_mat, a, a, b)
        sy_b, var_i_b = self._reduced_moments(i_mat, b, a, b)
        cross = self.W @ i_mat.transpose(-1, -2)  # C[u, v] = sum_j W[u, j] I[v, j]
        i_aa, i_ab = i_mat[..., a, a], i_mat[..., a, b]
        i_ba, i_bb = i_mat[..., b, a], i_mat[..., b, b]

        def corr(
            c_uv: torch.Tensor,
            w_ua: torch.Tensor,
            w_ub: torch.Tensor,
            i_va: torch.Tensor,
            i_vb: torch.Tensor,
            sx: torch.Tensor,
            sy: torch.Tensor,
            var_w: torch.Tensor,
            var_i: torch.Tensor,
        ) -> torch.Tensor:
            sxy = c_uv - w_ua * i_va - w_ub * i_vb
            return (n * sxy - sx * sy) / torch.sqrt(var_w * var_i)

        r11 = corr(cross[..., a, a], self.w_aa, self.w_ab, i_aa, i_ab,
                   self.sx_a, sy_a, self.var_w_a, var_i_a)
        r22 = corr(cross[..., b, b], self.w_ba, self.w_bb, i_ba, i_bb,
                   self.sx_b, sy_b, self.var_w_b, var_i_b)
        r12 = corr(cross[..., a, b], self.w_aa, self.w_ab, i_ba, i_bb,
                   self.sx_a, sy_b, self.var_w_a, var_i_b)
        r21 = corr(cross[..., b, a], self.w_ba, self.w_bb, i_aa, i_ab,
                   self.sx_b, sy_a, self.var_w_b, var_i_a)
        return (r11 + r22) - (r12 + r21) > TIE_TOLERANCE

    def permuted_accuracy(
        self, image_similarity: ArrayLike, perms: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """Accuracy after shuffling the image space by each permutation (B x k) -> (B,).

        ``I_p = I[p][:, p]``. On the CPU this runs the certified float32 numba kernel
        (:mod:`emergence.stats._kernels`); on CUDA the batched float64 torch engine. Every row of
        ``perms`` must be a permutation of ``0 .. k-1`` (:func:`check_permutations`, a
        ValueError otherwise). An I with non-finite entries gives NaN for every permutation.
        """
        perms = check_permutations(perms, self.k)
        i_mat = np.ascontiguousarray(image_similarity, dtype=np.float64)
        if i_mat.shape != (self.k, self.k):
            raise ValueError(f"image similarity must be ({self.k}, {self.k}), got {i_mat.shape}")
        if self._device.type != "cpu":
            if not np.isfinite(i_mat).all():
                return np.full(len(perms), np.nan)
            p = torch.from_numpy(perms).to(self._device)
            return self.accuracy(torch.from_numpy(i_mat).to(self._device)[p[:, :, None],
                                                                          p[:, None, :]])
        kernels = self._cpu_kernels()
        if not self._certifiable(i_mat):  # NaN/inf entries are not certifiable
            if not np.isfinite(i_mat).all():
                return np.full(len(perms), np.nan)
            p = torch.from_numpy(perms)
            return self._float64_accuracy(torch.from_numpy(i_mat)[p[:, :, None], p[:, None, :]])
        images, images32 = kernels.permute_padded(i_mat, perms, self._kp)
        if np.array_equal(i_mat, i_mat.T):
            images_t = images
        else:
            images_t = kernels.permute_padded(np.ascontiguousarray(i_mat.T), perms, self._kp)[0]
        return self._cpu_counts(images, images_t, images32) / self.n_pairs

    def accuracy(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """2 vs 2 accuracy for I of shape (k, k) -> 0-d array, or (B, k, k) -> (B,).

        On the CPU: the certified float32 kernel (:mod:`emergence.stats._kernels`), whose counts
        are those of the float64 computation; on CUDA: the float64 torch engine. A matrix
        with any NaN or infinite entry has accuracy NaN (its correlations are undefined).
        """
        if self._device.type != "cpu":
            return self._float64_accuracy(image_similarity)
        if isinstance(image_similarity, torch.Tensor):
            image_similarity = image_similarity.cpu().numpy()
        i_mat = np.asarray(image_similarity, dtype=np.float64)
        if i_mat.shape[-2:] != (self.k, self.k) or i_mat.ndim not in (2, 3):
            raise ValueError(f"image similarity must be ({self.k}, {self.k}) or "
                             f"(B, {self.k}, {self.k}), got {i_mat.shape}")
        if i_mat.ndim == 2:  # one evaluation (~0.2 ms): reused buffers, one staging pass
            kernels = self._cpu_kernels()
            m = np.ascontiguousarray(i_mat)
            images, images_t = self._single
            safe, symmetric = kernels.stage_one(m, m.view(np.int64), images[0], images_t[0],
                                                self._single32)
            if not (safe and self._w_safe):  # includes NaN/inf entries: NaN there
                return self._float64_accuracy(i_mat)
            counts = self._cpu_counts(images, images if symmetric else images_t,
                                      self._single32)
            return (counts / self.n_pairs).reshape(())
        finite = np.isfinite(i_mat).all(axis=(1, 2))
        if not finite.all():  # undefined matrices are NaN; the others scored as usual
            out = np.full(len(i_mat), np.nan)
            if finite.any():
                out[finite] = self.accuracy(i_mat[finite])
            return out
        if not self._certifiable(i_mat):
            return self._float64_accuracy(i_mat)
        images = np.zeros((len(i_mat), self.k, self._kp))
        images_t = np.zeros_like(images)
        images[:, :, : self.k] = i_mat
        images_t[:, :, : self.k] = i_mat.transpose(0, 2, 1)
        counts = self._cpu_counts(images, images_t, i_mat.astype(np.float32).reshape(-1, self.k))
        return counts / self.n_pairs

    def _float64_accuracy(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """The float64 torch engine's accuracy; NaN for a matrix with non-finite entries."""
        i_mat = torch.as_tensor(image_similarity, dtype=torch.float64, device=self._device)
        passed = self.outcomes(i_mat)
        acc = passed.sum(dim=-1, dtype=torch.int64).double() / self.n_pairs
        finite = torch.isfinite(i_mat).all(dim=-1).all(dim=-1)
        return torch.where(finite, acc, torch.full_like(acc, float("nan"))).cpu().numpy()

    def _certifiable(self, i_mat: NDArray[np.float64]) -> bool:
        """Whether the float32 kernel's error bound applies (entries in float32's safe range)."""
        kernels = self._cpu_kernels()
        return self._w_safe and bool(kernels.float32_safe(np.ascontiguousarray(i_mat)))

    def _cpu_kernels(self):  # noqa: ANN202 - the module
        """The numba kernels, with W's statistics computed on first use."""
        if not hasattr(self, "_word_stats"):
            import numba

            from emergence.stats import _kernels

            self._numba = numba
            self._numba_max_threads = int(numba.config.NUMBA_NUM_THREADS)
            self._numba_threads = 0  # the count last set by _cpu_counts
            self._kernels = _kernels
            self._kp = _kernels.padded_size(self.k)
            self._word_stats = _kernels.word_statistics(self.W.numpy(), self._kp)
            self._w_safe = bool(_kernels.float32_safe(self.W.numpy()))
            self._w32_t = torch.from_numpy(self._word_stats[1].astype(np.float32))
            self._e = _kernels.cross_product_error(self.k)
            self._single = (np.zeros((1, self.k, self._kp)), np.zeros((1, self.k, self._kp)))
            self._single32 = np.zeros((self.k, self.k), dtype=np.float32)
        return self._kernels

    def _cpu_counts(self, images: NDArray[np.float64], images_t: NDArray[np.float64],
                    images32: NDArray[np.float32]) -> NDArray[np.int64]:
        """Passed pairs per image matrix via the certified float32 kernel (B, k, kp) -> (B,)."""
        kernels = self._cpu_kernels()
        threads = max(1, min(torch.get_num_threads(), self._numba_max_threads))
        if threads != self._numba_threads:  # numba.get_num_threads() costs ~8 us a call
            self._numba.set_num_threads(threads)
            self._numba_threads = threads
        b = images.shape[0]
        with _float32_matmul_in_full_precision():
            cross = torch.from_numpy(images32) @ self._w32_t  # [v, u] ~ sum_j I[v, j] W[u, j]
        cross = cross.numpy().reshape(b, self.k, self._kp)
        if b == 1:  # rows dealt to threads: no idle thread for a single matrix
            return np.array([kernels.count_one(*self._word_stats, images[0], images_t[0],
                                               cross[0], TIE_TOLERANCE, self._e,
                                               n_threads=threads)])
        return kernels.count_passes(*self._word_stats, images, images_t, cross, TIE_TOLERANCE,
                                    self._e)


class _float32_matmul_in_full_precision:
    """The error bound assumes IEEE float32 products: no TF32/bfloat16 shortcuts."""

    def __enter__(self) -> None:
        self._saved = torch.get_float32_matmul_precision()
        if self._saved != "highest":
            torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: object) -> None:
        if self._saved != "highest":
            torch.set_float32_matmul_precision(self._saved)


def two_vs_two_from_similarity(word_similarity: ArrayLike, image_similarity: ArrayLike) -> float:
    """2 vs 2 accuracy between two k x k similarity matrices (rows aligned by concept).

    ``W`` must be finite (ValueError otherwise); an ``I`` with NaN or infinite entries
    cannot be scored and gives NaN. Both need k >= :data:`MIN_CONCEPTS`.
    """
    i_mat = np.asarray(image_similarity, dtype=np.float64)
    _check_shape("image similarity I", i_mat)
    return float(TwoVsTwo(word_similarity).accuracy(i_mat))


def two_vs_two(x: ArrayLike, y: ArrayLike) -> float:
    """2 vs 2 accuracy between embeddings ``x`` (k x p) and ``y`` (k x q).

    Rows are aligned by concept. Each space is first turned into its k x k Pearson
    similarity matrix; then every one of the C(k, 2) pairs is tested (ties fail).
    """
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"x and y must have the same number of rows (concepts): "
                         f"{xs.shape[0]} != {ys.shape[0]}")
    return two_vs_two_from_similarity(similarity_matrix(xs), similarity_matrix(ys))
