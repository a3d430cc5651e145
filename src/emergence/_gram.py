"""Fused CPU kernel (numba) for the streamed Pearson statistics of CNN activations.

:class:`~emergence.similarity.PearsonAccumulator` needs, for an ``n x F`` block of
activations (float32 from the network), the row sums and the Gram matrix of the rows
after a per-row shift, in float64. With numpy that is three passes and a BLAS call per
chunk (``astype`` copy, subtraction, sum, then ``syrk``); OpenBLAS's ``syrk`` reaches
less than half of the float64 peak for this shape (small n, huge F). Here it is one
pass that converts, shifts and sums ``KC`` columns at a time into a cache-resident
float64 buffer, and one register-blocked pass (4 x 4 row blocks, 16 accumulators,
vectorised along the columns) over the upper-triangular block pairs.

Exactness: every product of two float32 values is exact in float64; the sums are
float64 with a fixed (machine-dependent, run-independent) association order, like a
BLAS. Column blocks start at absolute column offsets that are multiples of ``KC``, so
feeding the same matrix in chunks of any multiple of ``KC`` columns gives bit-identical
statistics (the extraction's RAM and disk stores rely on this).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

__all__ = ["KC", "ROW_BLOCK", "padded_rows", "block_pairs", "accumulate"]

KC = 1024  # columns per cache block (float64 buffer of 168 rows: 1.3 MB)
ROW_BLOCK = 4
_FAST = {"reassoc", "contract"}  # vectorised reductions and FMA; NaN/inf semantics kept


def padded_rows(n: int) -> int:
    """Rows rounded up to a multiple of the 4-row register block."""
    return -(-n // ROW_BLOCK) * ROW_BLOCK


def block_pairs(n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Upper-triangular (i <= j) pairs of 4-row blocks for ``n`` rows."""
    bi, bj = np.triu_indices(padded_rows(n) // ROW_BLOCK)
    return bi.astype(np.int64), bj.astype(np.int64)


@njit(cache=True, parallel=True, fastmath=_FAST)
def _center(x, c0, width, shift, out, sums):  # pragma: no cover - compiled
    """out[i, :width] = float64(x[i, c0:c0+width]) - shift[i]; sums[i] += their sum."""
    for i in prange(x.shape[0]):
        s = 0.0
        si = shift[i]
        for k in range(width):
            v = np.float64(x[i, c0 + k]) - si
            out[i, k] = v
            s += v
        sums[i] += s


@njit(inline="always", fastmath=_FAST)
def _block4(r0, r1, r2, r3, q0, q1, q2, q3, width):  # pragma: no cover - compiled
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
    for k in range(width):
        x0 = r0[k]
        x1 = r1[k]
        x2 = r2[k]
        x3 = r3[k]
        y0 = q0[k]
        y1 = q1[k]
        y2 = q2[k]
        y3 = q3[k]
        a00 += x0 * y0
        a01 += x0 * y1
        a02 += x0 * y2
        a03 += x0 * y3
        a10 += x1 * y0
        a11 += x1 * y1
        a12 += x1 * y2
        a13 += x1 * y3
        a20 += x2 * y0
        a21 += x2 * y1
        a22 += x2 * y2
        a23 += x2 * y3
        a30 += x3 * y0
        a31 += x3 * y1
        a32 += x3 * y2
        a33 += x3 * y3
    return (a00, a01, a02, a03, a10, a11, a12, a13,
            a20, a21, a22, a23, a30, a31, a32, a33)


@njit(cache=True, parallel=True, fastmath=_FAST)
def _pairs(xs, width, gram, bi, bj):  # pragma: no cover - compiled
    """gram[block i, block j] += xs[block i, :width] @ xs[block j, :width].T for i <= j."""
    for p in prange(bi.shape[0]):
        i0 = bi[p] * 4
        j0 = bj[p] * 4
        r = _block4(xs[i0], xs[i0 + 1], xs[i0 + 2], xs[i0 + 3],
                    xs[j0], xs[j0 + 1], xs[j0 + 2], xs[j0 + 3], width)
        for a in range(4):
            for b in range(4):
                gram[i0 + a, j0 + b] += r[a * 4 + b]


def accumulate(
    x: NDArray[np.floating],
    column: int,
    shift: NDArray[np.float64],
    sums: NDArray[np.float64],
    gram: NDArray[np.float64],
    buffer: NDArray[np.float64],
    pairs: tuple[NDArray[np.int64], NDArray[np.int64]],
) -> None:
    """Add the columns ``x`` (``n x f``, float32 or float64, any strides), which start at
    absolute column ``column`` of the matrix, to ``sums`` (n) and to the upper 4 x 4 blocks
    of ``gram`` (padded x padded), after subtracting ``shift`` (n) from each row.

    ``buffer`` is a zeroed ``padded x KC`` float64 scratch array (its padding rows stay
    zero). Blocks end at absolute multiples of ``KC``.
    """
    n, f = x.shape
    bi, bj = pairs
    start = 0
    while start < f:
        # Blocks end on absolute multiples of KC, whatever the caller's chunking.
        width = min(f - start, KC - (column + start) % KC)
        _center(x, start, width, shift, buffer, sums)
        _pairs(buffer, width, gram, bi, bj)
        start += width
