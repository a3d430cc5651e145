"""Similarity matrices: Pearson correlation between the rows of an embedding.

Similarity encoding (Anderson et al. 2016; Xu et al. 2016) replaces an embedding
``x`` (k concepts x p dimensions) by its k x k matrix of row-wise Pearson
correlations. For CNN layers with millions of features the matrix is built by
:class:`PearsonAccumulator`, which streams over feature chunks and keeps only
O(k^2) float64 state, so memory does not grow with the layer's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats._columns import CHUNK_COLUMNS

if TYPE_CHECKING:
    from emergence.stats._gram import ShiftedMoments

__all__ = ["CHUNK_COLUMNS", "SHIFT_COLUMNS", "PearsonAccumulator", "similarity_matrix",
           "correlation_from_moments"]

SHIFT_COLUMNS = 1024  # each row is shifted by the mean of (at most) its first 1,024 columns


class PearsonAccumulator:
    """Exact row-by-row Pearson statistics of an ``n_rows x F`` matrix, streamed over columns.

    Call :meth:`update` with consecutive column chunks (``n_rows x f`` blocks, any
    float dtype, any strides); :meth:`correlation` returns the ``n_rows x n_rows``
    Pearson matrix.

    All sums are float64. Each row is shifted by the mean of its first
    :data:`SHIFT_COLUMNS` columns (or of the first chunk, if narrower) before
    accumulating: Pearson correlation is invariant to a per-row shift, and the shift
    removes the cancellation that raw sums of large-mean rows (pixels, post-ReLU
    maps) would otherwise suffer in ``gram - n * mean mean^T``.

    The sums and the Gram matrix are computed by a fused numba kernel
    (:class:`emergence.stats._gram.ShiftedMoments`, faster than numpy's
    astype/subtract/``syrk``: see bench/); chunks whose widths are multiples of
    :data:`CHUNK_COLUMNS` give bit-identical statistics however the matrix is cut, and so do
    any memory layout and thread count.
    """

    def __init__(self, n_rows: int) -> None:
        if n_rows < 1:
            raise ValueError(f"PearsonAccumulator needs at least one row, got {n_rows}")
        self.n_rows = n_rows
        self.n_features = 0
        self.shift: NDArray[np.float64] | None = None
        self._sums = np.zeros(n_rows, dtype=np.float64)  # before update, or from_moments
        self._gram: NDArray[np.float64] | None = None  # set by from_moments
        self._moments: ShiftedMoments | None = None  # the kernel's state, from update

    @classmethod
    def from_moments(cls, sums: NDArray[np.float64], gram: NDArray[np.float64],
                     shift: NDArray[np.float64], n_features: int) -> PearsonAccumulator:
        """An accumulator holding statistics computed elsewhere (e.g. on a GPU)."""
        acc = cls(len(sums))
        acc._sums = np.asarray(sums, dtype=np.float64)
        acc._gram = np.asarray(gram, dtype=np.float64)
        acc.shift = np.asarray(shift, dtype=np.float64)
        acc.n_features = int(n_features)
        return acc

    @property
    def sums(self) -> NDArray[np.float64]:
        """Row sums of the shifted rows."""
        return self._moments.sums if self._moments is not None else self._sums

    @property
    def gram(self) -> NDArray[np.float64]:
        """Gram matrix (``n_rows x n_rows``, exactly symmetric) of the shifted rows."""
        if self._gram is not None:
            return self._gram
        if self._moments is None:
            return np.zeros((self.n_rows, self.n_rows), dtype=np.float64)
        return self._moments.gram

    def update(self, chunk: ArrayLike) -> None:
        """Add the columns ``chunk`` (``n_rows x f``) to the running statistics."""
        block = np.asarray(chunk)
        if block.ndim != 2 or block.shape[0] != self.n_rows:
            raise ValueError(
                f"chunk must have shape ({self.n_rows}, f); got {block.shape}"
            )
        if block.shape[1] == 0:
            return
        if self._gram is not None:
            raise ValueError("statistics from from_moments() cannot be updated")
        if block.dtype not in (np.float32, np.float64):
            block = block.astype(np.float64)
        if self._moments is None:
            from emergence.stats._gram import ShiftedMoments

            self.shift = block[:, :SHIFT_COLUMNS].astype(np.float64).mean(axis=1)
            self._moments = ShiftedMoments(self.shift)
        self._moments.add(block)
        self.n_features += block.shape[1]

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

    def centred_gram(self) -> NDArray[np.float64]:
        """``X_c X_cᵀ``: the Gram matrix of the rows ``x_i`` centred over the rows (each
        feature's mean over the rows subtracted), the linear kernel of CKA.

        From the shifted statistics (``y_i = x_i - shift_i``, ``G = Y Yᵀ``, ``s = Y 1``):
        with ``H`` the centring over rows, ``H X = H Y + (H shift) 1ᵀ``, so
        ``X_c X_cᵀ = H G H + u (H s)ᵀ + (H s) uᵀ + F u uᵀ`` where ``u = H shift``; every
        term is of centred quantities (no large-mean cancellation). Exactly symmetric.
        """
        if self.n_features == 0:
            raise ValueError("PearsonAccumulator has seen no features")
        g = self.gram
        col = g.mean(axis=0)
        hgh = g - col[None, :] - col[:, None] + col.mean()
        shift = self.shift if self.shift is not None else np.zeros(self.n_rows)
        u = shift - shift.mean()
        hs = self.sums - self.sums.mean()
        out = hgh + np.outer(u, hs) + np.outer(hs, u) + float(self.n_features) * np.outer(u, u)
        upper = np.triu_indices_from(out, k=1)
        out.T[upper] = out[upper]
        return out


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


def similarity_matrix(x: ArrayLike, chunk_features: int = 1 << 16,
                      labels: Sequence[str] | None = None) -> NDArray[np.float64]:
    """k x k Pearson correlation between the rows of ``x`` (k concepts x p features).

    This is the paper's ``W`` (word space) or ``I`` (image space). Raises
    ``ValueError`` if a row has non-finite values (nan, inf) or is constant, since its
    correlation with anything is undefined; the message names the rows by ``labels``
    (e.g. ``"n02084071 (dog)"``), by index if none are given.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"similarity_matrix expects a 2-d array (k x p), got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"similarity_matrix needs at least 2 features per row, got {arr.shape[1]}")
    if labels is not None and len(labels) != arr.shape[0]:
        raise ValueError(f"{len(labels)} labels for {arr.shape[0]} rows")

    def named(rows: NDArray[np.intp]) -> str:
        if labels is None:
            return f"rows {rows.tolist()}"
        shown = ", ".join(str(labels[i]) for i in rows[:5])
        return shown + (f" (+{rows.size - 5} more)" if rows.size > 5 else "")

    nonfinite = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if nonfinite.size:
        raise ValueError(f"{named(nonfinite)}: non-finite values (nan or inf): "
                         "the correlation is undefined")
    acc = PearsonAccumulator(arr.shape[0])
    for start in range(0, arr.shape[1], chunk_features):
        acc.update(arr[:, start : start + chunk_features])
    corr = acc.correlation()
    if np.isnan(corr).any():
        bad = np.flatnonzero(np.isnan(np.diag(corr)))
        raise ValueError(f"{named(bad)}: constant (all values equal): "
                         "the correlation is undefined")
    return corr
