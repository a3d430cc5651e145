"""Precomputed image features, one layer at a time, keyed by image path.

Activations a user already has (from thingsvision, or any other tool) replace the forward
pass of a network (``source: features``); the manifest still says which image belongs to
which concept. :func:`read_layer_features` reads one layer:

a folder (thingsvision's layout)
    ``<root>/<layer>/features.npy`` (or ``features.pt``, ``features.hdf5`` with dataset
    ``features``, ``features.txt``), or thingsvision's pieces of one layer
    (``features_01.npy`` ..., ``features_<start>-<end>.npy`` ..., or the datasets
    ``features_01`` ... of ``features.hdf5``), stacked in order; the image of each row in
    ``file_names.txt``, one path per line, in the layer's folder or its parent (thingsvision
    writes it once, into its ``out_path``);
a file
    ``.npy`` with ``file_names.txt`` beside it, or ``.h5``/``.hdf5`` with the datasets
    ``features`` and ``file_names``.

Rows with more than one dimension (a convolution's maps) are flattened, as the forward
pass flattens a layer's output. :func:`image_rows` finds the row of each manifest image:
the same path, else the one key that is a suffix of the image's path (whole path
components: ``cat/1.jpg`` is a suffix of ``/data/things/cat/1.jpg``) or of which the
image's path is a suffix; ``root``, where given, is first taken off every key (the image
folder as the tool saw it). One line (:class:`~emergence.errors.InputFileError`) names the
file and the images for: duplicate keys, an image with no row, an image two keys could be,
a key two images would share, non-finite values. Features of images the manifest does not
use are ignored.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
from numpy.typing import NDArray

from emergence.errors import InputFileError
from emergence.sources.common import nfc
from emergence.sources.precomputed import read_ids, shown

__all__ = ["LayerFeatures", "image_rows", "layer_features", "read_layer_features"]

FILE_NAMES = "file_names.txt"
_SINGLE = ("features.npy", "features.pt", "features.hdf5", "features.txt")
_PIECE = re.compile(r"features(?:.*_(\d+)-\d+|_(\d+))\.(npy|pt|txt)")


@dataclass(frozen=True)
class LayerFeatures:
    """One layer's features: row ``i`` is the image ``keys[i]``; ``source`` is the file."""

    keys: list[str]
    values: NDArray[np.floating]  # (N, F)
    source: str


def read_layer_features(path: str | os.PathLike[str]) -> LayerFeatures:
    """Read one layer's features and the image key of each row (module doc)."""
    p = Path(path)
    if p.is_dir():
        source, values = _folder_features(p)
        names = next((f for f in (p / FILE_NAMES, p.parent / FILE_NAMES) if f.is_file()), None)
        if names is None:
            raise InputFileError(f"{p}: no {FILE_NAMES} (the image of each row) in the folder "
                                 "or its parent")
    elif p.suffix.lower() == ".npy":
        source, values, names = p, _load(p), p.parent / FILE_NAMES
        if not names.is_file():
            raise InputFileError(f"{p}: no {FILE_NAMES} beside it (the image of each row)")
    elif p.suffix.lower() in (".h5", ".hdf5"):
        keys, values = _h5_features(p, with_names=True)
        return _checked(p, keys, values)
    else:
        raise InputFileError(f"{p}: not a features folder, .npy or .h5/.hdf5 file")
    return _checked(source, read_ids(names), values)


def _folder_features(folder: Path) -> tuple[Path, NDArray[np.floating]]:
    for name in _SINGLE:
        if (folder / name).is_file():
            file = folder / name
            if name.endswith(".hdf5"):
                return file, _h5_features(file, with_names=False)[1]
            return file, _load(file)
    pieces = sorted(((int(m.group(1) or m.group(2)), f) for f in folder.iterdir()
                     if (m := _PIECE.fullmatch(f.name))), key=lambda t: t[0])
    if not pieces:
        raise InputFileError(f"{folder}: no features file ({', '.join(_SINGLE)}, or "
                             "thingsvision's pieces features_<i>.npy)")
    return folder, np.concatenate([_load(f) for _, f in pieces])


def _load(file: Path) -> NDArray[np.floating]:
    try:
        if file.suffix == ".npy":
            return np.load(file, allow_pickle=False)
        if file.suffix == ".txt":
            return np.loadtxt(file, ndmin=2)
        import torch

        return torch.load(file, map_location="cpu", weights_only=True).numpy()
    except (OSError, ValueError, RuntimeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(f"{file}: cannot read the features ({first})") from None


def _h5_features(file: Path, *, with_names: bool) -> tuple[list[str], NDArray[np.floating]]:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            if "features" in f:
                values = f["features"][()]
            else:
                splits = sorted(k for k in f if re.fullmatch(r"features_\d+", k))
                if not splits:
                    raise InputFileError(f"{file}: no dataset 'features' (datasets: "
                                         f"{', '.join(f) or 'none'})")
                values = np.concatenate([f[k][()] for k in splits])
            if not with_names:
                return [], values
            if "file_names" not in f:
                raise InputFileError(f"{file}: no dataset 'file_names' (the image of each row)")
            keys = [v.decode() if isinstance(v, bytes) else str(v) for v in f["file_names"][()]]
    except OSError as exc:
        raise InputFileError(f"{file}: not a readable HDF5 file ({exc})") from None
    return [k.strip() for k in keys], values


def _checked(source: Path, keys: list[str], values: NDArray[np.floating]) -> LayerFeatures:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise InputFileError(f"{source}: features of type {values.dtype}, expected numbers")
    if values.ndim < 2 or values.shape[0] != len(keys):
        raise InputFileError(f"{source}: {values.shape[0] if values.ndim else 0} rows of "
                             f"features for {len(keys)} image paths ({FILE_NAMES}); expected "
                             "one row per image")
    twice = [k for k, n in Counter(keys).items() if n > 1]
    if twice:
        raise InputFileError(f"{source}: {len(twice)} image path(s) on more than one row: "
                             f"{shown(twice)}")
    return LayerFeatures(keys, values.reshape(values.shape[0], -1), str(source))


def _parts(path: str, root: str | None = None) -> tuple[str, ...]:
    """A path's components, compared in Unicode NFC; ``root`` taken off the front."""
    pure = PurePath(os.path.normpath(nfc(path)))
    if root:
        base = PurePath(os.path.normpath(nfc(root)))
        if pure.is_relative_to(base):
            pure = pure.relative_to(base)
    return pure.parts


def image_rows(features: LayerFeatures, image_paths: Sequence[str],
               root: str | None = None) -> list[int]:
    """The row of each image (in ``image_paths`` order): see the module doc."""
    exact: dict[tuple[str, ...], int] = {}
    by_suffix: dict[tuple[str, ...], list[int]] = {}
    for row, key in enumerate(features.keys):
        parts = _parts(key, root)
        exact[parts] = row
        for j in range(1, len(parts) + 1):
            by_suffix.setdefault(parts[-j:], []).append(row)
    rows, absent, ambiguous = [], [], []
    for image in image_paths:
        parts = _parts(image)
        if parts in exact:
            rows.append(exact[parts])
            continue
        found = {exact[parts[-j:]] for j in range(1, len(parts)) if parts[-j:] in exact}
        found |= set(by_suffix.get(parts, ()))
        if len(found) == 1:
            rows.append(found.pop())
        else:
            (ambiguous if found else absent).append(image)
            rows.append(-1)
    if absent:
        raise InputFileError(f"{features.source}: no features for {len(absent)} of "
                             f"{len(image_paths)} image(s): {shown(absent)} (keys such as "
                             f"{shown(features.keys, 2)}; set root to the image folder the "
                             "features were extracted from)")
    if ambiguous:
        raise InputFileError(f"{features.source}: {len(ambiguous)} image(s) match more than "
                             f"one key: {shown(ambiguous)}; set root")
    shared = [features.keys[r] for r, n in Counter(rows).items() if n > 1]
    if shared:
        raise InputFileError(f"{features.source}: {len(shared)} key(s) match more than one "
                             f"image: {shown(shared)}; give full paths or set root")
    return rows


def layer_features(path: str | os.PathLike[str], image_paths: Sequence[str],
                   root: str | None = None) -> NDArray[np.floating]:
    """One layer's features of ``image_paths`` (rows in that order), read, matched and
    checked finite (one line naming the images whose features are not)."""
    features = read_layer_features(path)
    rows = image_rows(features, image_paths, root)
    values = features.values[rows]
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        named = [image_paths[i] for i in np.flatnonzero(bad)]
        raise InputFileError(f"{features.source}: non-finite features (nan or inf) for "
                             f"{len(named)} image(s): {shown(named)}")
    return values
