"""Layer activations of a CNN -> image x image Pearson correlation matrices, in HDF5.

:func:`extract_statistics` runs the images through the model once and writes one
activations file (:mod:`emergence.formats.activations`, which owns its layout). The
steps, each in its module:

1. :mod:`~emergence.extraction.preprocess`: image files -> model input batches.
2. :mod:`~emergence.extraction.forward`: one forward pass per batch (deterministic
   settings, fixed torch threads); hooks capture every requested layer, the model's
   top-5 predictions are kept.
3. :mod:`~emergence.extraction.rowstore`: each layer's flattened float32 activations
   wait in a row store (device memory, RAM, or a file written with ``O_DIRECT``), then
   are reduced to exact float64 Pearson statistics.
4. :mod:`emergence.formats.activations`: the statistics are written, layer by layer.

Temporaries follow :mod:`emergence.io`'s one scheme: the HDF5 file is written to
``.<out name>.tmp-<host>-<pid>`` beside it and renamed into place
(:func:`emergence.io.atomic_h5`); disk row stores live in
``.<out name>.spill-<host>-<pid>-<random>/`` beside it. Both are removed when the call
ends, also on an error; what a killed process leaves is removed when the job is rerun
(:func:`emergence.runner.start`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from numpy.typing import NDArray
from tqdm.auto import tqdm

from emergence.device import resolve_device
from emergence.extraction.forward import (
    Capture,
    Predictions,
    forward_pass,
    moved_to,
    reused_heap,
    runtime_attrs,
    torch_threads,
)
from emergence.extraction.preprocess import image_loader, make_transform
from emergence.extraction.rowstore import RowStores
from emergence.formats.activations import (
    check_attrs,
    image_column,
    write_image_column,
    write_layer,
    write_predictions,
    write_root,
)
from emergence.io import atomic_h5
from emergence.sources.models.layers import LayerSpec, check_layer_name
from emergence.sources.models.loaded import LoadedModel

__all__ = ["ExtractionSummary", "extract_statistics"]


@dataclass
class ExtractionSummary:
    """What :func:`extract_statistics` did.

    Attributes
    ----------
    path : pathlib.Path
        The HDF5 file written.
    n_images : int
    layers : dict[str, tuple[int, ...]]
        Activation shape (without batch) per layer, network order.
    spilled : list[str]
        Layers whose row store was a file on disk.
    on_device : list[str]
        Layers whose row store (and statistics) stayed in the device's memory.
    seconds_forward, seconds_statistics : float
        Wall time of the forward passes (incl. image loading) and of the statistics.
    exif_transposed : int
        Images flipped or rotated to their EXIF orientation tag (see
        :func:`~emergence.extraction.preprocess.load_image`).
    """

    path: Path
    n_images: int
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    spilled: list[str] = field(default_factory=list)
    on_device: list[str] = field(default_factory=list)
    seconds_forward: float = 0.0
    seconds_statistics: float = 0.0
    exif_transposed: int = 0



def extract_statistics(
    model: LoadedModel,
    image_paths: Sequence[str | os.PathLike[str]],
    layers: Sequence[LayerSpec],
    out_path: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    preprocess: Literal["timm", "resize"] = "timm",
    keep_raw_max_features: int = 0,
    chunk_features: int = 1 << 16,
    ram_budget_bytes: int = 64 << 20,
    device_budget_bytes: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    image_meta: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
    num_workers: int = 0,
    threads: int | None = None,
    reuse_freed_memory: bool = True,
) -> ExtractionSummary:
    """Run the images through the model once and write per-layer correlation matrices.

    Parameters
    ----------
    model : LoadedModel
        From :func:`emergence.sources.models.spec.load_model`; moved to ``device`` for the run and
        back to its original device afterwards.
    image_paths : sequence of path
        Images, in the row order of every output matrix.
    layers : sequence of LayerSpec
        From :func:`emergence.sources.models.layers.resolve_layers`.
    out_path : path
        HDF5 file to write (parent directories are created). Written atomically:
        ``.<name>.tmp-<host>-<pid>`` beside it, then renamed (:func:`emergence.io.atomic_path`);
        nothing is left on error.
    batch_size : int, default 32
        Images per forward pass. Reruns with the same batch size and device are
        bit-identical; different batch sizes agree to float32 rounding (CPU/GPU
        convolution kernels are not batch-invariant).
    device : str or torch.device, default "cpu"
        ``"auto"`` picks ``cuda`` when available.
    preprocess : {"timm", "resize"}, default "timm"
        See :func:`~emergence.extraction.preprocess.make_transform`.
    keep_raw_max_features : int, default 0
        Also store ``layers/<name>/activations`` (N x F float32) when F is at most this.
    chunk_features : int, default 2**16
        Feature columns per statistics block (rounded up to a multiple of 1,024): the
        width of a disk store's read-back blocks (2**16: 43 MB per block at N = 166)
        and of the device path's float64 chunks.
    ram_budget_bytes : int, default 64 MiB
        Total bytes of row stores kept in RAM (smallest layers first); the others are
        files in a scratch directory ``.<name>.spill-<host>-<pid>-<random>/`` next to ``out_path``
        (:func:`emergence.io.scratch_dir`), removed afterwards. Disk
        stores are written from reused staging buffers with ``O_DIRECT`` by a
        background thread, so they cost the forward pass little on a fast disk, while
        fresh RAM costs page faults (measured in bench/ and the README's Performance
        section). Raise it on slow disks or file systems without ``O_DIRECT`` (tmpfs).
    device_budget_bytes : int, optional
        Total bytes of row stores kept in the device's memory as torch tensors, their
        statistics computed there too (smallest layers first, before the RAM budget).
        Default: on CUDA, 70 % of the device memory free after a one-image probe; on
        the CPU, 0 (numpy's BLAS is faster there). Set it on the CPU to run the device
        code path there.
    attrs : Mapping, optional
        Extra root attributes (e.g. ``network``, ``group``); may not reuse the names
        this function writes. Mappings and ``None`` are stored as JSON strings.
    image_meta : Mapping[str, Sequence], optional
        Per-image columns (e.g. ``wnid``, ``concept``), one value per image, written
        as ``images/<key>`` next to ``images/path`` (strings as utf-8, numbers as
        numeric arrays).
    progress : bool, default True
        tqdm progress bars on stderr.
    num_workers : int, default 0
        ``torch.utils.data.DataLoader`` workers for image decoding.
    threads : int, optional
        torch intra-op threads for the run (restored afterwards); default: leave torch's
        setting. On the CPU, oneDNN's convolutions give different last bits at different
        thread counts (the statistics after them do not), so a fixed count makes the
        activations reproducible whatever CPUs a scheduler grants. Recorded with the CPU's
        instruction set and the torch version in the root attributes.
    reuse_freed_memory : bool
        Keep freed memory in the heap during the forward pass
        (:func:`~emergence.extraction.forward.reused_heap`, glibc only): each batch's
        activations reuse the last batch's pages. About 1.3x faster on the CPU for
        VGG16, for more peak memory (the heap keeps its largest extent); no value changes.

    Returns
    -------
    ExtractionSummary
    """
    paths, extra_attrs, columns = _check_arguments(
        image_paths, layers, batch_size, chunk_features, attrs, image_meta)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    n = len(paths)
    if model.transform is not None:  # the factory's own transform replaces `preprocess`
        transform, preprocess_attr = model.transform, f"factory transform: {model.transform!r}"
    else:
        transform, preprocess_attr = make_transform(model.data_config, preprocess), preprocess
    loader = image_loader(paths, transform,
                          batch_size=batch_size, num_workers=num_workers,
                          pin_memory=dev.type == "cuda")
    summary = ExtractionSummary(path=out, n_images=n)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:  # undone in reverse order, also on an error
        stack.enter_context(torch_threads(threads))
        stack.enter_context(moved_to(model.model, dev))
        stores = stack.enter_context(RowStores(out, n, min(batch_size, n), chunk_features))
        capture = stack.enter_context(Capture(model.model, layers, stores.write))

        def allocate(shapes: Mapping[str, tuple[int, ...]]) -> None:
            stores.allocate({spec.name: math.prod(shapes[spec.name]) for spec in layers}, dev,
                            device_budget_bytes=device_budget_bytes,
                            ram_budget_bytes=ram_budget_bytes)

        with reused_heap() if reuse_freed_memory else contextlib.nullcontext(False):
            predictions = forward_pass(model.model, loader, n, capture, layers, allocate,
                                       device=dev, desc=model.name, progress=progress)
        capture.remove()
        stores.flush()
        summary.layers = {spec.name: capture.shapes[spec.name] for spec in layers}
        summary.spilled, summary.on_device = list(stores.spilled), list(stores.on_device)
        t1 = time.perf_counter()
        summary.seconds_forward = t1 - t0

        root = {"model": model.name, "weights": model.weights, "data_config": model.data_config,
                "preprocess": preprocess_attr, "device": str(dev), "batch_size": batch_size,
                "chunk_features": chunk_features, "paths": paths,
                "layer_names": [spec.name for spec in layers], "runtime": runtime_attrs(),
                "exif_orientation": loader.exif_orientation}
        summary.exif_transposed = loader.exif_transposed
        _write_activations(out, root, extra_attrs, columns, predictions, layers, summary.layers,
                           capture.layer_attrs, stores, keep_raw_max_features=keep_raw_max_features,
                           progress=progress)
        summary.seconds_statistics = time.perf_counter() - t1
        return summary


def _check_arguments(
    image_paths: Sequence[str | os.PathLike[str]],
    layers: Sequence[LayerSpec],
    batch_size: int,
    chunk_features: int,
    attrs: Mapping[str, Any] | None,
    image_meta: Mapping[str, Sequence[Any]] | None,
) -> tuple[list[str], dict[str, Any], dict[str, NDArray[Any]]]:
    """The image paths, the extra root attributes and the per-image columns, checked."""
    paths = [os.fspath(p) for p in image_paths]
    if not paths:
        raise ValueError("no images given")
    if not layers:
        raise ValueError("no layers given")
    if batch_size < 1 or chunk_features < 1:
        raise ValueError("batch_size and chunk_features must be positive")
    names = [spec.name for spec in layers]
    for name in names:
        check_layer_name(name)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate layer names in {names}")
    extra_attrs = check_attrs(attrs)
    columns = {key: image_column(key, values, len(paths))
               for key, values in (image_meta or {}).items()}
    return paths, extra_attrs, columns


def _write_activations(
    out: Path,
    root: Mapping[str, Any],
    extra_attrs: Mapping[str, Any],
    columns: Mapping[str, NDArray[Any]],
    predictions: Predictions,
    layers: Sequence[LayerSpec],
    shapes: Mapping[str, tuple[int, ...]],
    layer_attrs: Mapping[str, Mapping[str, Any]],
    stores: RowStores,
    *,
    keep_raw_max_features: int,
    progress: bool,
) -> None:
    """The activations file: root attributes, image columns, predictions, then each layer's
    statistics in order as the stores are reduced (:meth:`RowStores.statistics`: two at a
    time on two threads or more; a disk store's file is released once written)."""
    with atomic_h5(out) as h5:
        write_root(h5, extra_attrs, **root)
        for key, values in columns.items():
            write_image_column(h5, key, values)
        write_predictions(h5, predictions.top_index, predictions.top_prob,
                          predictions.n_classes, predictions.class_wnids, predictions.label_set)
        statistics = contextlib.closing(stores.statistics([spec.name for spec in layers]))
        with statistics as accumulators:
            for index, (spec, acc) in enumerate(zip(
                tqdm(layers, desc="statistics", unit="layer", file=sys.stderr,
                     disable=not progress), accumulators, strict=True)):
                raw = (stores.rows(spec.name)
                       if stores.features(spec.name) <= keep_raw_max_features else None)
                write_layer(h5, spec.name, module=spec.module, index=index,
                            shape=shapes[spec.name], acc=acc, activations=raw,
                            extra=layer_attrs.get(spec.name))
                stores.release(spec.name)
