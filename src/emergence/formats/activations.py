"""The activations file (``activations/<network>/<group>.h5``): its layout, writer and reader.

One file per network x image group, written by
:func:`emergence.extraction.extract.extract_statistics` and read by :func:`load_group`::

    /                      attrs: caller's attrs + model, weights, input_size, ... (write_root)
    images/path            (N,) utf-8
    images/exif_orientation (N,) uint16     EXIF orientation tag of each file (0: none);
                                            tags 2-8 were applied (attr exif_transposed)
    images/<key>           (N,) utf-8 or numbers: per-image columns (wnid, concept, ...)
    predictions/top5_index (N, 5) int64     top-5 of softmax(model output)
    predictions/top5_prob  (N, 5) float32
    predictions/top5_wnid  (N, 5) utf-8     ImageNet wnids ("" if not ImageNet-1k)
    layers/<name>/             attrs: module, n_features, shape, index, statistic
                                      (+ tokens, output_shape, prefix_tokens: layers
                                      that set `tokens`)
    layers/<name>/correlation  (N, N) float64
    layers/<name>/sums, gram, shift   PearsonAccumulator sufficient statistics
    layers/<name>/activations  (N, F) float32, only if F <= keep_raw_max_features

``predictions`` is absent when the model's output is not a ``(batch, classes)`` tensor.
The writer functions are called in the order above, on a file opened with
:func:`emergence.io.atomic_h5`.

``images/wnid`` is the concept id of each image. A group normally holds one image per
concept; with ``images_per_average`` n > 1 it holds n (the manifest's order), and the
reader gives each concept the Pearson statistics of the *mean* of its images' activations,
computed exactly (float64) from the stored per-image ``sums``/``gram`` (see
:func:`averaged_correlation`); such a row has no single prediction.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from emergence.io import open_h5
from emergence.sources.common import is_wnid
from emergence.stats.similarity import PearsonAccumulator

__all__ = [
    "PEARSON_STATISTIC",
    "RESERVED_ATTRS",
    "RESERVED_COLUMNS",
    "TOP_K",
    "GroupSimilarities",
    "averaged_correlation",
    "check_attrs",
    "image_column",
    "load_group",
    "load_groups",
    "write_image_column",
    "write_layer",
    "write_predictions",
    "write_root",
]

PEARSON_STATISTIC = "pearson between images over features, float64, streamed"
TOP_K = 5
#: Root attributes :func:`write_root` writes itself; the caller's ``attrs`` may not use them.
RESERVED_ATTRS = frozenset(
    {
        "model",
        "weights",
        "input_size",
        "interpolation",
        "mean",
        "std",
        "crop_pct",
        "crop_mode",
        "preprocess",
        "device",
        "n_images",
        "layer_names",
        "batch_size",
        "chunk_features",
        "emergence_version",
        "torch_version",
        "timm_version",
        "numpy_version",
        "torch_threads",
        "cpu_capability",
        "exif_transposed",
    }
)
#: Per-image columns :func:`write_root` writes itself; ``image_meta`` may not use them.
RESERVED_COLUMNS = frozenset({"path", "exif_orientation"})

_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------


def check_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's extra root attributes, checked not to reuse :data:`RESERVED_ATTRS`."""
    extra = dict(attrs or {})
    clash = sorted(set(extra) & RESERVED_ATTRS)
    if clash:
        raise ValueError(f"attrs {clash} are written by extract_statistics itself")
    return extra


def image_column(key: str, values: Sequence[Any], n: int) -> NDArray[Any]:
    """Validate one ``image_meta`` column: strings (object array) or 1-d numbers."""
    if not key or key in RESERVED_COLUMNS or "/" in key:
        raise ValueError(f"image_meta key {key!r} is not allowed")
    items = list(values)
    if len(items) != n:
        raise ValueError(f"image_meta[{key!r}] has {len(items)} values for {n} images")
    if all(isinstance(v, str) for v in items):
        return np.array(items, dtype=object)
    array = np.asarray(items)
    if array.dtype.kind not in "biuf" or array.ndim != 1:
        raise ValueError(f"image_meta[{key!r}]: expected strings or numbers, got {array.dtype}")
    return array


def _attr_value(value: Any) -> Any:
    if value is None or isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _emergence_version() -> str:
    try:
        return importlib.metadata.version("emergence")
    except importlib.metadata.PackageNotFoundError:
        import emergence

        return str(getattr(emergence, "__version__", "unknown"))


def write_root(
    h5: h5py.File,
    extra: Mapping[str, Any],
    *,
    model: str,
    weights: str,
    data_config: Mapping[str, Any],
    preprocess: str,
    device: str,
    batch_size: int,
    chunk_features: int,
    paths: Sequence[str],
    layer_names: Sequence[str],
    runtime: Mapping[str, Any],
    exif_orientation: NDArray[np.uint16],
) -> None:
    """The root attributes (``extra`` first, from :func:`check_attrs`), ``images/path`` and
    ``images/exif_orientation`` (the tag of each image, applied by
    :func:`emergence.extraction.preprocess.load_image`; attr ``exif_transposed``: how many
    images were flipped or rotated by theirs).

    ``runtime``: ``torch_version``, ``timm_version``, ``torch_threads`` and
    ``cpu_capability``, taken by the forward pass while its thread count was set
    (:func:`emergence.extraction.forward.runtime_attrs`; this module imports neither
    torch nor timm, so the statistics jobs can read the format without them).
    """
    cfg = data_config
    for key, value in extra.items():
        h5.attrs[key] = _attr_value(value)
    h5.attrs["model"] = model
    h5.attrs["weights"] = weights
    h5.attrs["input_size"] = [int(v) for v in cfg["input_size"]]
    h5.attrs["interpolation"] = str(cfg.get("interpolation", ""))
    # no mean/std: a factory's own transform (its repr is the `preprocess` attribute)
    h5.attrs["mean"] = np.array([float(v) for v in cfg.get("mean", ())], dtype=np.float64)
    h5.attrs["std"] = np.array([float(v) for v in cfg.get("std", ())], dtype=np.float64)
    h5.attrs["crop_pct"] = float(cfg.get("crop_pct", 1.0))
    h5.attrs["crop_mode"] = str(cfg.get("crop_mode", ""))
    h5.attrs["preprocess"] = preprocess
    h5.attrs["device"] = device
    h5.attrs["batch_size"] = batch_size
    h5.attrs["chunk_features"] = chunk_features
    h5.attrs["n_images"] = len(paths)
    h5.attrs["layer_names"] = list(layer_names)
    h5.attrs["emergence_version"] = _emergence_version()
    h5.attrs["torch_version"] = runtime["torch_version"]
    h5.attrs["timm_version"] = runtime["timm_version"]
    h5.attrs["numpy_version"] = str(np.__version__)
    # What the forward pass's last bits depend on besides the inputs (see `threads`).
    h5.attrs["torch_threads"] = runtime["torch_threads"]
    h5.attrs["cpu_capability"] = runtime["cpu_capability"]
    orientation = np.asarray(exif_orientation, dtype=np.uint16)
    h5.attrs["exif_transposed"] = int(((orientation >= 2) & (orientation <= 8)).sum())
    h5.create_dataset("images/path", data=np.array(paths, dtype=object), dtype=_STR)
    h5.create_dataset("images/exif_orientation", data=orientation)


def write_image_column(h5: h5py.File, key: str, values: NDArray[Any]) -> None:
    """``images/<key>``: a column from :func:`image_column`."""
    h5.create_dataset(f"images/{key}", data=values,
                      dtype=_STR if values.dtype == object else None)


def write_predictions(
    h5: h5py.File,
    top_index: NDArray[np.int64],
    top_prob: NDArray[np.float32],
    n_classes: int,
    class_wnids: Sequence[str],
    label_set: str,
) -> None:
    """``predictions/``: the top :data:`TOP_K` classes per image, or nothing if
    ``n_classes`` is 0 (the model's output is not a ``(batch, classes)`` tensor).

    ``class_wnids`` are the wnids of the model's classes in output order (empty when
    they are not known: ``top5_wnid`` is then ``""``), ``label_set`` timm's name of
    that class set. With fewer than :data:`TOP_K` classes the missing columns of
    ``top_index``/``top_prob`` are set to -1/NaN (in place).
    """
    if n_classes == 0:
        return
    k = min(TOP_K, n_classes)
    labels = np.full(top_index.shape, "", dtype=object)
    if class_wnids:
        labels[:, :k] = np.array(class_wnids, dtype=object)[top_index[:, :k]]
    group = h5.create_group("predictions")
    group.attrs["source"] = "softmax of the model output"
    group.attrs["k"] = k
    group.attrs["label_set"] = label_set if class_wnids else ""
    if k < TOP_K:  # fewer classes than 5: pad
        top_index[:, k:] = -1
        top_prob[:, k:] = np.nan
    group.create_dataset("top5_index", data=top_index)
    group.create_dataset("top5_prob", data=top_prob)
    group.create_dataset("top5_wnid", data=labels, dtype=_STR)


def write_layer(
    h5: h5py.File,
    name: str,
    *,
    module: str,
    index: int,
    shape: Sequence[int],
    acc: PearsonAccumulator,
    activations: NDArray[np.float32] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """``layers/<name>/``: one layer's correlation matrix and sufficient statistics (and
    its raw ``activations`` when given); ``index`` is its position in ``layer_names``.

    ``extra``: more attributes of the layer, after the others: a layer's ``tokens`` choice
    (``tokens``, ``output_shape`` of the hooked module, ``prefix_tokens``;
    :class:`emergence.extraction.tokens.TokenReduction`). ``shape`` is that of the
    features (after the reduction)."""
    group = h5.create_group(f"layers/{name}")
    group.attrs["module"] = module
    group.attrs["n_features"] = acc.n_features
    group.attrs["shape"] = list(shape)
    group.attrs["index"] = index
    group.attrs["statistic"] = PEARSON_STATISTIC
    for key, value in (extra or {}).items():
        group.attrs[key] = value
    group.create_dataset("correlation", data=acc.correlation())
    group.create_dataset("sums", data=acc.sums)
    group.create_dataset("gram", data=acc.gram)
    group.create_dataset("shift", data=acc.shift)
    if activations is not None:
        group.create_dataset("activations", data=activations)


# --------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSimilarities:
    """Image-space similarity matrices of one network and group, over the kept concepts."""

    network: str
    model: str
    group: str
    layers: list[str]
    modules: list[str]
    n_features: list[int]
    similarity: NDArray[np.float64]  # (L, k, k)
    predicted: NDArray[np.int64]  # top-1 class as kept-concept index, -1 outside the set
    predicted_wnid: list[str]
    image_path: list[str]
    wnids: list[str] = field(default_factory=list)  # kept concepts, matrix order
    concepts: list[str] = field(default_factory=list)  # their words, when known
    # why no image has a predicted concept ("" when predictions map onto the concepts)
    no_prediction: str = ""
    gram: NDArray[np.float64] | None = None  # (L, k, k) centred linear Gram, when asked for


def _strings(ds: h5py.Dataset) -> list[str]:
    return ds.asstr()[()].tolist()


def _concept_moments(layer: h5py.Group, members: NDArray[np.intp]) -> PearsonAccumulator:
    """The Pearson statistics of each concept's mean row (``members``: k x n image indices;
    n = 1: the images themselves), exact in float64 (see :func:`averaged_correlation`)."""
    k, n = members.shape
    flat = members.reshape(-1)
    gram = layer["gram"][()][np.ix_(flat, flat)].reshape(k, n, k, n).mean(axis=(1, 3))
    sums = layer["sums"][()][flat].reshape(k, n).mean(axis=1)
    shift = layer["shift"][()][flat].reshape(k, n).mean(axis=1)
    return PearsonAccumulator.from_moments(sums, gram, shift, int(layer.attrs["n_features"]))


def averaged_correlation(layer: h5py.Group, members: NDArray[np.intp]) -> NDArray[np.float64]:
    """Pearson correlation between concept means: row ``c`` is the mean of the activations
    of the images ``members[c]`` (a ``k x n`` index array into the file's images).

    Exact from the stored statistics of the shifted rows ``y_i = x_i - shift_i``: Pearson
    is invariant to a per-row shift, the mean row is ``ybar_c + mean(shift)``, and
    ``sum(ybar_c) = mean_i sums_i``, ``ybar_c . ybar_d = mean_{i in c, j in d} gram_ij``;
    the covariance and correlation then follow as for one image per concept
    (:meth:`~emergence.stats.similarity.PearsonAccumulator.correlation`), in float64.
    """
    return _concept_moments(layer, members).correlation()


def _predicted(f: h5py.File, rows: NDArray[np.intp], kept_wnids: Sequence[str],
               label_map: Mapping[str, str] | None, averaged: bool
               ) -> tuple[NDArray[np.int64], list[str], str]:
    """Each kept concept's predicted concept (index into ``kept_wnids``, -1 outside the
    set), the network's top-1 labels, and why there is none ("" when there is)."""
    k = len(kept_wnids)
    none = np.full(k, -1, dtype=np.int64)
    if averaged:
        return none, [""] * k, ("images are averaged per concept (images_per_average > 1): "
                                "an averaged row has no single prediction")
    if "predictions" not in f:
        return none, [""] * k, "the network has no class predictions (its output is not " \
            "(batch, classes))"
    wnid = f["predictions/top5_wnid"].asstr()[()][rows, 0].tolist()
    if label_map is not None:  # a class's label: its wnid where known, else its index
        index = f["predictions/top5_index"][()][rows, 0].tolist()
        labels = [w or str(i) for w, i in zip(wnid, index, strict=True)]
        concept = [label_map.get(label, "") for label in labels]
    else:
        labels = concept = wnid
        if not any(wnid):
            return none, labels, ("the network's class labels are not ImageNet wnids; set "
                                  "one_vs_two.label_map (columns label = class index, "
                                  "concept_id)")
        if not any(is_wnid(w) for w in kept_wnids):
            return none, labels, ("no concept id is an ImageNet wnid, the network's labels; "
                                  "set one_vs_two.label_map (columns label, concept_id)")
    at = {w: i for i, w in enumerate(kept_wnids)}
    return np.array([at.get(c, -1) for c in concept], dtype=np.int64), labels, ""


def load_group(path: str | os.PathLike[str], kept_wnids: Sequence[str],
               network: str, group: str, *, label_map: Mapping[str, str] | None = None,
               gram: bool = False) -> GroupSimilarities:
    """Read one activations file and restrict it to ``kept_wnids`` (in that order).

    A concept with several images gets the statistics of their mean
    (:func:`averaged_correlation`). ``predicted`` maps each image's top-1 class onto the
    kept concepts: through ``label_map`` (class label -> concept id; a class's label is
    its wnid, or its index when the network's classes are not ImageNet's), or else by the
    class's wnid being a concept id; ``no_prediction`` says why no image has a predicted
    concept (averaged rows, no predictions, or labels that cannot be concept ids).
    ``gram=True`` also gives each layer's centred linear Gram matrix over the kept concepts
    (:meth:`~emergence.stats.similarity.PearsonAccumulator.centred_gram`, for CKA).
    """
    with open_h5(path, "activations file") as f:
        wnids = _strings(f["images/wnid"])
        rows_of: dict[str, list[int]] = {}
        for i, w in enumerate(wnids):
            rows_of.setdefault(w, []).append(i)
        missing = [w for w in kept_wnids if w not in rows_of]
        if missing:
            raise ValueError(f"{path}: no image for kept concept(s) {missing[:5]}")
        sizes = {len(rows_of[w]) for w in kept_wnids}
        if len(sizes) > 1:
            raise ValueError(f"{path}: concepts have different numbers of images "
                             f"({sorted(sizes)}); the manifest gives each the same number")
        members = np.array([rows_of[w] for w in kept_wnids], dtype=np.intp).reshape(
            len(kept_wnids), -1)
        rows = members[:, 0]
        averaged = members.shape[1] > 1
        layers = [str(x) for x in f.attrs["layer_names"]]
        if averaged:
            sims = np.stack([averaged_correlation(f[f"layers/{name}"], members)
                             for name in layers])
        else:
            sims = np.stack([f[f"layers/{name}/correlation"][()][np.ix_(rows, rows)]
                             for name in layers])
        grams = (np.stack([_concept_moments(f[f"layers/{name}"], members).centred_gram()
                           for name in layers]) if gram else None)
        modules = [str(f[f"layers/{name}"].attrs["module"]) for name in layers]
        n_features = [int(f[f"layers/{name}"].attrs["n_features"]) for name in layers]
        predicted, top1, why = _predicted(f, rows, kept_wnids, label_map, averaged)
        paths = _strings(f["images/path"])
        words = _strings(f["images/concept"]) if "images/concept" in f else []
        model = str(f.attrs.get("model", ""))
    return GroupSimilarities(network, model, group, layers, modules, n_features, sims, predicted,
                             top1, [paths[r] for r in rows], list(kept_wnids),
                             [words[r] for r in rows] if words else [], why, grams)


def load_groups(paths: Sequence[str | os.PathLike[str]], groups: Sequence[str],
                kept_wnids: Sequence[str], network: str, *,
                label_map: Mapping[str, str] | None = None,
                gram: bool = False) -> list[GroupSimilarities]:
    """:func:`load_group` for each activations file and its group name, pairwise (a rule
    passes the files and the group names in the same order)."""
    if len(paths) != len(groups):
        raise ValueError(f"{len(paths)} activations files for {len(groups)} groups "
                         f"({', '.join(groups)})")
    return [load_group(p, kept_wnids, network, g, label_map=label_map, gram=gram)
            for p, g in zip(paths, groups, strict=True)]
