"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
Hypothesis").

Each concept's k nearest neighbours in a representation are the k other concepts with the
highest Pearson correlation between rows (:func:`~emergence.stats.similarity.similarity_matrix`,
the same similarity as the 2 vs 2 test), the concept itself excluded, ties broken towards
the lower index. The alignment of two representations is the mean, over concepts, of the
fraction of neighbours they share: 1 when every neighbourhood agrees, about k/(n-1) by
chance.

Permutation null (:class:`MutualKnnNull`): the neighbours of concept ``a`` in
``S[p][:, p]`` are ``pinv[c]`` for the neighbours ``c`` of ``p[a]`` in ``S`` (no sorting per
permutation), except that ties straddling the k-th neighbour go to the lowest *permuted*
index: rows of ``S`` with such a tie keep their strictly nearer neighbours and choose among
the tied candidates per permutation. Each entry equals :func:`mutual_knn_from_similarity` of
the permuted matrix exactly (same integer counts, same final mean).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.similarity import similarity_matrix

__all__ = ["MutualKnnNull", "mutual_knn", "mutual_knn_from_similarity", "nearest_neighbours"]


def nearest_neighbours(similarity: ArrayLike, k: int) -> NDArray[np.int64]:
    """The k nearest neighbours of every concept (n x k, nearest first) from an n x n
    similarity matrix: self excluded, ties to the lower index."""
    s = np.array(similarity, dtype=np.float64)
    n = s.shape[0]
    if s.ndim != 2 or s.shape[1] != n:
        raise ValueError(f"expected a square similarity matrix, got shape {s.shape}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k = {k} neighbours: choose 1 <= k <= {n - 1} (concepts - 1)")
    np.fill_diagonal(s, -np.inf)
    # a stable sort of -s keeps equal similarities in index order: ties to the lower index
    return np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.int64)


def mutual_knn_from_similarity(similarity_x: ArrayLike, similarity_y: ArrayLike,
                               k: int = 10) -> float:
    """Mutual kNN alignment of two n x n similarity matrices; NaN when either has a
    non-finite entry (an undefined correlation)."""
    sx = np.asarray(similarity_x, dtype=np.float64)
    sy = np.asarray(similarity_y, dtype=np.float64)
    if sx.shape != sy.shape:
        raise ValueError(f"similarity matrices differ in size: {sx.shape} vs {sy.shape}")
    if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
        return float("nan")
    n = sx.shape[0]
    rows = np.arange(n)[:, None]
    in_x = np.zeros((n, n), dtype=bool)
    in_y = np.zeros((n, n), dtype=bool)
    in_x[rows, nearest_neighbours(sx, k)] = True
    in_y[rows, nearest_neighbours(sy, k)] = True
    return _mean_shared(np.sum(in_x & in_y, axis=1), k)


def _mean_shared(counts: NDArray[np.int64], k: int) -> float:
    """The alignment from the shared neighbours per concept: the one place it is computed."""
    return float(np.mean(counts / k))


def mutual_knn(x: ArrayLike, y: ArrayLike, k: int = 10) -> float:
    """Mutual kNN alignment of embeddings ``x`` (n x p) and ``y`` (n x q), rows aligned by
    concept, with ``k`` neighbours per concept."""
    return mutual_knn_from_similarity(similarity_matrix(x), similarity_matrix(y), k)


class MutualKnnNull:
    """Mutual kNN alignment of a fixed similarity matrix ``S_x`` against ``S_y[p][:, p]`` for
    batches of permutations ``p`` (module doc); each entry equals
    ``mutual_knn_from_similarity(S_x, S_y[p][:, p], k)`` exactly."""

    def __init__(self, similarity_x: ArrayLike, k: int = 10) -> None:
        sx = np.asarray(similarity_x, dtype=np.float64)
        if not np.isfinite(sx).all():
            raise ValueError("the fixed similarity matrix has NaN or infinite entries")
        self.k = k
        self.n = n = sx.shape[0]
        self._in_x = np.zeros((n, n), dtype=np.bool_)
        self._in_x[np.arange(n)[:, None], nearest_neighbours(sx, k)] = True

    def layer(self, similarity_y: ArrayLike) -> Callable[[NDArray[np.int64]],
                                                         NDArray[np.float64]]:
        """The null of one (finite) similarity matrix: ``perms`` (B, n) -> (B,)."""
        from emergence.stats._rank_kernels import permuted_shared_neighbours

        sy = np.array(similarity_y, dtype=np.float64)
        n, k = self.n, self.k
        if sy.shape != (n, n):
            raise ValueError(f"similarity matrices differ in size: {(n, n)} vs {sy.shape}")
        sure = nearest_neighbours(sy, k)
        np.fill_diagonal(sy, -np.inf)
        kth = sy[np.arange(n), sure[:, -1]][:, None]
        n_greater = np.sum(sy > kth, axis=1)
        tied = sy == kth  # the k-th neighbour's value, the concept itself excluded
        straddle = n_greater + tied.sum(axis=1) > k  # more tied candidates than places
        n_sure = np.where(straddle, n_greater, k).astype(np.int64)
        tied[~straddle] = False
        tie_ptr = np.concatenate(([0], np.cumsum(tied.sum(axis=1)))).astype(np.int64)
        tie_idx = np.nonzero(tied)[1].astype(np.int64)  # row-major: grouped by row

        def null(perms: NDArray[np.int64]) -> NDArray[np.float64]:
            counts = permuted_shared_neighbours(self._in_x, sure, n_sure, tie_ptr, tie_idx,
                                                np.ascontiguousarray(perms))
            return np.array([_mean_shared(c, k) for c in counts], dtype=np.float64)

        return null
