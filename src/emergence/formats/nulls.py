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
that cannot be scored has a NaN column. :func:`read_nulls` concatenates the shards of one
network x word model in sample order (the ``significance`` and ``comparisons`` rules).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from emergence.io import atomic_h5, open_h5

__all__ = ["WHAT", "read_nulls", "shard_attrs", "shard_concepts", "write_null_shard"]

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


def read_nulls(
    paths: Sequence[str | os.PathLike[str]],
) -> dict[str, dict[str, NDArray[np.float64]]]:
    """Concatenate shard files in sample order: group -> {measure: (n, L)}."""
    parts: dict[str, dict[str, list[NDArray[np.float64]]]] = {}
    starts: list[tuple[int, str | os.PathLike[str]]] = []
    for p in paths:
        with open_h5(p, "permutation shard") as f:
            starts.append((int(f.attrs["start"]), p))
    expected = 0
    for start, p in sorted(starts, key=lambda t: t[0]):
        with open_h5(p, "permutation shard") as f:
            if start != expected:
                raise ValueError(f"{p}: shard starts at permutation {start}, expected {expected}")
            expected = int(f.attrs["stop"])
            for name, grp in f["groups"].items():
                d = parts.setdefault(name, {})
                for m, ds in grp.items():
                    if m != "index":
                        d.setdefault(m, []).append(ds[()])
    return {g: {k: np.concatenate(v) for k, v in d.items()} for g, d in parts.items()}


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
