"""The vision x language grid of one network and one layered word model.

A layered word model (a ``transformers`` model, :mod:`emergence.sources.words.transformers`)
is scored in each selected layer as its own word space ``lm.<layer>``: a significance table
per (network, word space) with one row per vision layer (and group). The grid puts these
tables side by side, one row per (language layer, group, vision layer) cell, every column
of ``significance.tsv`` kept (each measure, its permutation p, its per-layer family-wise p,
its interval), and adds per measure

``<prefix>p_value_fwe_grid``
    the family-wise p over the **whole grid**: the max statistic over every (vision layer x
    language layer) cell that can be scored, per permutation, ``+1`` corrected
    (:func:`~emergence.stats.permutation.plus_one_p`), per group and for the mean over
    groups. It is valid because permutation ``i`` shuffles the image space with the same
    draw in every cell: it is seeded by ``(seed, i)`` and every layer of a word model keeps
    the same ``k`` concepts (:func:`check_same_permutations` refuses shards that differ).

The null shards of the language layers are read together, a block of permutations at a
time (never all in memory, as :mod:`emergence.tables.null_summary`): the counts are integers, so the
p-values are the same bits for every block size and shard count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.nulls import BLOCK_BYTES, Shards, shard_attrs
from emergence.stats.measures import MEASURES, column_prefix
from emergence.stats.permutation import plus_one_p

__all__ = ["MEAN", "check_same_permutations", "grid_columns", "grid_p_values", "grid_rows"]

MEAN = "mean"
_LANG = ["language_layer", "language_layer_index"]


def grid_columns(significance: Sequence[str], measures: Sequence[str]) -> list[str]:
    """The grid's columns: the language layer, ``significance.tsv``'s columns, then
    ``<prefix>p_value_fwe_grid`` per measure."""
    return [*_LANG, *significance,
            *(column_prefix(m) + "p_value_fwe_grid" for m in MEASURES if m in measures)]


def check_same_permutations(shards: Mapping[str, Sequence[str]]) -> None:
    """One line where the null shards of two language layers were not drawn from the same
    permutations (another seed, k, concepts or count): their grid maximum would mix draws."""
    first: tuple[str, dict[str, Any]] | None = None
    for space, paths in shards.items():
        attrs = shard_attrs(list(paths))
        here = {key: _plain(attrs.get(key)) for key in ("seed", "k", "concepts")}
        if first is None:
            first = (space, here)
        elif here != first[1]:
            diff = [key for key in here if here[key] != first[1][key]]
            raise ValueError(f"{paths[0]}: drawn with another {', '.join(diff)} than the "
                             f"shards of {first[0]} ({shards[first[0]][0]}); the grid's "
                             "family-wise p needs the same permutations in every cell: delete "
                             "the older shards so that they are drawn again")


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a comparable Python value."""
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    return value.item() if isinstance(value, np.generic) else value


def grid_p_values(observed: Mapping[tuple[str, str], NDArray[np.float64]],
                  sources: Sequence[Shards], *, block_bytes: int = BLOCK_BYTES
                  ) -> dict[tuple[str, str], NDArray[np.float64]]:
    """Per ``(series, measure)`` key of ``observed`` (each ``(language layers, vision
    layers)``): the family-wise p over the grid, from each language layer's null shards
    (``series``: a group, or :data:`MEAN`, the mean over the groups of the same permutation
    as ``np.mean`` gives it). A cell whose observed value or any null value is NaN is not
    tested (NaN) and is left out of the maximum. Two passes over the shards, ``block_bytes``
    of samples at a time, every key at once."""
    ranges = _ranges(sources, block_bytes)
    undefined = {key: np.isnan(np.asarray(obs, dtype=np.float64))
                 for key, obs in observed.items()}
    for lo, hi in ranges:
        for j, src in enumerate(sources):
            block = src.read(lo, hi)
            for (series, measure), und in undefined.items():
                und[j] |= np.isnan(_null(block, series, measure)).any(axis=0)
    counts = {key: np.zeros(obs.shape, dtype=np.int64) for key, obs in observed.items()}
    for lo, hi in ranges:
        peak = {key: np.full(hi - lo, -np.inf) for key in observed}
        for j, src in enumerate(sources):
            block = src.read(lo, hi)
            for (series, measure), und in undefined.items():
                ok = ~und[j]
                if ok.any():
                    null = _null(block, series, measure)[:, ok]
                    peak[series, measure] = np.maximum(peak[series, measure], null.max(axis=1))
        for key, obs in observed.items():
            if not undefined[key].all():
                counts[key] += (peak[key][:, None, None] >= obs[None, :, :]).sum(axis=0)
    n = sources[0].n
    return {key: np.where(undefined[key], np.nan, plus_one_p(counts[key], n))
            for key in observed}


def _null(block: Mapping[str, Mapping[str, NDArray[np.float64]]], series: str,
          measure: str) -> NDArray[np.float64]:
    if series == MEAN:
        return np.mean([block[g][measure] for g in block], axis=0)
    return block[series][measure]


def _ranges(sources: Sequence[Shards], block_bytes: int) -> list[tuple[int, int]]:
    n = sources[0].n
    if any(s.n != n for s in sources):
        raise ValueError(f"the language layers' nulls hold {sorted({s.n for s in sources})} "
                         "permutations; they must hold the same")
    step = max(1, block_bytes // max(sum(s.row_bytes() for s in sources), 1))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def grid_rows(tables: Mapping[str, Sequence[Mapping[str, str]]],
              shards: Mapping[str, Sequence[str]], measures: Sequence[str], *,
              block_bytes: int = BLOCK_BYTES) -> list[dict[str, Any]]:
    """The grid's rows (module doc) from each language layer's ``significance.tsv`` rows
    (``tables``: word space -> rows, in layer order) and null shard paths (``shards``, the
    same keys; empty without permutations: the grid p is NaN)."""
    spaces = list(tables)
    first = tables[spaces[0]]
    series = list(dict.fromkeys(r["group"] for r in first))
    layers = list(dict.fromkeys(r["layer"] for r in first))
    for space in spaces:
        if [(r["group"], r["layer"]) for r in tables[space]] != \
                [(r["group"], r["layer"]) for r in first]:
            raise ValueError(f"word space {space}: its significance table has other groups "
                             f"or vision layers than {spaces[0]}'s")
    ms = [m for m in MEASURES if m in measures]
    index = {sp: {(r["group"], r["layer"]): r for r in tables[sp]} for sp in spaces}
    sources = [Shards(list(shards[s])) for s in spaces] if all(shards.get(s) for s in spaces) \
        else []
    if sources:
        check_same_permutations(shards)
    observed = {(s, m): np.array([[float(index[sp][s, lay][m]) for lay in layers]
                                  for sp in spaces]) for s in series for m in ms}
    grid = (grid_p_values(observed, sources, block_bytes=block_bytes) if sources
            else {key: np.full(obs.shape, np.nan) for key, obs in observed.items()})
    rows = []
    for j, space in enumerate(spaces):
        for r in tables[space]:
            row: dict[str, Any] = {"language_layer": space.partition(".")[2] or space,
                                   "language_layer_index": j, **r}
            i = layers.index(r["layer"])
            for m in ms:
                row[column_prefix(m) + "p_value_fwe_grid"] = float(grid[r["group"], m][j, i])
            rows.append(row)
    return rows
