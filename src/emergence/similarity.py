"""Similarity matrices: Pearson correlation between the rows of an embedding.

Similarity encoding (Anderson et al. 2016; Xu et al. 2016) replaces an embedding
``x`` (k concepts x p dimensions) by its k x k matrix of row-wise Pearson
correlations. For CNN layers with millions of features the matrix is built by
:class:`PearsonAccumulator`, which streams over feature chunks and keeps only
O(k^2) float64 state, so memory does not grow with the layer's size.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["PearsonAccumulator", "similarity_matrix", "correlation_from_moments"]


class PearsonAccumulator:
    """Exact row-by-row Pearson statistics of an ``n_rows x F`` matrix, streamed over columns.

    Call :meth:`update` with consecutive column chunks (``n_rows x f`` blocks, any
    float dtype); :meth:`correlation` returns the ``n_rows x n_rows`` Pearson matrix.

    All sums are float64. Each row is shifted by the mean of its first chunk before
    accumulating: Pearson correlation is invariant to a per-row shift, and the shift
    removes the cancellation that raw sums of large-mean rows (pixels, post-ReLU
    maps) would otherwise suffer in ``gram - n * mean mean^T``.
    """

    def __init__(self, n_rows: int) -> None:
        if n_rows < 1:
            raise ValueError(f"PearsonAccumulator needs at least one row, got {n_rows}")
        self.n_rows = n_rows
        self.n_features = 0
        self.shift: NDArray[np.float64] | None = None
        self.sums = np.zeros(n_rows, dtype=np.float64)
        self.gram = np.zeros((n_rows, n_rows), dtype=np.float64)

    @classmethod
    def from_moments(cls, sums: NDArray[np.float64], gram: NDArray[np.float64],
                     shift: NDArray[np.float64], n_features: int) -> PearsonAccumulator:
        """An accumulator holding statistics computed elsewhere (e.g. on a GPU)."""
        acc = cls(len(sums))
        acc.sums = np.asarray(sums, dtype=np.float64)
        acc.gram = np.asarray(gram, dtype=np.float64)
        acc.shift = np.asarray(shift, dtype=np.float64)
        acc.n_features = int(n_features)
        return acc

    def update(self, chunk: ArrayLike) -> None:
        """Add the columns ``chunk`` (``n_rows x f``) to the running statistics."""
        block = np.asarray(chunk)
        if block.ndim != 2 or block.shape[0] != self.n_rows:
            raise ValueError(
                f"chunk must have shape ({self.n_rows}, f); got {block.shape}"
            )
        if block.shape[1] == 0:
            return
        block = block.astype(np.float64, copy=True)
        if self.shift is None:
            self.shift = block.mean(axis=1)
        block -= self.shift[:, None]
        self.n_features += block.shape[1]
        self.sums += block.sum(axis=1)
        self.gram += block @ block.T

    def covariance(self) -> NDArray[np.float64]:
        """Population covariance (divisor ``n_features``) between rows."""
        if self.n_features == 0:
            raise ValueError("PearsonAccumulator has seen no features")
        n = float(self.n_features)
        mean = self.sums / n
        return self.gram / n - np.outer(mean, mean)

    def correlation(self) -> NDArray[np.float64]:
        """Pearson correlation between rows; constant rows give NaN off the diagonal."""
        return correlation_from_moments(self.covariance())


def correlation_from_moments(cov: NDArray[np.float64]) -> NDArray[np.float64]:
    """Turn a covariance matrix into a correlation matrix with an exact unit diagonal."""
    var = np.clip(np.diag(cov).copy(), 0.0, None)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(std, std)
    corr = np.clip(corr, -1.0, 1.0)
    np.fill_diagonal(corr, np.where(std > 0, 1.0, np.nan))
    # Symmetrise exactly: both triangles are the same numbers.
    upper = np.triu_indices_from(corr, k=1)
    corr.T[upper] = corr[upper]
    return corr


def similarity_matrix(x: ArrayLike, chunk_features: int = 1 << 16) -> NDArray[np.float64]:
    """k x k Pearson correlation between the rows of ``x`` (k concepts x p features).

    This is the paper's ``W`` (word space) or ``I`` (image space). Raises if a row
    is constant, since its correlation with anything is undefined.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"similarity_matrix expects a 2-d array (k x p), got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"similarity_matrix needs at least 2 features per row, got {arr.shape[1]}")
    acc = PearsonAccumulator(arr.shape[0])
    for start in range(0, arr.shape[1], chunk_features):
        acc.update(arr[:, start : start + chunk_features])
    corr = acc.correlation()
    if np.isnan(corr).any():
        bad = np.flatnonzero(np.isnan(np.diag(corr)))
        raise ValueError(f"rows {bad.tolist()} are constant: their correlation is undefined")
    return corr
