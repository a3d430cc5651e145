"""Resampling shards: one HDF5 file per shard of permutations (the null) or of jackknife
samples (or bootstrap samples, :func:`emergence.stats.bootstrap.bootstrap_distribution`),
writer and reader.

Layout of ``null/shard-<i>-of-<n>.h5`` (the ``permutations`` rule) and
``jackknife/shard-<i>-of-<n>.h5`` (the ``jackknife`` rule)::

    attrs   what, kind (permutation | jackknife | bootstrap), network, model, word_model,
            seed, start, stop, batch_size, rsa_method, measures, layer_names, k, concepts
            (+ mutual_knn_k when mutual_knn is a measure; + n_pairs for the jackknife)
    groups/<group>/<measure>    (stop - start, L) float64   the measure per sample
    groups/<group>/index        (stop - start,)   int64     the sample indices

``<measure>`` is each of ``measures`` (:data:`emergence.stats.measures.MEASURES`, and for
the jackknife the companions of :data:`emergence.stats.jackknife.COMPANIONS`). A layer
that cannot be scored has a NaN column. :class:`Shards` reads the shards of one network x
word model as one table in sample order, a block of rows at a time (the ``significance``
and ``comparisons`` rules, which never hold every permutation shard at once);
:func:`read_nulls` concatenates them whole (the jackknife's 1 + k + pairs samples);
:func:`sweep_stale_shards` removes the files of another shard count.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from emergence.io import atomic_h5, open_h5

__all__ = ["WHAT", "ArraySamples", "Samples", "Shards", "read_nulls", "samples_of",
           "shard_attrs", "shard_concepts", "sweep_stale_shards", "write_null_shard"]

_log = logging.getLogger(__name__)

BLOCK_BYTES = 256 << 20
"""Bytes of samples the aggregation reads at once (:meth:`Shards.blocks`): 1,000 samples of
the paper's largest network x word model (49 layers x 5 groups x 5 measures) are 10 MB."""

WHAT = {"permutation": "permutation null of the measures (image space shuffled)",
        "bootstrap": "bootstrap distribution of the measures (concepts resampled with "
                     "replacement; a copy of a concept counts as the concept itself)",
        "jackknife": "jackknife samples of the measures (nothing, one concept, then pairs of "
                     "concepts deleted)"}


def write_null_shard(path: str | os.PathLike[str], *, network: str, model: str,
                     word_model: str, seed: int, start: int, stop: int, batch_size: int,
                     rsa_method: str, layer_names: Sequence[str], k: int,
                     nulls: Iterable[tuple[str, Mapping[str, NDArray[np.generic]]]],
                     measures: Sequence[str] = ("two_vs_two", "rsa"),
                     kind: str = "permutation", concepts: Sequence[str] = (),
                     knn_k: int | None = None, n_pairs: int | None = None) -> None:
    """Write samples ``start .. stop-1``: ``nulls`` yields ``(group, values)`` with
    ``values`` as :func:`emergence.stats.permutation.permutation_null` (or
    :func:`emergence.stats.bootstrap.bootstrap_distribution`) returns it. It is consumed
    while the file is open (one group's values in memory at a time); the file appears at
    ``path`` only when complete."""
    attrs = {"what": WHAT[kind], "kind": kind, "network": network, "model": model,
             "word_model": word_model, "seed": seed, "start": start, "stop": stop,
             "batch_size": batch_size, "rsa_method": rsa_method, "measures": list(measures),
             "layer_names": layer_names, "k": k, "concepts": list(concepts)}
    if knn_k is not None and "mutual_knn" in measures:
        attrs["mutual_knn_k"] = knn_k
    if n_pairs is not None:
        attrs["n_pairs"] = n_pairs
    with atomic_h5(path, attrs) as f:
        for group, null in nulls:
            grp = f.create_group(f"groups/{group}")
            for m in measures:
                grp.create_dataset(m, data=null[m])
            grp.create_dataset("index", data=null["index"])
            del null  # freed before the next group's values are drawn


class Shards:
    """The shard files of one network x word model as one table of samples, in sample order.

    Opening checks every file (readable, holds ``groups``, the same groups, measures and
    layers as the first, and shards that follow one another without a gap); the samples
    are read only by :meth:`read`, a range of rows of every group and measure at a time.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        starts: list[tuple[int, int, Path]] = []
        layout: dict[str, dict[str, int]] | None = None
        for p in paths:
            with open_h5(p, "permutation shard") as f:
                starts.append((int(f.attrs["start"]), int(f.attrs["stop"]), Path(p)))
                here = {g: {m: int(ds.shape[1]) for m, ds in grp.items() if m != "index"}
                        for g, grp in f["groups"].items()}
            if layout is not None and here != layout:
                raise ValueError(f"{p}: holds other groups, measures or layers than "
                                 f"{starts[0][2]}; delete the shards so that they are drawn "
                                 "again")
            layout = here
        self.files: list[tuple[int, int, Path]] = []
        expected = 0
        for start, stop, p in sorted(starts, key=lambda t: t[0]):
            if start != expected:
                raise ValueError(f"{p}: shard starts at permutation {start}, expected {expected}")
            self.files.append((start, stop, p))
            expected = stop
        self.n = expected
        self.layout = layout or {}
        self.groups = list(self.layout)

    def read(self, lo: int, hi: int) -> dict[str, dict[str, NDArray[np.float64]]]:
        """Samples ``lo .. hi-1``: group -> {measure: (hi - lo, L)}."""
        parts: dict[str, dict[str, list[NDArray[np.float64]]]] = {
            g: {m: [] for m in ms} for g, ms in self.layout.items()}
        for start, stop, p in self.files:
            a, b = max(lo, start), min(hi, stop)
            if a >= b:
                continue
            with open_h5(p, "permutation shard") as f:
                for g, ms in self.layout.items():
                    for m in ms:
                        parts[g][m].append(f[f"groups/{g}/{m}"][a - start:b - start])
        return {g: {m: np.concatenate(v) if v else np.empty((0, self.layout[g][m]))
                    for m, v in d.items()} for g, d in parts.items()}

    def row_bytes(self) -> int:
        return 8 * sum(sum(ms.values()) for ms in self.layout.values())

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, int]]:
        """Row ranges of about ``block_bytes`` each (whole shards when smaller) covering
        every sample in order."""
        step = max(1, block_bytes // max(self.row_bytes(), 1))
        for start, stop, _ in self.files:
            for lo in range(start, stop, step):
                yield lo, min(stop, lo + step)


class ArraySamples:
    """Samples already in memory (group -> {measure: (n, L)}, every array n rows), read as
    :class:`Shards` reads its files: one block."""

    def __init__(self, arrays: Mapping[str, Mapping[str, NDArray[np.float64]]]) -> None:
        self.arrays = {g: {m: np.asarray(a, dtype=np.float64) for m, a in d.items()}
                       for g, d in arrays.items()}
        lengths = {a.shape[0] for d in self.arrays.values() for a in d.values()}
        if len(lengths) > 1:
            raise ValueError(f"samples of different lengths {sorted(lengths)}: every group "
                             "and measure must hold the same samples")
        self.n = lengths.pop() if lengths else 0
        self.layout = {g: {m: int(a.shape[1]) if a.ndim == 2 else -1 for m, a in d.items()}
                       for g, d in self.arrays.items()}
        self.groups = list(self.layout)

    def read(self, lo: int, hi: int) -> dict[str, dict[str, NDArray[np.float64]]]:
        return {g: {m: a[lo:hi] for m, a in d.items()} for g, d in self.arrays.items()}

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, int]]:
        if self.n:
            yield 0, self.n


Samples = Shards | ArraySamples


def samples_of(source: Samples | Mapping[str, Mapping[str, NDArray[np.float64]]] | None
               ) -> Samples | None:
    """``source`` as :class:`Shards` or :class:`ArraySamples` (None for none or empty)."""
    if source is None or isinstance(source, Shards | ArraySamples):
        return source
    return ArraySamples(source) if source else None


def read_nulls(
    paths: Sequence[str | os.PathLike[str]],
) -> dict[str, dict[str, NDArray[np.float64]]]:
    """Concatenate shard files in sample order: group -> {measure: (n, L)} (all in memory:
    the aggregation rules read :class:`Shards` block by block instead)."""
    shards = Shards(paths)
    return shards.read(0, shards.n)


_SHARD = re.compile(r"shard-(\d+)-of-(\d+)\.h5")


def sweep_stale_shards(folder: str | os.PathLike[str], n_shards: int, kind: str = ""
                       ) -> list[Path]:
    """Delete ``shard-<i>-of-<m>.h5`` with m != ``n_shards`` from ``folder`` (with ``kind``:
    from the folder ``kind`` beside the file ``folder``, e.g. ``null`` or ``jackknife``
    beside ``significance.tsv``): the shards of an earlier shard count, which no rule reads
    any more. Returns them; one log line."""
    root = Path(folder)
    if kind:
        root = root.parent / kind
    stale = sorted(p for p in root.glob("shard-*-of-*.h5")
                   if (m := _SHARD.fullmatch(p.name)) and int(m.group(2)) != n_shards)
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        counts = sorted({int(_SHARD.fullmatch(p.name).group(2)) for p in stale})  # type: ignore[union-attr]
        _log.info("removed %d shard file(s) of an earlier shard count (%s) from %s; %d "
                  "shards now", len(stale), ", ".join(f"shard-*-of-{c}.h5" for c in counts),
                  root, n_shards)
    return stale


def shard_attrs(paths: Sequence[str | os.PathLike[str]]) -> dict[str, object]:
    """The attributes of the first shard (seed, k, n_pairs, ...); every shard of one
    network x word model is written with the same ones but start and stop."""
    if not paths:
        return {}
    with open_h5(paths[0], "resampling shard") as f:
        return {key: f.attrs[key] for key in f.attrs}


def shard_concepts(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The concepts (matrix order) the shards were drawn over; one line if they differ."""
    found: list[str] | None = None
    for p in paths:
        with open_h5(p, "resampling shard") as f:
            concepts = [str(c) for c in f.attrs.get("concepts", [])]
        if found is not None and concepts != found:
            raise ValueError(f"{p}: drawn over other concepts than the other shards; "
                             "delete the shards so that they are drawn again")
        found = concepts
    return found or []
