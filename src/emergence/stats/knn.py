"""Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
Hypothesis").

Each concept's k nearest neighbours in a representation are the k other concepts with the
highest Pearson correlation between rows (:func:`~emergence.stats.similarity.similarity_matrix`,
the same similarity as the 2 vs 2 test), the concept itself excluded, ties broken towards
the lower index. The alignment of two representations is the mean, over concepts, of the
fraction of neighbours they share: 1 when every neighbourhood agrees, about k/(n-1) by
chance.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.similarity import similarity_matrix

__all__ = ["mutual_knn", "mutual_knn_from_similarity", "nearest_neighbours"]


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
    return float(np.mean(np.sum(in_x & in_y, axis=1) / k))


def mutual_knn(x: ArrayLike, y: ArrayLike, k: int = 10) -> float:
    """Mutual kNN alignment of embeddings ``x`` (n x p) and ``y`` (n x q), rows aligned by
    concept, with ``k`` neighbours per concept."""
    return mutual_knn_from_similarity(similarity_matrix(x), similarity_matrix(y), k)
