"""The permutation-null shard: one HDF5 file per shard of permutations, writer and reader.

Layout of ``shard-<i>-of-<n>.h5`` (the ``permutations`` rule)::

    attrs   what, network, model, word_model, seed, start, stop, batch_size,
            rsa_method, layer_names, k
    groups/<group>/two_vs_two   (stop - start, L) float64   2 vs 2 accuracy per permutation
    groups/<group>/rsa          (stop - start, L) float64   RSA per permutation
    groups/<group>/index        (stop - start,)   int64     the permutation indices

A layer that cannot be scored has a NaN column. :func:`read_nulls` concatenates the
shards of one network x word model in permutation order (the ``significance`` rule).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from emergence.io import atomic_h5, open_h5

__all__ = ["WHAT", "read_nulls", "write_null_shard"]

WHAT = "permutation null of 2 vs 2 accuracy and RSA (image space shuffled)"


def write_null_shard(path: str | os.PathLike[str], *, network: str, model: str,
                     word_model: str, seed: int, start: int, stop: int, batch_size: int,
                     rsa_method: str, layer_names: Sequence[str], k: int,
                     nulls: Iterable[tuple[str, Mapping[str, NDArray[np.generic]]]]) -> None:
    """Write permutations ``start .. stop-1``: ``nulls`` yields ``(group, null)`` with
    ``null`` as :func:`emergence.stats.permutation.permutation_null` returns it. It is
    consumed while the file is open (one group's null in memory at a time); the file
    appears at ``path`` only when complete."""
    attrs = {"what": WHAT, "network": network, "model": model, "word_model": word_model,
             "seed": seed, "start": start, "stop": stop, "batch_size": batch_size,
             "rsa_method": rsa_method, "layer_names": layer_names, "k": k}
    with atomic_h5(path, attrs) as f:
        for group, null in nulls:
            grp = f.create_group(f"groups/{group}")
            grp.create_dataset("two_vs_two", data=null["two_vs_two"])
            grp.create_dataset("rsa", data=null["rsa"])
            grp.create_dataset("index", data=null["index"])


def read_nulls(
    paths: Sequence[str | os.PathLike[str]],
) -> dict[str, dict[str, NDArray[np.float64]]]:
    """Concatenate shard files in permutation order: group -> {"two_vs_two", "rsa"} (n x L)."""
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
                d = parts.setdefault(name, {"two_vs_two": [], "rsa": []})
                d["two_vs_two"].append(grp["two_vs_two"][()])
                d["rsa"].append(grp["rsa"][()])
    return {g: {k: np.concatenate(v) for k, v in d.items()} for g, d in parts.items()}
