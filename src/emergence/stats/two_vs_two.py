"""The 2 vs 2 test of similarity encoding (Xu et al. 2016; Dharmaretnam & Fyshe 2018, sec. 2).

Given the concept x concept correlation matrices of two spaces, ``W`` (words) and
``I`` (images), each pair of concepts ``(c1, c2)`` is held out in turn. The rows of
both matrices for ``c1`` and ``c2`` with the columns ``c1`` and ``c2`` removed give
``w1, w2, i1, i2`` (length k - 2). The test passes when::

    corr(w1, i1) + corr(w2, i2) > corr(w1, i2) + corr(w2, i1)      (strict: ties fail)

and the 2 vs 2 accuracy is the fraction of the C(k, 2) pairs that pass. A tie is a
difference within ``TIE_TOLERANCE`` (1e-12), ``-1e-12 < d <= 1e-12``: below float64
rounding, two ways of computing the same correlations disagree in sign, so exact ties
(two concepts with identical word vectors or identical images, k = 4 where every
correlation is +-1) would otherwise pass or fail by chance. Ties fail, and
:meth:`TwoVsTwo.ties` counts them (``scores.tsv``'s ``ties`` column), decided as exactly as
the passes: the pairs with ``d > -1e-12`` minus those with ``d > 1e-12``, both counted by
the same engine.

All pairs are evaluated at once from k x k sufficient statistics: with
``n = k - 2`` and the two removed columns subtracted from full-row sums, every
Pearson correlation needed is a few gathers into row sums, row sums of squares and
the cross-product matrix ``C = W I^T``. Batches of image matrices (the permutation
null) are one batched matmul. That float64 computation (:meth:`TwoVsTwo.outcomes`) is the
definition; :class:`TwoVsTwo` runs it on CUDA, and on the CPU takes its counts from a
:class:`~emergence.stats._two_vs_two_cpu.CpuEngine`, fused numba kernels that compute ``C`` in
float32 and certify each pair's decision against the float64 one, recomputing the few
they cannot certify in float64; both give the float64 counts.

Undefined inputs. ``W`` is fixed for an engine and must be finite (a constant word
vector is an error, raised at construction). An image matrix ``I`` with any NaN or
infinite entry (a concept whose activations are constant in that layer has an undefined
correlation with every other) cannot be scored: its accuracy is NaN, on every path
(one matrix, a batch, permutations, CPU or CUDA), never a count in which the undefined
pairs silently fail. At least :data:`MIN_CONCEPTS` concepts are required.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.device import resolve_device
from emergence.stats.similarity import similarity_matrix

if TYPE_CHECKING:  # torch loads with the first engine: importing the constants stays cheap
    import torch

    from emergence.stats._two_vs_two_cpu import CpuEngine

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
    pass (:func:`emergence.stats._two_vs_two_cpu.invalid_permutation`).
    """
    arr = np.asarray(perms)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"permutations must be a (B, {k}) array, one permutation of the "
                         f"{k} concepts per row; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"permutations must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    from emergence.stats import _two_vs_two_cpu

    row, col = _two_vs_two_cpu.invalid_permutation(arr, k)
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

    The definition is :meth:`outcomes`: the float64 computation from the sufficient
    statistics (module doc), on any torch device. :meth:`accuracy` and
    :meth:`permuted_accuracy` give its counts through the engine of the device: on CUDA
    the definition itself, batched; on the CPU a :class:`~emergence.stats._two_vs_two_cpu.CpuEngine`
    (certified float32 kernels, the same counts), which declines the matrices its bound
    does not cover (they are decided by the definition).

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
    _cpu: CpuEngine | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        import torch

        w = np.ascontiguousarray(self.word_similarity, dtype=np.float64)  # views: kernels
        _check_square("word similarity W", w)
        self.k = w.shape[0]
        self.n = float(self.k - 2)
        self._device = resolve_device(self.device)
        self.W = torch.from_numpy(w).to(self._device)
        if self._device.type == "cpu":
            from emergence.stats._two_vs_two_cpu import CpuEngine

            self._cpu = CpuEngine(w, TIE_TOLERANCE)

    @cached_property
    def _word_pairs(self) -> tuple[torch.Tensor, ...]:
        """What the definition needs from W per pair, built on first use: the pair indices
        ``a, b``, W's reduced row sums and variances, and W's entries at the removed
        columns (O(C(k, 2)) memory, ~140 MB at k = 1,854; the CPU engine never needs it)."""
        import torch

        a, b = (torch.from_numpy(v).to(self._device) for v in pair_indices(self.k))
        sx_a, var_w_a = self._reduced_moments(self.W, a, a, b)
        sx_b, var_w_b = self._reduced_moments(self.W, b, a, b)
        return (a, b, sx_a, var_w_a, sx_b, var_w_b, self.W[a, a], self.W[a, b], self.W[b, a],
                self.W[b, b])

    @property
    def cpu_engine(self) -> CpuEngine | None:
        """The certified float32 engine that counts on the CPU (None on CUDA)."""
        return self._cpu

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

    def outcomes(self, image_similarity: ArrayLike | torch.Tensor,
                 tol: float = TIE_TOLERANCE) -> torch.Tensor:
        """Pass/fail of every pair: bool tensor (..., C(k,2)) for I of shape (..., k, k).

        The float64 definition (any device), pairs in :func:`pair_indices` order: a pair
        passes when its difference of summed correlations exceeds ``tol``. A pair whose
        correlations are undefined (NaN entries in I) fails here; :meth:`accuracy`
        reports such a matrix as NaN.
        """
        import torch

        i_mat = torch.as_tensor(image_similarity, dtype=torch.float64, device=self._device)
        if i_mat.shape[-2:] != (self.k, self.k):
            raise ValueError(
                f"image similarity must be (..., {self.k}, {self.k}), got {tuple(i_mat.shape)}"
            )
        a, b, sx_a, var_w_a, sx_b, var_w_b, w_aa, w_ab, w_ba, w_bb = self._word_pairs
        n = self.n
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

        r11 = corr(cross[..., a, a], w_aa, w_ab, i_aa, i_ab, sx_a, sy_a, var_w_a, var_i_a)
        r22 = corr(cross[..., b, b], w_ba, w_bb, i_ba, i_bb, sx_b, sy_b, var_w_b, var_i_b)
        r12 = corr(cross[..., a, b], w_aa, w_ab, i_ba, i_bb, sx_a, sy_b, var_w_a, var_i_b)
        r21 = corr(cross[..., b, a], w_ba, w_bb, i_aa, i_ab, sx_b, sy_a, var_w_b, var_i_a)
        return (r11 + r22) - (r12 + r21) > tol

    def _float64_accuracy(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """Accuracy by the definition; NaN for a matrix with non-finite entries."""
        import torch

        i_mat = torch.as_tensor(image_similarity, dtype=torch.float64, device=self._device)
        passed = self.outcomes(i_mat)
        acc = passed.sum(dim=-1, dtype=torch.int64).double() / self.n_pairs
        finite = torch.isfinite(i_mat).all(dim=-1).all(dim=-1)
        return torch.where(finite, acc, torch.full_like(acc, float("nan"))).cpu().numpy()

    def _host_matrices(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """I as a float64 host array of shape (k, k) or (B, k, k); ValueError otherwise."""
        import torch

        if isinstance(image_similarity, torch.Tensor):
            image_similarity = image_similarity.cpu().numpy()
        i_mat = np.asarray(image_similarity, dtype=np.float64)
        if i_mat.shape[-2:] != (self.k, self.k) or i_mat.ndim not in (2, 3):
            raise ValueError(f"image similarity must be ({self.k}, {self.k}) or "
                             f"(B, {self.k}, {self.k}), got {i_mat.shape}")
        return i_mat

    def accuracy(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """2 vs 2 accuracy for I of shape (k, k) -> 0-d array, or (B, k, k) -> (B,).

        A matrix with any NaN or infinite entry has accuracy NaN (its correlations are
        undefined).
        """
        if self._cpu is None:
            return self._float64_accuracy(image_similarity)
        i_mat = self._host_matrices(image_similarity)
        if i_mat.ndim == 2:
            counts = self._cpu.count_one(i_mat)
            if counts is None:  # includes NaN/inf entries: NaN there
                return self._float64_accuracy(i_mat)
            return (counts / self.n_pairs).reshape(())
        finite = np.isfinite(i_mat).all(axis=(1, 2))
        if not finite.all():  # undefined matrices are NaN; the others scored as usual
            out = np.full(len(i_mat), np.nan)
            if finite.any():
                out[finite] = self.accuracy(i_mat[finite])
            return out
        counts = self._cpu.count_batch(i_mat)
        if counts is None:
            return self._float64_accuracy(i_mat)
        return counts / self.n_pairs

    def ties(self, image_similarity: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """Tied pairs (module doc: ``-TIE_TOLERANCE < d <= TIE_TOLERANCE``, counted as
        fails) of I of shape (k, k) -> 0-d array, or (B, k, k) -> (B,); NaN for a matrix
        with non-finite entries. The CPU engine's certified counts, else the float64
        definition's."""
        i_mat = self._host_matrices(image_similarity)
        flat = i_mat.reshape(-1, self.k, self.k)
        out = np.full(len(flat), np.nan)
        for b, m in enumerate(flat):
            if not np.isfinite(m).all():
                continue
            if self._cpu is not None:
                counts = [self._cpu.count_one(m, tol) for tol in (-TIE_TOLERANCE,
                                                                   TIE_TOLERANCE)]
                if counts[0] is not None and counts[1] is not None:
                    out[b] = int(counts[0][0]) - int(counts[1][0])
                    continue
            import torch

            t = torch.from_numpy(np.ascontiguousarray(m)).to(self._device)
            out[b] = int(self.outcomes(t, -TIE_TOLERANCE).sum()) - int(self.outcomes(t).sum())
        return out.reshape(i_mat.shape[:-2])

    def permuted_accuracy(
        self, image_similarity: ArrayLike, perms: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """Accuracy after shuffling the image space by each permutation (B x k) -> (B,).

        ``I_p = I[p][:, p]``. Every row of ``perms`` must be a permutation of ``0 .. k-1``
        (:func:`check_permutations`, a ValueError otherwise). An I with non-finite entries
        gives NaN for every permutation.
        """
        perms = check_permutations(perms, self.k)
        i_mat = np.ascontiguousarray(image_similarity, dtype=np.float64)
        if i_mat.shape != (self.k, self.k):
            raise ValueError(f"image similarity must be ({self.k}, {self.k}), got {i_mat.shape}")
        if not np.isfinite(i_mat).all():
            return np.full(len(perms), np.nan)
        if self._cpu is not None:
            counts = self._cpu.count_permuted(i_mat, perms)
            if counts is not None:
                return counts / self.n_pairs
        import torch

        p = torch.from_numpy(perms).to(self._device)
        return self._float64_accuracy(torch.from_numpy(i_mat).to(self._device)[p[:, :, None],
                                                                                p[:, None, :]])


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
