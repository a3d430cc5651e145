"""Fused CPU kernel (numba) for the streamed Pearson statistics of CNN activations.

:class:`~emergence.stats.similarity.PearsonAccumulator` needs, for an ``n x F`` block of
activations (float32 from the network), the row sums and the Gram matrix of the rows
after a per-row shift, in float64. With numpy that is three passes and a BLAS call per
chunk (``astype`` copy, subtraction, sum, then ``syrk``); OpenBLAS's ``syrk`` reaches
less than half of the float64 peak for this shape (small n, huge F). Here it is one
parallel region per chunk: each thread owns a fixed share of the upper-triangular
pairs of 4-row blocks and walks the chunk's ``KC``-column blocks; for each pair it
runs a 4 x 4 register block (16 accumulators, vectorised along the columns) whose
first four rows were converted and shifted once into an L1-resident float64 buffer
and whose other four are read straight from the input, converted and shifted in
registers. Nothing else is written (no float64 copy of the chunk: it would not fit in
L2; measurements in bench/ and the README's Performance section).

Exactness: every product of two float32 values is exact in float64; the sums are
float64 with a fixed (machine-dependent, run-independent) association order, like a
BLAS, and each Gram entry and row sum is accumulated by one thread in column order, so
the result does not depend on the number of threads. Column blocks start at absolute
column offsets that are multiples of ``KC``, so feeding the same matrix in chunks of
any multiple of ``KC`` columns gives bit-identical statistics (the extraction's RAM
and disk stores rely on this).

Entry point: :class:`ShiftedMoments` (what ``PearsonAccumulator`` uses); ``KC`` is the
column block size chunked readers align to, :data:`emergence.stats._columns.CHUNK_COLUMNS`
(public as :data:`emergence.stats.similarity.CHUNK_COLUMNS`).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from emergence.stats._columns import CHUNK_COLUMNS

__all__ = ["KC", "ROW_BLOCK", "ShiftedMoments"]

KC = CHUNK_COLUMNS  # columns per cache block (4 rows of float64: 32 KiB, one L1)
ROW_BLOCK = 4
_FAST = {"reassoc", "contract"}  # vectorised reductions and FMA; NaN/inf semantics kept


def _padded_rows(n: int) -> int:
    """Rows rounded up to a multiple of the 4-row register block."""
    return -(-n // ROW_BLOCK) * ROW_BLOCK


def _block_pairs(n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Upper-triangular (i <= j) pairs of 4-row blocks for ``n`` rows."""
    bi, bj = np.triu_indices(_padded_rows(n) // ROW_BLOCK)
    return bi.astype(np.int64), bj.astype(np.int64)


@njit(inline="always", fastmath=_FAST)
def _convert(flat, rs, n, i0, c0, width, shift, out):  # pragma: no cover - compiled
    """out[a, :width] = float64(row i0 + a, columns c0 ...) - shift (zero past row n)."""
    for a in range(4):
        i = i0 + a
        o = out[a]
        if i < n:
            si = shift[i]
            row = flat[i * rs + c0 : i * rs + c0 + width]
            for k in range(width):
                o[k] = np.float64(row[k]) - si
        else:
            for k in range(width):
                o[k] = 0.0


@njit(inline="always", fastmath=_FAST)
def _mixed4(r0, r1, r2, r3, q0, q1, q2, q3, s0, s1, s2, s3, width):  # pragma: no cover
    """The 4 x 4 register block: sums over k of r_a[k] * (q_b[k] - s_b), the first four
    rows already float64 and shifted, the second four raw (float32 or float64) and
    shifted here (shifts of 0.0 for rows already shifted: the subtraction is exact)."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
    for k in range(width):
        x0 = r0[k]
        x1 = r1[k]
        x2 = r2[k]
        x3 = r3[k]
        y0 = np.float64(q0[k]) - s0
        y1 = np.float64(q1[k]) - s1
        y2 = np.float64(q2[k]) - s2
        y3 = np.float64(q3[k]) - s3
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


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def _chunk(flat, rs, n, f, column, shift, sums, gram, bi, bj, threads):  # pragma: no cover
    """Add columns 0 ... f of the n rows ``flat[i * rs : i * rs + f]`` (absolute column
    ``column`` onwards) to ``sums`` and the upper 4 x 4 blocks of ``gram``."""
    pairs = bi.shape[0]
    for t in prange(threads):
        xb = np.empty((4, KC))
        yb = np.empty((4, KC))
        p0 = t * pairs // threads
        p1 = (t + 1) * pairs // threads
        start = 0
        while start < f:
            # Blocks end on absolute multiples of KC, whatever the caller's chunking.
            width = min(f - start, KC - (column + start) % KC)
            current = -1
            for p in range(p0, p1):
                i0 = bi[p] * 4
                j0 = bj[p] * 4
                if bi[p] != current:
                    current = bi[p]
                    _convert(flat, rs, n, i0, start, width, shift, xb)
                if j0 == i0:  # each row's sum: by the one thread owning its diagonal block
                    for a in range(min(4, n - i0)):
                        s = 0.0
                        for k in range(width):
                            s += xb[a, k]
                        sums[i0 + a] += s
                if j0 + 4 <= n:
                    o = j0 * rs + start
                    r = _mixed4(xb[0], xb[1], xb[2], xb[3],
                                flat[o : o + width], flat[o + rs : o + rs + width],
                                flat[o + 2 * rs : o + 2 * rs + width],
                                flat[o + 3 * rs : o + 3 * rs + width],
                                shift[j0], shift[j0 + 1], shift[j0 + 2], shift[j0 + 3], width)
                else:  # the last block, with padding rows
                    _convert(flat, rs, n, j0, start, width, shift, yb)
                    r = _mixed4(xb[0], xb[1], xb[2], xb[3], yb[0], yb[1], yb[2], yb[3],
                                0.0, 0.0, 0.0, 0.0, width)
                for a in range(4):
                    for b in range(4):
                        gram[i0 + a, j0 + b] += r[a * 4 + b]
            start += width


def _flat_rows(x: NDArray[np.floating]) -> tuple[NDArray[np.floating], int]:
    """A 1-d contiguous view spanning the rows of ``x`` and the row stride in elements,
    so the kernel sees unit-stride rows (numba compiles strided 2-d views to gathers).
    Arrays whose columns are not adjacent in memory are copied."""
    n, f = x.shape
    size = x.itemsize
    rs = x.strides[0] // size if n > 1 else f
    if (f > 1 and x.strides[1] != size) or (n > 1 and (x.strides[0] % size or rs < f)):
        x = np.ascontiguousarray(x)
        rs = f
    flat = np.lib.stride_tricks.as_strided(x, shape=((n - 1) * rs + f,), strides=(size,),
                                           writeable=False)
    return flat, rs


def _accumulate(
    x: NDArray[np.floating],
    column: int,
    shift: NDArray[np.float64],
    sums: NDArray[np.float64],
    gram: NDArray[np.float64],
    pairs: tuple[NDArray[np.int64], NDArray[np.int64]],
) -> None:
    """Add the columns ``x`` (``n x f``, float32 or float64, any strides), which start at
    absolute column ``column`` of the matrix, to ``sums`` (n) and to the upper 4 x 4 blocks
    of ``gram`` (padded x padded), after subtracting ``shift`` (n) from each row.
    Blocks end at absolute multiples of ``KC``."""
    n, f = x.shape
    if f == 0:
        return
    flat, rs = _flat_rows(x)
    bi, bj = pairs
    _chunk(flat, rs, n, f, column, shift, sums, gram, bi, bj, numba.get_num_threads())


class ShiftedMoments:
    """Row sums and Gram matrix of ``x - shift[:, None]`` (float64) for an ``n x F`` matrix
    ``x`` fed as consecutive column chunks."""

    def __init__(self, shift: NDArray[np.float64]) -> None:
        self.shift = shift
        self.n_rows = n = len(shift)
        self.n_columns = 0
        self.sums = np.zeros(n, dtype=np.float64)
        padded = _padded_rows(n)
        self._blocks = np.zeros((padded, padded), dtype=np.float64)  # upper 4x4 blocks
        self._pairs = _block_pairs(n)

    def add(self, x: NDArray[np.floating]) -> None:
        """Add the next columns ``x`` (``n x f``, float32 or float64, any strides)."""
        _accumulate(x, self.n_columns, self.shift, self.sums, self._blocks, self._pairs)
        self.n_columns += x.shape[1]

    @property
    def gram(self) -> NDArray[np.float64]:
        """The Gram matrix (``n x n``, exactly symmetric) of the shifted rows."""
        upper = np.triu(self._blocks[: self.n_rows, : self.n_rows])
        return upper + np.triu(upper, 1).T
