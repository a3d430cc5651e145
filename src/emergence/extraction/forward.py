"""The forward pass: hooks that capture each layer's output, deterministic settings, threads.

:func:`forward_pass` runs every batch through the network once. Forward hooks (a
forward pre-hook on the model for the preprocessed input, ``pixels``) hand each
requested layer's features (its output flattened, or reduced by the layer's ``tokens``
choice: :mod:`emergence.extraction.tokens`) to a ``write`` callback (the row stores); the
first batch is preceded by a one-image probe that gives every layer's shape, from which the
caller sizes those stores. The top :data:`~emergence.formats.activations.TOP_K`
classes of the model's softmax are kept per image.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import timm.data
import torch
from numpy.typing import NDArray
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from tqdm.auto import tqdm

from emergence.extraction.preprocess import ImageBatches
from emergence.extraction.tokens import TokenReduction, patch_count, patch_embeds
from emergence.formats.activations import TOP_K
from emergence.sources.common import class_wnids
from emergence.sources.models.layers import LayerSpec

__all__ = ["Capture", "Predictions", "deterministic", "forward_pass", "moved_to", "probe",
           "reused_heap", "torch_threads"]

#: ``write(layer name, rows, features (batch, features))``: copy the batch now, the tensor may be
#: modified in place by later modules.
Write = Callable[[str, slice, torch.Tensor], None]


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
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


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (``None``: left as it is), restored
    on exit."""
    saved = torch.get_num_threads()
    try:
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(saved)


# glibc's mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_FREED = (1 << 31) - 1  # the largest trim threshold mallopt takes (an int): 2 GiB


def _glibc() -> Any:
    """The C library if it is glibc (``mallopt``, ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"):
            getattr(libc, name)
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None
    return libc


@contextlib.contextmanager
def reused_heap() -> Iterator[bool]:
    """Freed memory kept in the process's heap for the next allocation, restored on exit;
    yields whether that was possible (glibc only; elsewhere nothing changes).

    glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and returns it with ``munmap`` when freed, so each large activation of every
    batch is new memory whose first touch costs a page fault per 4 KiB page: VGG16 at
    batch 32 took 22 M minor faults and 24 % of its CPU forward time in them on this
    project's VM (README, Performance). Within this context large blocks come from the
    heap (``M_MMAP_MAX`` 0) and stay mapped when freed (``M_TRIM_THRESHOLD`` 2 GiB), so
    the next batch reuses the same pages. No value changes: torch aligns its buffers to
    64 bytes either way. On exit glibc's default values are set again and the heap is
    trimmed (``malloc_trim``), so the memory goes back to the system; glibc's dynamic mmap
    threshold (raised as large blocks are freed) stays off, as after any ``mallopt``, so a
    later bare pass in the same process is not the one a fresh process runs (the bench
    runs each pass in its own process). The price is peak memory: the heap keeps its
    largest extent, larger than the most memory in use at once (VGG16: 1.3-3.2 GB of heap
    for 0.8-1.4 GB in use).
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    try:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def runtime_attrs() -> dict[str, Any]:
    """What the forward pass's last bits depend on besides its inputs: the torch and timm
    versions, the torch thread count now set and the CPU's vector capability (attributes
    of the activations file)."""
    return {"torch_version": str(torch.__version__), "timm_version": str(timm.__version__),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"}


@contextlib.contextmanager
def moved_to(net: nn.Module, device: torch.device) -> Iterator[None]:
    """``net`` on ``device`` in eval mode; back on the device of its parameters on exit."""
    first_param = next(net.parameters(), None)
    home = first_param.device if first_param is not None else torch.device("cpu")
    try:
        net.to(device).eval()
        yield
    finally:
        net.to(home)


class Capture:
    """Forward (pre-)hooks handing each layer's features to ``write``.

    While :attr:`probing`, a forward pass only records each layer's output shape; then
    :meth:`end_probe` decides each layer's ``tokens`` reduction
    (:class:`~emergence.extraction.tokens.TokenReduction`, for the layers that set it) and
    fills :attr:`shapes` (the features' shapes, without the batch dimension) and
    :attr:`layer_attrs` (what the activations file records of the reduction). Afterwards
    each batch's features ``(batch, features)`` go to ``write(name, rows, features)`` with
    :attr:`rows` the batch's rows. The hooks are removed by :meth:`remove` (or on leaving
    the ``with`` block).
    """

    def __init__(self, net: nn.Module, layers: Sequence[LayerSpec], write: Write) -> None:
        modules = dict(net.named_modules())
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.layer_attrs: dict[str, dict[str, Any]] = {}
        self.rows = slice(0, 0)
        self.probing = True
        self._net = net
        self._layers = list(layers)
        self._write = write
        self._outputs: dict[str, tuple[int, ...]] = {}
        self._reduce: dict[str, TokenReduction] = {}
        self._patches: dict[str, int] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._probe_handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            for spec in layers:
                if spec.module == "":
                    self.handles.append(net.register_forward_pre_hook(self._pre_hook(spec.name)))
                else:
                    self.handles.append(
                        modules[spec.module].register_forward_hook(self._hook(spec.name))
                    )
            tokened = [spec.module for spec in layers if spec.tokens not in (None, "all")]
            for path in patch_embeds(net, tokened):
                self._probe_handles.append(
                    modules[path].register_forward_hook(self._patch_hook(path)))
        except BaseException:
            self.remove()
            raise

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._take(name, args[0] if args else None)

        return hook

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._take(name, output)

        return hook

    def _patch_hook(self, path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            count = patch_count(module, output)
            if count is not None:
                self._patches[path] = count

        return hook

    def _take(self, name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"layer {name!r}: expected a tensor, got {type(value).__name__}; "
                "choose a module whose forward returns a single tensor"
            )
        shape = tuple(int(d) for d in value.shape[1:])
        if self.probing:
            if name in self._outputs:
                raise RuntimeError(
                    f"layer {name!r}: its module runs more than once per forward pass; "
                    "choose a module that runs once"
                )
            self._outputs[name] = shape
            return
        if shape != self._outputs[name]:
            raise RuntimeError(f"layer {name!r}: shape {shape} differs from "
                               f"{self._outputs[name]}")
        value = value.detach()
        reduce = self._reduce.get(name)
        self._write(name, self.rows,
                    reduce(value) if reduce else value.reshape(value.shape[0], -1))

    def restart_probe(self) -> None:
        """Forget what a probe pass recorded (before probing again)."""
        self._outputs.clear()
        self._patches.clear()

    def end_probe(self) -> None:
        """After the probe pass: each layer's reduction, :attr:`shapes` and
        :attr:`layer_attrs`; later passes write. The layers that produced no output are
        left out of :attr:`shapes` (the caller reports them)."""
        for spec in self._layers:
            if spec.name not in self._outputs:
                continue
            shape = self._outputs[spec.name]
            if spec.tokens is not None:
                reduce = TokenReduction(self._net, spec.name, spec.module, spec.tokens, shape,
                                        self._patches)
                self._reduce[spec.name] = reduce
                self.layer_attrs[spec.name] = reduce.attrs
                shape = reduce.shape
            self.shapes[spec.name] = shape
        for handle in self._probe_handles:
            handle.remove()
        self._probe_handles.clear()
        self.probing = False

    def remove(self) -> None:
        for handle in self.handles + self._probe_handles:
            handle.remove()
        self.handles.clear()
        self._probe_handles.clear()


def probe(net: nn.Module, image: torch.Tensor, capture: Capture) -> None:
    """The probe pass of ``capture`` for the layers' shapes: ``image`` (one) through ``net``
    with fake tensors (shapes and dtypes only, no arithmetic) where the network allows it,
    else for real.

    A real probe costs more than its image's share of the forward pass: the batch-1
    convolutions run (and oneDNN builds their kernels) only for it. VGG16 on the project's
    2-core VM, loaded (load average 8): 5.0-5.7 s per real probe, 0.11-0.24 s per fake one,
    67-70 s per batch of 32 (a real probe is 2.5 images' worth). Whatever goes wrong in it
    (an operation fake tensors cannot run, a value the forward pass reads) falls back to
    the real pass, which raises the genuine errors (a layer that is no single tensor, or
    runs twice). The modules' attributes are
    put back as they were: a forward pass that caches a tensor on its module must not keep
    a fake one. The batches' shapes are checked against the probe's anyway.
    """
    saved = [(module, dict(vars(module))) for module in net.modules()]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            net(mode.from_tensor(image))
        return
    except Exception:  # noqa: BLE001 - the real pass decides
        capture.restart_probe()
    finally:
        for module, attrs in saved:
            current = vars(module)
            if current.keys() != attrs.keys() or any(current[k] is not v
                                                     for k, v in attrs.items()):
                current.clear()
                current.update(attrs)
    net(image)


@dataclass
class Predictions:
    """The top :data:`TOP_K` softmax classes per image (``n_classes`` 0: the model's output
    is not a ``(batch, classes)`` tensor), and the wnids of the model's classes when it
    classifies ImageNet (``label_set``: timm's name of that class set)."""

    top_index: NDArray[np.int64]
    top_prob: NDArray[np.float32]
    n_classes: int = 0
    class_wnids: list[str] = field(default_factory=list)
    label_set: str = ""


def forward_pass(
    net: nn.Module,
    batches: ImageBatches,
    n_images: int,
    capture: Capture,
    layers: Sequence[LayerSpec],
    allocate: Callable[[Mapping[str, tuple[int, ...]]], None],
    *,
    device: torch.device,
    desc: str,
    progress: bool = True,
) -> Predictions:
    """Run every batch through ``net`` once (deterministic settings, no autograd).

    Before the first batch, one image probes the layers' shapes and ``allocate(shapes)``
    is called (shapes without the batch dimension); every batch then reaches the
    capture's ``write``. ``desc`` names the model in the progress bar and errors.
    """
    top_index = np.zeros((n_images, TOP_K), dtype=np.int64)
    top_prob = np.zeros((n_images, TOP_K), dtype=np.float32)
    n_classes = 0
    classifies = getattr(net, "num_classes", 1) != 0  # num_classes=0: output = features
    bar = tqdm(total=len(batches), desc=f"extract {desc}", unit="batch", file=sys.stderr,
               disable=not progress)
    with deterministic(), torch.inference_mode(), bar:
        start = 0
        for batch in batches:
            x = batch.to(device, non_blocking=True)
            if capture.probing:
                # Shapes first (one image), then size the stores.
                probe(net, x[:1], capture)
                capture.end_probe()
                silent = [spec for spec in layers if spec.name not in capture.shapes]
                if silent:
                    raise RuntimeError(
                        f"layers {[(spec.name, spec.module) for spec in silent]} produced no "
                        f"output in a forward pass of {desc}"
                    )
                allocate(capture.shapes)
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
    label_set, wnids = _class_wnids(net, n_classes)
    return Predictions(top_index, top_prob, n_classes, wnids, label_set)


def _class_wnids(net: nn.Module, n_classes: int) -> tuple[str, list[str]]:
    """timm's ImageNet class set of ``net`` and its wnids in output order, when it has
    ``n_classes`` classes; else ``("", [])``."""
    if n_classes == 0:
        return "", []
    subset = timm.data.infer_imagenet_subset(net)
    if subset is not None:
        wnids = class_wnids(subset)
        if len(wnids) == n_classes:
            return subset, list(wnids)
    return "", []
