"""A network of precomputed features (``source: features``) -> its activations file.

No model and no forward pass (and no torch): each layer's features are read from the file
a user brings (:func:`emergence.sources.models.features.layer_features`, matched to the
manifest's images), reduced to the same float64 Pearson statistics as the forward pass's
host row stores (:class:`~emergence.stats.similarity.PearsonAccumulator` over the rows in
their own dtype: float32 features give the very bits a forward pass with the same
activations gives, the statistics kernel being the same) and written with the same layer
writer (:func:`emergence.formats.activations.write_layer`), so every measure downstream
reads it unchanged. There are no class predictions: the file says why
(``no_predictions``), and the 1 vs 2 tests are skipped with that reason.

Every layer is read and checked before anything is written: a bad file (an image without
features, a duplicate key, nan or inf, rows that do not match the image paths) stops the
job with one line naming it, and the output is written atomically
(:func:`emergence.io.atomic_h5`): nothing is left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emergence.formats.activations import (
    check_attrs,
    image_column,
    write_features_root,
    write_image_column,
    write_layer,
)
from emergence.io import atomic_h5
from emergence.sources.models.features import layer_features, layer_files
from emergence.sources.precomputed import file_sha256
from emergence.stats.similarity import PearsonAccumulator

__all__ = ["precomputed_statistics"]


def precomputed_statistics(
    layers: Mapping[str, str | os.PathLike[str]],
    image_paths: Sequence[str],
    out_path: str | os.PathLike[str],
    *,
    root: str | None = None,
    keep_raw_max_features: int = 0,
    attrs: Mapping[str, Any] | None = None,
    image_meta: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, int]:
    """Write the activations file of precomputed features; returns each layer's F.

    Parameters
    ----------
    layers : Mapping
        Layer name -> its features folder or file, in network order (``layer_names``).
    image_paths : sequence of str
        The group's images (the manifest's paths), in the row order of every matrix.
    out_path : path
        The activations file, written atomically.
    root : str, optional
        The image folder as the extracting tool saw it (taken off each key).
    keep_raw_max_features : int
        Also store ``layers/<name>/activations`` when F is at most this (as the forward
        path does; in the features' own dtype).
    attrs, image_meta
        Extra root attributes and per-image columns, as for
        :func:`~emergence.extraction.extract.extract_statistics`.
    """
    paths = [os.fspath(p) for p in image_paths]
    if not paths:
        raise ValueError("no images given")
    if not layers:
        raise ValueError("no layers given")
    extra = check_attrs(attrs)
    columns = {key: image_column(key, values, len(paths))
               for key, values in (image_meta or {}).items()}
    features = {name: layer_features(path, paths, root) for name, path in layers.items()}
    with atomic_h5(Path(out_path)) as h5:
        write_features_root(h5, extra, paths=paths, layer_names=list(layers), root=root)
        for key, values in columns.items():
            write_image_column(h5, key, values)
        for index, (name, values) in enumerate(features.items()):
            if values.dtype not in (np.float32, np.float64):
                values = values.astype(np.float64)
            acc = PearsonAccumulator(len(paths))
            acc.update(values)
            files = layer_files(layers[name])
            write_layer(h5, name, module=os.fspath(layers[name]), index=index,
                        shape=[values.shape[1]], acc=acc,
                        activations=values if values.shape[1] <= keep_raw_max_features
                        else None,
                        extra={"source": "features",
                               "file": [os.fspath(f) for f in files],
                               "sha256": [file_sha256(f) for f in files]})
    return {name: int(values.shape[1]) for name, values in features.items()}
