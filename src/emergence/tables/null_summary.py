"""What the significance table takes from the resampling shards, read block by block.

The permutation null of one network x word model is a table of n samples by (groups +
their mean) x measures x layers. :func:`null_summary` computes the significance table's
permutation columns from it in passes over blocks of rows
(:class:`~emergence.formats.nulls.Shards`), never holding every shard:

* ``p_value``: counts of ``null >= observed`` per column (:func:`~emergence.stats.
  permutation.plus_one_p`); NaN where the observed value or any null value is NaN;
* ``p_value_fwe``: a second pass counts ``max over the layers that can be scored >=
  observed`` per permutation (the max statistic of
  :func:`~emergence.stats.permutation.family_wise_p_values`);
* ``null_mean``, ``null_sd``: numpy's mean and sample SD in numpy's summation order
  (:func:`~emergence.stats.streaming.mean_sd`);
* ``null_low``, ``null_high``: numpy's linear quantiles of the finite values
  (:func:`~emergence.stats.streaming.quantiles`, exact order statistics).

``block_bytes`` bounds the samples read at once, ``budget`` the values the quantile
selection gathers (tests lower both to force many blocks and passes).

Each equals, bit for bit, the same statistic on the whole table in memory (what the
significance step computed before it streamed); the ``mean`` series is the mean over
groups of the same sample index, as ``np.mean`` over the groups' arrays gives it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from emergence.formats.nulls import BLOCK_BYTES, Samples
from emergence.stats.comparisons import interval_levels
from emergence.stats.permutation import plus_one_p
from emergence.stats.streaming import GATHER_BUDGET, mean_sd, quantiles

__all__ = ["MEAN", "null_summary"]

MEAN = "mean"

Series = dict[str, dict[str, NDArray[np.float64]]]  # {series: {measure: (L,)}}


class _Table:
    """The (n, measures x series x layers) table of ``source``: per measure, each group's
    columns, then those of the mean over groups."""

    def __init__(self, source: Samples, groups: Sequence[str], measures: Sequence[str],
                 n_layers: int, block_bytes: int) -> None:
        self.source, self.groups, self.measures = source, list(groups), list(measures)
        self.series = [*self.groups, MEAN]
        self.n_layers, self.block_bytes, self.n = n_layers, block_bytes, source.n
        self.width = len(self.measures) * len(self.series) * n_layers
        self.kept: NDArray[np.float64] | None = None

    def span(self, m: str, s: str) -> slice:
        """The columns of measure ``m``, series ``s``."""
        i = self.measures.index(m) * len(self.series) + self.series.index(s)
        return slice(i * self.n_layers, (i + 1) * self.n_layers)

    def __call__(self) -> Iterator[NDArray[np.float64]]:
        """A pass over the table (made once and kept when it is one block)."""
        if self.kept is not None:
            yield self.kept
            return
        ranges = list(self.source.blocks(self.block_bytes))
        for lo, hi in ranges:
            block = self.source.read(lo, hi)
            cols = []
            for m in self.measures:
                per_group = [block[g][m] for g in self.groups]
                cols += [*per_group, np.mean(per_group, axis=0)]
            table = np.hstack(cols)
            if len(ranges) == 1:
                self.kept = table
            yield table

    def flat(self, values: Mapping[str, Mapping[str, NDArray[np.float64]]]
             ) -> NDArray[np.float64]:
        """{series: {measure: (L,)}} as one row of the table's columns."""
        return np.concatenate([values[s][m] for m in self.measures for s in self.series])

    def split(self, row: NDArray[np.float64]) -> Series:
        return {s: {m: row[self.span(m, s)] for m in self.measures} for s in self.series}


def null_summary(source: Samples, observed: Mapping[str, Mapping[str, NDArray[np.float64]]],
                 groups: Sequence[str], measures: Sequence[str], confidence: float, *,
                 block_bytes: int = BLOCK_BYTES, budget: int = GATHER_BUDGET
                 ) -> dict[str, dict[str, Series]]:
    """{column: {series: {measure: (L,)}}} of the permutation null against ``observed``
    ({series: {measure: (L,)}}, ``mean`` included): p_value, p_value_fwe, null_mean,
    null_sd, null_low, null_high; the last four NaN where the p-value is."""
    n_layers = len(next(iter(observed[groups[0]].values())))
    table = _Table(source, groups, measures, n_layers, block_bytes)
    n = table.n
    obs = table.flat(observed)
    at_least = np.zeros(table.width, dtype=np.int64)
    has_nan = np.zeros(table.width, dtype=bool)
    with np.errstate(invalid="ignore"):
        for block in table():
            at_least += (block >= obs[None, :]).sum(axis=0)
            has_nan |= np.isnan(block).any(axis=0)
    undefined = np.isnan(obs) | has_nan
    p = plus_one_p(at_least, n)
    p[undefined] = np.nan

    # The max statistic over the layers that can be scored, per measure and series.
    spans = [table.span(m, s) for m in table.measures for s in table.series]
    peak_at_least = np.zeros(table.width, dtype=np.int64)
    for block in table():
        for cols in spans:
            ok = ~undefined[cols]
            if ok.any():
                peak = block[:, cols][:, ok].max(axis=1)
                idx = np.arange(cols.start, cols.stop)[ok]
                peak_at_least[idx] += (peak[:, None] >= obs[idx][None, :]).sum(axis=0)
    fwe = np.where(undefined, np.nan, plus_one_p(peak_at_least, n))

    mean, sd = mean_sd(table, table.width, n, ddof=1 if n > 1 else 0, width=n_layers)
    low, high = quantiles(table, table.width, interval_levels(confidence), budget=budget)
    columns = {"p_value": p, "p_value_fwe": fwe, "null_mean": mean, "null_sd": sd,
               "null_low": low, "null_high": high}
    for c in ("null_mean", "null_sd", "null_low", "null_high"):
        columns[c] = np.where(undefined, np.nan, columns[c])
    return {c: table.split(v) for c, v in columns.items()}

