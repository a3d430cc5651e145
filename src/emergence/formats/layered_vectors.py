"""A word model's vectors layer by layer: one file holds every layer of a language model.

Written by :func:`write_layered_vectors` (a ``transformers`` word model,
:mod:`emergence.sources.words.transformers`), read by :func:`read_layered_vectors`. Layout::

    /                  attrs: what, word_model, spec (repr of the rule's params),
                              layer_names (in model order), n_layers, model (the folder
                              read), revision (the hub commit, "" for a folder), weights_sha256
                              (of the weights files), pooling, template, + the caller's attrs
    wnid               (n,) utf-8       the concept ids, one per row, in candidate order
    text               (n,) utf-8       the text each concept was encoded in (the template filled)
    layers/<name>      (n, d) float64   the concept vectors of one layer; attrs index (position
                                        in layer_names), hidden_state (the model's index)

A one-vector word model is the one-layer case. Layers may differ in width.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.io import atomic_h5, open_h5, str_dataset

__all__ = ["LayeredVectors", "read_layered_vectors", "write_layered_vectors"]

_WHAT = "word vectors of the candidate concepts, layer by layer"
#: Root attributes the writer sets itself (the caller's ``attrs`` may not use them).
_OWN_ATTRS = frozenset({"what", "word_model", "spec", "layer_names", "n_layers"})


@dataclass(frozen=True)
class LayeredVectors:
    """The concept vectors of every (or the selected) layer of one word model.

    Attributes
    ----------
    wnids
        The concept ids, one per row of each layer.
    texts
        The text each concept was encoded in.
    layers
        Layer name -> ``n x d`` float64, in model order.
    hidden_states
        Layer name -> the model's hidden-state index it was taken from (0: embeddings).
    attrs
        The file's root attributes (model, revision, weights_sha256, pooling, template, ...).
    """

    wnids: list[str]
    texts: list[str]
    layers: dict[str, NDArray[np.float64]]
    hidden_states: dict[str, int] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)


def _check_name(name: str) -> None:
    if not name or "/" in name or name != name.strip() or name == ".":
        raise ValueError(f"layer name {name!r} is not allowed (it becomes an HDF5 group and a "
                         "file name: no '/', no surrounding blanks)")


def write_layered_vectors(
    path: str | os.PathLike[str],
    word_model: str,
    params: Mapping[str, Any],
    wnids: Sequence[str],
    texts: Sequence[str],
    layers: Mapping[str, NDArray[np.floating]],
    hidden_states: Mapping[str, int] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write every layer's ``n x d`` vectors (rows: ``wnids``) of ``word_model`` atomically.

    ``hidden_states`` maps a layer name to the model's hidden-state index (default: its
    position); ``attrs`` are further root attributes (model, revision, weights_sha256,
    pooling, template, ...). Raises ``ValueError`` (one line) for no layer, a layer whose
    rows are not one per concept, a name that cannot be a group, or a reserved attribute.
    """
    extra = dict(attrs or {})
    clash = sorted(_OWN_ATTRS & set(extra))
    if clash:
        raise ValueError(f"attrs {clash} are written by write_layered_vectors itself")
    if not layers:
        raise ValueError(f"{path}: no layer to write")
    n = len(wnids)
    if len(texts) != n:
        raise ValueError(f"{path}: {len(texts)} texts for {n} concepts")
    for name, vectors in layers.items():
        _check_name(name)
        if np.ndim(vectors) != 2 or np.shape(vectors)[0] != n:
            raise ValueError(f"{path}: layer {name!r} has shape {np.shape(vectors)}, expected "
                             f"({n}, dimension): one row per concept")
    index = dict(hidden_states or {})
    root = {"what": _WHAT, "word_model": word_model, "spec": repr(dict(params)),
            "layer_names": list(layers), "n_layers": len(layers), **extra}
    with atomic_h5(path, root) as f:
        str_dataset(f, "wnid", wnids)
        str_dataset(f, "text", texts)
        group = f.create_group("layers")
        for position, (name, vectors) in enumerate(layers.items()):
            ds = group.create_dataset(name, data=np.asarray(vectors, dtype=np.float64))
            ds.attrs["index"] = position
            ds.attrs["hidden_state"] = int(index.get(name, position))


def read_layered_vectors(path: str | os.PathLike[str],
                         layers: Sequence[str] | None = None) -> LayeredVectors:
    """The vectors of ``layers`` (default: every layer, in model order) of a layered-vectors
    file; an unknown layer name raises one line naming the file and its layers."""
    with open_h5(path, "layered word-vectors file") as f:
        names = [str(n) for n in f.attrs["layer_names"]]
        wanted = list(layers) if layers is not None else names
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"{path}: no layer(s) {unknown} (layers: {', '.join(names)})")
        group = f["layers"]
        return LayeredVectors(
            wnids=list(f["wnid"].asstr()[()]),
            texts=list(f["text"].asstr()[()]),
            layers={n: group[n][()] for n in wanted},
            hidden_states={n: int(group[n].attrs["hidden_state"]) for n in wanted},
            attrs={k: _plain(v) for k, v in f.attrs.items()},
        )


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a Python value (string arrays as lists of str)."""
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
