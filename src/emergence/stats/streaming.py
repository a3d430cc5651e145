"""Column statistics of a table of samples read block by block, equal bit for bit to numpy
on the whole table.

The permutation null of a network x word model is a table
of n samples (rows, in sample order) by C columns (groups x measures x layers), stored in
shards (:mod:`emergence.formats.nulls`). At a large n the table does not fit in memory; the
aggregation steps read it in blocks of rows instead, in one or more passes. A table is
given as ``blocks``: a callable returning a fresh iterator over its rows in order, as
(b, C) float64 arrays (b may differ from block to block; C may not).

What these functions return is what numpy returns on the whole (n, C) table:

* :func:`column_sums`: ``table.sum(axis=0)``. numpy adds the rows of an (n, L) array one
  after the other when L >= 2 (the reduction's inner loop runs along a row) and sums a
  single column pairwise (its C loop, blocks of 128 with 8 accumulators). ``width`` is the
  L of the array numpy was given, which decides which of the two; both are reproduced.
* :func:`mean_sd`: ``table.mean(axis=0)`` and ``table.std(axis=0, ddof=ddof)``, numpy's
  two-pass formulas (sum / n; sqrt(sum((x - mean)²) / (n - ddof))), in two passes.
* :func:`quantiles`: per column ``np.quantile(finite values, q)`` (linear interpolation),
  NaN for a column without finite values. The order statistics are selected exactly: a
  pass counts the finite values, then passes histogram an order-preserving integer key of
  every value 8 bits at a time, narrowing each wanted rank to one bucket, until the bucket
  fits in what is left of ``budget`` and is gathered and sorted. Memory: ``budget`` values
  at most, whatever n (in most tables every column is gathered in the first pass).
  ``-0.0`` and ``0.0`` are one value (as for numpy's sort, which may return either).

Counting statistics (p-values, ``#{d <= 0}``) are exact in any order and need no help.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["Blocks", "column_sums", "mean_sd", "quantiles"]

Blocks = Callable[[], Iterable[NDArray[np.float64]]]

_PW_BLOCK = 128  # numpy's PW_BLOCKSIZE: pairwise summation sums blocks of this size directly
_UNROLL = 8  # numpy's pairwise leaves keep 8 partial sums
GATHER_BUDGET = 1 << 22
"""Values held at once by :func:`quantiles` (32 MiB of keys) across all columns."""


def _rows(blocks: Blocks, n_columns: int) -> Iterator[NDArray[np.float64]]:
    for block in blocks():
        arr = np.asarray(block, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != n_columns:
            raise ValueError(f"expected blocks of {n_columns} columns, got shape {arr.shape}")
        if arr.shape[0]:
            yield arr


def _sequential_sum(blocks: Blocks, n_columns: int) -> NDArray[np.float64]:
    """Rows added one after the other, starting from 0.0 (numpy on an (n, L >= 2) array).

    Each block is reduced with the running total as its first row: numpy then adds row
    after row, as it does on the whole array (two or more columns; one is padded)."""
    acc = np.zeros(max(n_columns, 2))
    for block in _rows(blocks, n_columns):
        if n_columns == 1:
            block = np.hstack([block, np.zeros_like(block)])
        acc = np.add.reduce(np.vstack([acc[None, :], block]), axis=0)
    return acc[:n_columns]


def _pairwise(m: int) -> Generator[int, NDArray[np.float64], NDArray[np.float64]]:
    """numpy's pairwise sum of the next ``m`` rows (per column): yields how many rows it
    needs next, is sent them, returns the sum."""
    if m <= _PW_BLOCK:
        x = yield m
        if m < _UNROLL:
            res = np.full(x.shape[1], -0.0)
            for row in x:
                res = res + row
            return res
        whole = m - m % _UNROLL
        r = x[:_UNROLL].copy()
        for i in range(_UNROLL, whole, _UNROLL):
            r += x[i:i + _UNROLL]
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for row in x[whole:]:
            res = res + row
        return res
    half = m // 2
    half -= half % _UNROLL
    left = yield from _pairwise(half)
    right = yield from _pairwise(m - half)
    return left + right


def _pairwise_sum(blocks: Blocks, n_columns: int, n: int) -> NDArray[np.float64]:
    """Each column summed as numpy sums one contiguous column of ``n`` values: 0.0 plus the
    pairwise sum of all of them."""
    total = np.zeros(n_columns)
    if n == 0:
        return total
    tree = _pairwise(n)
    need = next(tree)
    buffer: list[NDArray[np.float64]] = []
    held = 0
    for block in _rows(blocks, n_columns):
        buffer.append(block)
        held += block.shape[0]
        while held >= need:
            data = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
            try:
                need_next = tree.send(data[:need])
            except StopIteration as done:
                return total + done.value
            buffer, held, need = [data[need:]], held - need, need_next
    raise ValueError(f"the blocks hold fewer than the {n} rows expected")


def column_sums(blocks: Blocks, n_columns: int, n: int, *, width: int) -> NDArray[np.float64]:
    """``table.sum(axis=0)`` as numpy computes it on the (n, ``width``) arrays the table's
    columns come from (pairwise for ``width`` 1, row after row otherwise)."""
    if width == 1:
        return _pairwise_sum(blocks, n_columns, n)
    return _sequential_sum(blocks, n_columns)


def mean_sd(blocks: Blocks, n_columns: int, n: int, *, ddof: int, width: int
            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``table.mean(axis=0)`` and ``table.std(axis=0, ddof=ddof)`` (two passes)."""
    mean = column_sums(blocks, n_columns, n, width=width) / n

    def deviations() -> Iterator[NDArray[np.float64]]:
        for block in _rows(blocks, n_columns):
            yield np.square(block - mean[None, :])

    squares = column_sums(deviations, n_columns, n, width=width)
    return mean, np.sqrt(squares / max(n - ddof, 0))


def _keys(values: NDArray[np.float64]) -> NDArray[np.uint64]:
    """An unsigned integer key per finite value, in the values' order (``-0.0`` as ``0.0``)."""
    bits = np.ascontiguousarray(values + 0.0).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def _value(key: np.uint64) -> float:
    bits = np.uint64(key)
    raw = bits & ~np.uint64(1 << 63) if bits >> np.uint64(63) else ~bits
    return float(np.array([raw], dtype=np.uint64).view(np.float64)[0])


class _Bucket:
    """The finite values of one column whose keys share their top ``64 - shift`` bits
    (``prefix``): ``below`` values of the column lie below them, ``size`` within; it holds
    the order statistics ``ranks`` (0-based among the column's finite values)."""

    def __init__(self, column: int, ranks: list[int], size: int, prefix: int = 0,
                 shift: int = 64, below: int = 0) -> None:
        self.column, self.ranks, self.size = column, ranks, size
        self.prefix, self.shift, self.below = prefix, shift, below
        self.hist = np.zeros(256, dtype=np.int64)
        self.gathered: list[NDArray[np.uint64]] = []

    def within(self, keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
        if self.shift == 64:
            return keys
        return keys[(keys >> np.uint64(self.shift)) == np.uint64(self.prefix)]

    def update(self, keys: NDArray[np.uint64], gather: bool) -> None:
        inside = self.within(keys)
        if gather:
            self.gathered.append(inside)
        else:
            digit = (inside >> np.uint64(self.shift - 8)) & np.uint64(0xFF)
            self.hist += np.bincount(digit.astype(np.intp), minlength=256)

    def select(self, found: dict[tuple[int, int], float]) -> None:
        """After a gathering pass: the value at each rank."""
        keys = np.sort(np.concatenate(self.gathered))
        for r in self.ranks:
            found[self.column, r] = _value(keys[r - self.below])

    def narrow(self, found: dict[tuple[int, int], float]) -> list[_Bucket]:
        """After a histogram pass: the buckets one byte narrower that hold the ranks (a
        bucket of one key gives its value)."""
        cum = np.cumsum(self.hist)
        children: dict[int, _Bucket] = {}
        for r in self.ranks:
            b = int(np.searchsorted(cum, r - self.below, side="right"))
            if b not in children:
                children[b] = _Bucket(self.column, [], int(self.hist[b]),
                                      (self.prefix << 8) | b, self.shift - 8,
                                      self.below + (int(cum[b - 1]) if b else 0))
            children[b].ranks.append(r)
        out = []
        for child in children.values():
            if child.shift == 0:
                for r in child.ranks:
                    found[self.column, r] = _value(np.uint64(child.prefix))
            else:
                out.append(child)
        return out


def quantiles(blocks: Blocks, n_columns: int, q: Sequence[float], *,
              budget: int = GATHER_BUDGET, finite: NDArray[np.int64] | None = None
              ) -> NDArray[np.float64]:
    """(len(q), C): per column ``np.quantile`` of its finite values at ``q`` (NaN without
    finite values), selecting the order statistics in passes over ``blocks``: a bucket is
    gathered (and sorted) when it fits in what is left of ``budget`` values in this pass,
    else narrowed by a histogram of its keys' next byte. ``finite``: the columns' counts
    of finite values when the caller has counted them (one pass less)."""
    levels = np.asarray(q, dtype=np.float64)
    if finite is None:
        finite = np.zeros(n_columns, dtype=np.int64)
        for block in _rows(blocks, n_columns):
            finite += np.isfinite(block).sum(axis=0)
    out = np.full((levels.size, n_columns), np.nan)
    plan: list[tuple[int, int, int, int, float]] = []  # (level, column, prev, next, gamma)
    pending: list[_Bucket] = []
    for c in np.flatnonzero(finite):
        n = int(finite[c])
        virtual = (n - 1) * levels  # numpy's linear method, as np.quantile computes it
        ranks: set[int] = set()
        for i, v in enumerate(virtual):
            if v >= n - 1:  # numpy takes the maximum
                prev = nxt = n - 1
                gamma = 0.0
            else:
                prev = int(np.floor(v))
                nxt, gamma = prev + 1, float(v - np.floor(v))
            plan.append((i, int(c), prev, nxt, gamma))
            ranks |= {prev, nxt}
        pending.append(_Bucket(int(c), sorted(ranks), n))
    found: dict[tuple[int, int], float] = {}
    while pending:
        room, gather = budget, set()
        for bucket in sorted(pending, key=lambda b: b.size):
            if bucket.size <= room:
                gather.add(id(bucket))
                room -= bucket.size
        by_column: dict[int, list[_Bucket]] = {}
        for bucket in pending:
            by_column.setdefault(bucket.column, []).append(bucket)
        for block in _rows(blocks, n_columns):
            for c, buckets in by_column.items():
                col = block[:, c]
                keys = _keys(col[np.isfinite(col)])
                for bucket in buckets:
                    bucket.update(keys, id(bucket) in gather)
        narrower: list[_Bucket] = []
        for bucket in pending:
            if id(bucket) in gather:
                bucket.select(found)
            else:
                narrower += bucket.narrow(found)
        pending = narrower
    # numpy's interpolation between the two neighbours, by numpy itself: the linear
    # quantile of the column [a, b] at gamma is exactly its lerp(a, b, gamma) (one call per
    # distinct gamma, for every column that has it).
    by_gamma: dict[float, list[tuple[int, int, int, int]]] = {}
    for i, c, prev, nxt, gamma in plan:
        by_gamma.setdefault(gamma, []).append((i, c, prev, nxt))
    for gamma, cells in by_gamma.items():
        pairs = np.array([[found[c, prev] for _, c, prev, _ in cells],
                          [found[c, nxt] for _, c, _, nxt in cells]])
        values = np.quantile(pairs, np.array([gamma]), axis=0)[0]
        for (i, c, _, _), v in zip(cells, values, strict=True):
            out[i, c] = v
    return out
