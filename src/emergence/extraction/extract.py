"""Layer activations of a CNN -> image x image Pearson correlation matrices, in HDF5.

One forward pass per batch captures every requested layer through forward hooks
(the preprocessed input through a forward pre-hook on the model). Each layer's
flattened float32 activations go to a row store (``N x F``): on a GPU, a tensor in
device memory while the stores fit ``device_budget_bytes``; then an in-memory array
while they fit ``ram_budget_bytes``; otherwise a file in a temporary directory next
to the output, written column-block by column-block from a small ring of staging
buffers by a background thread (``O_DIRECT`` where the file system allows it, so the
spilled gigabytes never pass through the page cache). After the last batch each store
is read back in column blocks (disk: one block ahead, in a thread) into a
:class:`~emergence.stats.similarity.PearsonAccumulator` (float64 sums and Gram matrix from a
fused numba kernel; torch on the device for device stores).

Temporaries follow :mod:`emergence.io`'s one scheme: the HDF5 file is written to
``.<out name>.tmp-<pid>`` beside it and renamed into place; disk row stores live in
``.<out name>.spill-<random>/`` beside it. Both are removed when the call ends, also on
an error; what a killed process leaves is removed when the job is rerun
(:func:`emergence.runner.start`).

HDF5 layout::

    /                      attrs: caller's attrs + model, weights, input_size, ...
    images/path            (N,) utf-8
    predictions/top5_index (N, 5) int64     top-5 of softmax(model output)
    predictions/top5_prob  (N, 5) float32
    predictions/top5_wnid  (N, 5) utf-8     ImageNet wnids ("" if not ImageNet-1k)
    layers/<name>/correlation  (N, N) float64
    layers/<name>/sums, gram, shift   PearsonAccumulator sufficient statistics
    layers/<name>/activations  (N, F) float32, only if F <= keep_raw_max_features
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import math
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import timm
import timm.data
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn
from torchvision import transforms
from tqdm.auto import tqdm

from emergence.device import resolve_device
from emergence.io import atomic_path, scratch_dir
from emergence.sources.layers import LayerSpec, check_layer_name
from emergence.sources.models import LoadedModel
from emergence.stats._gram import KC
from emergence.stats.similarity import SHIFT_COLUMNS, PearsonAccumulator

__all__ = [
    "PEARSON_STATISTIC",
    "ExtractionSummary",
    "extract_statistics",
    "load_image",
    "make_transform",
    "resolve_device",
]

PEARSON_STATISTIC = "pearson between images over features, float64, streamed"
TOP_K = 5
_RESERVED_ATTRS = frozenset(
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
    }
)


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as 8-bit RGB.

    Greyscale, CMYK, YCbCr, 16-bit and palette images are converted; images with
    transparency (RGBA, LA, palette with a transparent colour) are composited on
    white. EXIF orientation is *not* applied (as in timm / torchvision loaders).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    PIL.Image.Image
        A loaded (file closed) image in mode ``"RGB"``.

    Raises
    ------
    FileNotFoundError, OSError
        One line naming the file: missing, not an image, truncated or corrupt.
        Truncated files are never padded silently (PIL's ``LOAD_TRUNCATED_IMAGES``
        is not used).
    """
    try:
        return _load_image(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{os.fspath(path)}: image file not found") from exc
    except Image.UnidentifiedImageError as exc:
        raise OSError(f"{os.fspath(path)}: not an image file PIL can read; "
                      "replace or remove the file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise OSError(f"{os.fspath(path)}: cannot read image ({detail}); "
                      "replace or remove the file") from exc


def _load_image(path: str | os.PathLike[str]) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
            img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def make_transform(
    data_config: Mapping[str, Any], mode: Literal["timm", "resize"] = "timm"
) -> Callable[[Image.Image], torch.Tensor]:
    """Image -> normalised tensor, as the model expects.

    Parameters
    ----------
    data_config : Mapping
        timm data config (``input_size``, ``interpolation``, ``mean``, ``std``,
        ``crop_pct``, ``crop_mode``), e.g. :attr:`LoadedModel.data_config`.
    mode : {"timm", "resize"}
        ``"timm"``: timm's eval transform (resize the short side to
        ``size / crop_pct``, centre crop). ``"resize"``: resize the whole image to
        ``input_size`` (aspect ratio not kept, nothing cropped).

    Returns
    -------
    callable
        PIL image -> float32 tensor ``(C, H, W)``.
    """
    if mode == "timm":
        return timm.data.create_transform(**dict(data_config), is_training=False)
    if mode == "resize":
        _, height, width = data_config["input_size"]
        interpolation = timm.data.transforms.str_to_interp_mode(
            data_config.get("interpolation", "bicubic")
        )
        return transforms.Compose(
            [
                transforms.Resize((int(height), int(width)), interpolation=interpolation),
                transforms.ToTensor(),
                transforms.Normalize(
                    mean=torch.tensor(data_config["mean"]), std=torch.tensor(data_config["std"])
                ),
            ]
        )
    raise ValueError(f"preprocess must be 'timm' or 'resize', got {mode!r}")


class _ImageDataset(torch.utils.data.Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_image(self.paths[index]))


# --------------------------------------------------------------------------------------
# devices and determinism
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels, no cuDNN autotuning and full-fp32 (no TF32) convs/matmuls.

    The previous global settings are restored on exit.
    """
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        cudnn.deterministic,
    )
    new_api = hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision")
    if new_api:
        precision = (cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    else:
        precision = (cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        cudnn.benchmark = False
        cudnn.deterministic = True
        if new_api:
            cudnn.conv.fp32_precision = "ieee"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        else:
            cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic = saved[2], saved[3]
        if new_api:
            cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = precision
        else:
            cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = precision


# --------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------


class _Capture:
    """Forward (pre-)hooks writing each layer's flattened batch into its row store."""

    def __init__(self, net: nn.Module, layers: Sequence[LayerSpec]) -> None:
        modules = dict(net.named_modules())
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.stores: dict[str, NDArray[np.float32]] = {}
        self.rows = slice(0, 0)
        self.probing = True
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            for spec in layers:
                if spec.module == "":
                    self.handles.append(net.register_forward_pre_hook(self._pre_hook(spec.name)))
                else:
                    self.handles.append(
                        modules[spec.module].register_forward_hook(self._hook(spec.name))
                    )
        except BaseException:
            self.remove()
            raise

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._take(name, args[0] if args else None)

        return hook

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._take(name, output)

        return hook

    def _take(self, name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"layer {name!r}: expected a tensor, got {type(value).__name__}; "
                "choose a module whose forward returns a single tensor"
            )
        shape = tuple(int(d) for d in value.shape[1:])
        if self.probing:
            if name in self.shapes:
                raise RuntimeError(
                    f"layer {name!r}: its module runs more than once per forward pass; "
                    "choose a module that runs once"
                )
            self.shapes[name] = shape
            return
        if shape != self.shapes[name]:
            raise RuntimeError(f"layer {name!r}: shape {shape} differs from {self.shapes[name]}")
        flat = value.detach().reshape(value.shape[0], -1)
        # Copy now: later modules may modify this tensor in place.
        store = self.stores[name]
        if isinstance(store, torch.Tensor):  # a device store: no copy to the host
            store[self.rows].copy_(flat)
        elif isinstance(store, _DiskRows):
            store[self.rows] = flat
        else:  # torch's copy runs on all intra-op threads (numpy's on one)
            torch.from_numpy(store[self.rows]).copy_(flat)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


_ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and buffer addresses
_USE_O_DIRECT = True  # tests switch it off to cover the buffered fallback
_READERS = 4  # concurrent reads per disk-store block


def _block_columns(chunk_features: int) -> int:
    """Columns per statistics block: ``chunk_features`` rounded up to a multiple of the
    kernel's cache block (so RAM and disk stores give bit-identical statistics)."""
    return -(-chunk_features // KC) * KC


def _aligned_buffer(nbytes: int) -> NDArray[np.uint8]:
    """A byte array whose address and length are multiples of 4 KiB (usable for
    ``O_DIRECT``), at least one page."""
    nbytes = max(-(-nbytes // _ALIGN) * _ALIGN, _ALIGN)
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % _ALIGN
    return raw[skip : skip + nbytes]


class _Spill:
    """Background writer for the disk row stores, through a small ring of page-aligned
    staging buffers, and the directory their files live in.

    The forward hooks copy each batch into a free staging buffer (reused: no page
    faults) and go on; one thread writes the buffers out while the network computes.
    Files are opened with ``O_DIRECT`` where the file system allows it: the pages then
    never enter the page cache (so they cost neither page faults nor writeback, and do
    not count towards the process's memory); otherwise plain buffered I/O.
    """

    def __init__(self, directory: str, slot_bytes: int, ring_bytes: int = 256 << 20) -> None:
        self.directory = directory
        self.slot_bytes = -(-slot_bytes // _ALIGN) * _ALIGN
        slots = max(2, min(64, ring_bytes // self.slot_bytes))
        self._free: queue.Queue[NDArray[np.uint8]] = queue.Queue()
        self._buffers = [_aligned_buffer(self.slot_bytes) for _ in range(slots)]
        for buf in self._buffers:
            self._free.put(buf)
        self._jobs: queue.Queue[tuple[int, NDArray[np.uint8] | None, int, int, str] | None] = (
            queue.Queue())
        self._error: BaseException | None = None
        self._read: list[NDArray[np.uint8]] = []
        self._thread = threading.Thread(target=self._write_loop, name="spill-writer",
                                        daemon=True)
        self._thread.start()

    def open(self, name: str) -> int:
        path = os.path.join(self.directory, name)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        direct = getattr(os, "O_DIRECT", 0) if _USE_O_DIRECT else 0
        if direct:
            try:
                return os.open(path, flags | direct, 0o600)
            except OSError as err:  # e.g. tmpfs: EINVAL
                if err.errno != errno.EINVAL:
                    raise
        return os.open(path, flags, 0o600)

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fd, buf, nbytes, offset, path = job
            if buf is None:  # a finished store: free its disk space (see release)
                with contextlib.suppress(OSError):
                    os.close(fd)
                    os.unlink(path)
                continue
            try:
                if self._error is None:
                    view = memoryview(buf)[:nbytes]  # type: ignore[arg-type]
                    while view:
                        written = os.pwrite(fd, view, offset)
                        view, offset = view[written:], offset + written
            except OSError as err:
                self._error = OSError(err.errno, f"spilling activations to {path}: "
                                                 f"{err.strerror}; free disk space there "
                                                 "or raise extraction.ram_budget_mb in the "
                                                 "config (ram_budget_bytes)")
            finally:
                self._free.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def acquire(self) -> NDArray[np.uint8]:
        self._check()
        return self._free.get()

    def submit(self, fd: int, buf: NDArray[np.uint8], nbytes: int, offset: int, path: str) -> None:
        self._jobs.put((fd, buf, nbytes, offset, path))

    def flush(self) -> None:
        """Wait until every submitted write is on disk (or failed: raise its error)."""
        held = [self._free.get() for _ in self._buffers]  # all buffers back: all written
        for buf in held:
            self._free.put(buf)
        self._check()

    def release(self, fd: int, path: str) -> None:
        """Close and delete a store's file in the background. Freeing gigabytes on ext4
        takes seconds of waiting (1.6 s for 8.6 GB on the CI machine, almost no CPU),
        which this overlaps with the statistics of the following layers."""
        self._jobs.put((fd, None, 0, 0, path))

    def read_buffers(self, nbytes: int) -> list[NDArray[np.uint8]]:
        """Two aligned buffers of at least ``nbytes`` for reading back, shared by all the
        stores (read one after the other) and kept: fresh memory costs page faults."""
        if not self._read or len(self._read[0]) < nbytes:
            self._read = [_aligned_buffer(nbytes), _aligned_buffer(nbytes)]
        return self._read

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._buffers.clear()
        self._read.clear()


class _DiskRows:
    """An ``n x f`` float32 matrix in a file, written by row batches and read back by
    column blocks.

    Layout: column blocks of ``block`` columns (the last one narrower), each holding
    all ``n`` rows one after the other, each row padded to a multiple of 1,024 floats
    (4 KiB, the ``O_DIRECT`` alignment). A batch of rows is one contiguous write per
    block; a block is one contiguous read. Reads run one block ahead in a thread.
    """

    def __init__(self, spill: _Spill, name: str, shape: tuple[int, int], block: int) -> None:
        self.shape = shape
        self.path = os.path.join(spill.directory, name)
        self._spill = spill
        self._fd = spill.open(name)
        n, f = shape
        self._starts = list(range(0, f, block))
        self._widths = [min(block, f - c) for c in self._starts]
        self._padded = [-(-w // (_ALIGN // 4)) * (_ALIGN // 4) for w in self._widths]
        self._offsets = [0]
        for padded in self._padded:
            self._offsets.append(self._offsets[-1] + n * padded * 4)
        os.ftruncate(self._fd, self._offsets[-1])

    def __setitem__(self, rows: slice, values: torch.Tensor | NDArray[np.float32]) -> None:
        r0, r1, _ = rows.indices(self.shape[0])
        if isinstance(values, np.ndarray):
            values = torch.from_numpy(values)
        for c, (c0, width, padded) in enumerate(
                zip(self._starts, self._widths, self._padded, strict=True)):
            nbytes = (r1 - r0) * padded * 4
            if nbytes > self._spill.slot_bytes:
                raise ValueError(f"{r1 - r0} rows exceed the spill buffers' size")
            buf = self._spill.acquire()
            staged = np.frombuffer(buf, dtype=np.float32, count=(r1 - r0) * padded)
            staged = staged.reshape(r1 - r0, padded)
            torch.from_numpy(staged[:, :width]).copy_(values[:, c0 : c0 + width])
            self._spill.submit(self._fd, buf, nbytes,
                               self._offsets[c] + r0 * padded * 4, self.path)

    def blocks(self) -> Iterator[NDArray[np.float32]]:
        """The column blocks in order, each an ``n x width`` view valid until the next.

        Block ``c + 1`` is read while the caller works on block ``c``, in
        ``_READERS`` concurrent pieces (a virtual disk reads faster with several
        requests in flight: 1.1-1.6 GB/s with one, 1.7 with four, on the CI machine)."""
        n = self.shape[0]
        size = n * max(self._padded, default=0) * 4
        buffers = self._spill.read_buffers(size)

        def read_piece(c: int, lo: int, hi: int) -> None:
            view = memoryview(buffers[c % 2])  # type: ignore[arg-type]
            offset = self._offsets[c]
            while lo < hi:
                got = os.preadv(self._fd, [view[lo:hi]], offset + lo)
                if got <= 0:
                    raise OSError(f"{self.path}: short read at byte {offset + lo}")
                lo += got

        def read(pool: ThreadPoolExecutor, c: int) -> list[Future[None]]:
            nbytes = n * self._padded[c] * 4
            step = -(-nbytes // (_READERS * _ALIGN)) * _ALIGN
            return [pool.submit(read_piece, c, lo, min(lo + step, nbytes))
                    for lo in range(0, nbytes, step)]

        with ThreadPoolExecutor(_READERS, thread_name_prefix="spill-reader") as pool:
            pending = read(pool, 0) if self._starts else []
            for c in range(len(self._starts)):
                for piece in pending:
                    piece.result()
                pending = read(pool, c + 1) if c + 1 < len(self._starts) else []
                block = np.frombuffer(buffers[c % 2], dtype=np.float32,
                                      count=n * self._padded[c])
                yield block.reshape(n, self._padded[c])[:, : self._widths[c]]

    def __getitem__(self, key: tuple[slice, slice]) -> NDArray[np.float32]:
        """All of it (``store[:, :]``), for ``keep_raw_max_features``."""
        if key != (slice(None), slice(None)):
            raise IndexError("a disk store is read whole or block by block")
        return np.concatenate([b.copy() for b in self.blocks()], axis=1) if self._starts \
            else np.empty(self.shape, dtype=np.float32)

    def release(self) -> None:
        """Done with it: the file is closed and deleted by the spill's background thread."""
        if self._fd >= 0:
            self._spill.release(self._fd, self.path)
            self._fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _device_budget(dev: torch.device, requested: int | None) -> int:
    """Bytes of row stores to keep on ``dev`` (see ``device_budget_bytes``)."""
    if requested is not None:
        return max(int(requested), 0)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(0.7 * free)
    return 0


def _device_moments(store: torch.Tensor, chunk_features: int) -> PearsonAccumulator:
    """:class:`PearsonAccumulator` statistics of a device store, computed on its device.

    The same float64 statistics as :meth:`PearsonAccumulator.update` (shift by the
    mean of the first ``SHIFT_COLUMNS`` columns, then sums and Gram matrix chunk by
    chunk), in torch (a different summation order: equal to float64 rounding).
    """
    n, n_features = store.shape
    shift = store[:, :SHIFT_COLUMNS].double().mean(dim=1)
    sums = torch.zeros(n, dtype=torch.float64, device=store.device)
    gram = torch.zeros((n, n), dtype=torch.float64, device=store.device)
    for col in range(0, n_features, chunk_features):
        block = store[:, col : col + chunk_features].double() - shift[:, None]
        sums += block.sum(dim=1)
        gram += block @ block.T
    return PearsonAccumulator.from_moments(
        sums.cpu().numpy(), gram.cpu().numpy(), shift.cpu().numpy(), n_features)


def _plan_storage(sizes: Mapping[str, int], budget: int) -> set[str]:
    """Names whose stores fit a budget (device or RAM): smallest first while they fit."""
    chosen: set[str] = set()
    used = 0
    for name in sorted(sizes, key=lambda n: (sizes[n], n)):
        if used + sizes[name] > budget:
            break
        chosen.add(name)
        used += sizes[name]
    return chosen


# --------------------------------------------------------------------------------------
# HDF5
# --------------------------------------------------------------------------------------


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


_STR = h5py.string_dtype("utf-8")


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
    """

    path: Path
    n_images: int
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    spilled: list[str] = field(default_factory=list)
    on_device: list[str] = field(default_factory=list)
    seconds_forward: float = 0.0
    seconds_statistics: float = 0.0


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
) -> ExtractionSummary:
    """Run the images through the model once and write per-layer correlation matrices.

    Parameters
    ----------
    model : LoadedModel
        From :func:`emergence.sources.models.load_model`; moved to ``device`` for the run and
        back to its original device afterwards.
    image_paths : sequence of path
        Images, in the row order of every output matrix.
    layers : sequence of LayerSpec
        From :func:`emergence.sources.layers.resolve_layers`.
    out_path : path
        HDF5 file to write (parent directories are created). Written atomically:
        ``.<name>.tmp-<pid>`` beside it, then renamed (:func:`emergence.io.atomic_path`);
        nothing is left on error.
    batch_size : int, default 32
        Images per forward pass. Reruns with the same batch size and device are
        bit-identical; different batch sizes agree to float32 rounding (CPU/GPU
        convolution kernels are not batch-invariant).
    device : str or torch.device, default "cpu"
        ``"auto"`` picks ``cuda`` when available.
    preprocess : {"timm", "resize"}, default "timm"
        See :func:`make_transform`.
    keep_raw_max_features : int, default 0
        Also store ``layers/<name>/activations`` (N x F float32) when F is at most this.
    chunk_features : int, default 2**16
        Feature columns per statistics block (rounded up to a multiple of 1,024): the
        width of a disk store's read-back blocks (2**16: 43 MB per block at N = 166)
        and of the device path's float64 chunks.
    ram_budget_bytes : int, default 64 MiB
        Total bytes of row stores kept in RAM (smallest layers first); the others are
        files in a scratch directory ``.<name>.spill-<random>/`` next to ``out_path``
        (:func:`emergence.io.scratch_dir`), removed afterwards. Disk
        stores are written from reused staging buffers with ``O_DIRECT`` by a
        background thread, so they cost the forward pass little on a fast disk, while
        fresh RAM costs page faults (VGG16, 166 images, 2-core VM: 41-42 s with disk
        stores against a bare 37.6-40 s; 1 GiB of RAM stores added 4-6 s). Raise it on
        slow disks or file systems without ``O_DIRECT`` (tmpfs).
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

    Returns
    -------
    ExtractionSummary
    """
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
    extra_attrs = dict(attrs or {})
    clash = sorted(set(extra_attrs) & _RESERVED_ATTRS)
    if clash:
        raise ValueError(f"attrs {clash} are written by extract_statistics itself")

    meta = {
        key: _meta_column(key, values, len(paths)) for key, values in (image_meta or {}).items()
    }

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    net = model.model
    n = len(paths)
    transform = make_transform(model.data_config, preprocess)
    loader = torch.utils.data.DataLoader(
        _ImageDataset(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    summary = ExtractionSummary(path=out, n_images=n)
    first_param = next(net.parameters(), None)
    home = first_param.device if first_param is not None else torch.device("cpu")
    scratch = contextlib.ExitStack()
    spill: _Spill | None = None
    block = _block_columns(chunk_features)
    capture: _Capture | None = None
    saved_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        net.to(dev).eval()
        capture = _Capture(net, layers)
        top_index = np.zeros((n, TOP_K), dtype=np.int64)
        top_prob = np.zeros((n, TOP_K), dtype=np.float32)
        n_classes = 0
        classifies = getattr(net, "num_classes", 1) != 0  # num_classes=0: output = features
        bar = tqdm(
            total=math.ceil(n / batch_size),
            desc=f"extract {model.name}",
            unit="batch",
            file=sys.stderr,
            disable=not progress,
        )
        with _deterministic(), torch.inference_mode(), bar:
            start = 0
            for batch in loader:
                x = batch.to(dev, non_blocking=True)
                if capture.probing:
                    # Shapes first (one image), then size the stores: RAM or disk.
                    net(x[:1])
                    silent = [spec for spec in layers if spec.name not in capture.shapes]
                    if silent:
                        raise RuntimeError(
                            f"layers {[tuple(spec) for spec in silent]} produced no output "
                            f"in a forward pass of {model.name}"
                        )
                    sizes = {name: n * math.prod(capture.shapes[name]) * 4 for name in names}
                    on_device = _plan_storage(sizes, _device_budget(dev, device_budget_bytes))
                    in_ram = _plan_storage(
                        {k: v for k, v in sizes.items() if k not in on_device}, ram_budget_bytes)
                    for name in names:
                        shape = (n, math.prod(capture.shapes[name]))
                        if name in on_device:
                            capture.stores[name] = torch.empty(  # type: ignore[assignment]
                                shape, dtype=torch.float32, device=dev)
                            summary.on_device.append(name)
                            continue
                        if name in in_ram:
                            capture.stores[name] = np.empty(shape, dtype=np.float32)
                            continue
                        if spill is None:
                            spill_dir = scratch.enter_context(scratch_dir(out))
                            spill = _Spill(str(spill_dir), min(batch_size, n) * block * 4)
                        capture.stores[name] = _DiskRows(  # type: ignore[assignment]
                            spill, f"{len(summary.spilled)}.f32", shape, block
                        )
                        summary.spilled.append(name)
                    capture.probing = False
                stop = start + x.shape[0]
                capture.rows = slice(start, stop)
                logits = net(x)
                if classifies and isinstance(logits, torch.Tensor) and logits.ndim == 2:
                    n_classes = int(logits.shape[1])
                    k = min(TOP_K, n_classes)
                    probs = torch.softmax(logits.float(), dim=1)
                    values, indices = torch.topk(probs, k, dim=1)
                    top_prob[start:stop, :k] = values.cpu().numpy()
                    top_index[start:stop, :k] = indices.cpu().numpy()
                start = stop
                bar.update(1)
        capture.remove()
        if spill is not None:
            spill.flush()
        summary.layers = {name: capture.shapes[name] for name in names}
        t1 = time.perf_counter()
        summary.seconds_forward = t1 - t0

        with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
            _write_root(
                h5,
                model,
                paths,
                layers,
                capture.shapes,
                preprocess,
                dev,
                batch_size,
                chunk_features,
                extra_attrs,
            )
            for key, values in meta.items():
                _write_column(h5, f"images/{key}", values)
            _write_predictions(h5, net, top_index, top_prob, n_classes)
            for index, spec in enumerate(
                tqdm(layers, desc="statistics", unit="layer", file=sys.stderr, disable=not progress)
            ):
                store = capture.stores[spec.name]
                if isinstance(store, torch.Tensor):
                    acc = _device_moments(store, chunk_features)
                elif isinstance(store, _DiskRows):
                    acc = PearsonAccumulator(n)
                    for chunk in store.blocks():
                        acc.update(chunk)
                else:  # the kernel blocks the columns itself
                    acc = PearsonAccumulator(n)
                    acc.update(store)
                group = h5.create_group(f"layers/{spec.name}")
                group.attrs["module"] = spec.module
                group.attrs["n_features"] = acc.n_features
                group.attrs["shape"] = list(capture.shapes[spec.name])
                group.attrs["index"] = index
                group.attrs["statistic"] = PEARSON_STATISTIC
                group.create_dataset("correlation", data=acc.correlation())
                group.create_dataset("sums", data=acc.sums)
                group.create_dataset("gram", data=acc.gram)
                group.create_dataset("shift", data=acc.shift)
                if store.shape[1] <= keep_raw_max_features:
                    raw = store.cpu().numpy() if isinstance(store, torch.Tensor) else store[:, :]
                    group.create_dataset("activations", data=raw)
                if isinstance(store, _DiskRows):
                    store.release()  # its file is deleted while the next layers compute
        summary.seconds_statistics = time.perf_counter() - t1
        return summary
    finally:
        if capture is not None:
            capture.remove()
        if spill is not None:
            spill.close()
        if capture is not None:
            for store in capture.stores.values():
                if isinstance(store, _DiskRows):
                    store.close()
            capture.stores.clear()
        scratch.close()  # the spill directory
        net.to(home)
        torch.set_num_threads(saved_threads)


def _write_root(
    h5: h5py.File,
    model: LoadedModel,
    paths: Sequence[str],
    layers: Sequence[LayerSpec],
    shapes: Mapping[str, tuple[int, ...]],
    preprocess: str,
    device: torch.device,
    batch_size: int,
    chunk_features: int,
    extra: Mapping[str, Any],
) -> None:
    cfg = model.data_config
    for key, value in extra.items():
        h5.attrs[key] = _attr_value(value)
    h5.attrs["model"] = model.name
    h5.attrs["weights"] = model.weights
    h5.attrs["input_size"] = [int(v) for v in cfg["input_size"]]
    h5.attrs["interpolation"] = str(cfg.get("interpolation", ""))
    h5.attrs["mean"] = [float(v) for v in cfg["mean"]]
    h5.attrs["std"] = [float(v) for v in cfg["std"]]
    h5.attrs["crop_pct"] = float(cfg.get("crop_pct", 1.0))
    h5.attrs["crop_mode"] = str(cfg.get("crop_mode", ""))
    h5.attrs["preprocess"] = preprocess
    h5.attrs["device"] = str(device)
    h5.attrs["batch_size"] = batch_size
    h5.attrs["chunk_features"] = chunk_features
    h5.attrs["n_images"] = len(paths)
    h5.attrs["layer_names"] = [spec.name for spec in layers]
    h5.attrs["emergence_version"] = _emergence_version()
    h5.attrs["torch_version"] = str(torch.__version__)
    h5.attrs["timm_version"] = str(timm.__version__)
    h5.attrs["numpy_version"] = str(np.__version__)
    # What the forward pass's last bits depend on besides the inputs (see `threads`).
    h5.attrs["torch_threads"] = torch.get_num_threads()
    h5.attrs["cpu_capability"] = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    h5.create_dataset("images/path", data=np.array(paths, dtype=object), dtype=_STR)


def _meta_column(key: str, values: Sequence[Any], n: int) -> NDArray[Any]:
    """Validate one ``image_meta`` column: strings (object array) or 1-d numbers."""
    if not key or key == "path" or "/" in key:
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


def _write_column(h5: h5py.File, name: str, values: NDArray[Any]) -> None:
    h5.create_dataset(name, data=values, dtype=_STR if values.dtype == object else None)


def _write_predictions(
    h5: h5py.File,
    net: nn.Module,
    top_index: NDArray[np.int64],
    top_prob: NDArray[np.float32],
    n_classes: int,
) -> None:
    if n_classes == 0:
        return  # the model's output is not a (batch, classes) tensor
    k = min(TOP_K, n_classes)
    wnids: list[str] = []
    subset = timm.data.infer_imagenet_subset(net)
    if subset is not None:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == n_classes:
            wnids = [str(w) for w in info.label_names()]
    labels = np.full(top_index.shape, "", dtype=object)
    if wnids:
        labels[:, :k] = np.array(wnids, dtype=object)[top_index[:, :k]]
    group = h5.create_group("predictions")
    group.attrs["source"] = "softmax of the model output"
    group.attrs["k"] = k
    group.attrs["label_set"] = subset if wnids else ""
    if k < TOP_K:  # fewer classes than 5: pad
        top_index[:, k:] = -1
        top_prob[:, k:] = np.nan
    group.create_dataset("top5_index", data=top_index)
    group.create_dataset("top5_prob", data=top_prob)
    group.create_dataset("top5_wnid", data=labels, dtype=_STR)
