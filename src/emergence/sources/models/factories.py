"""Custom models: ``source: python`` with ``factory: package.module:function``.

The factory is called with no arguments, under ``torch.manual_seed(seed)`` (a random
initialisation in it is reproducible; the global RNG state is left as it was). It returns
one of:

* an ``nn.Module``: its input is described by timm's data config of the module
  (``timm.data.resolve_data_config``): the module's ``pretrained_cfg`` (or ``default_cfg``)
  when it has one, as timm models do (``input_size``, ``interpolation``, ``mean``, ``std``,
  ``crop_pct``, ``crop_mode``), else timm's defaults: 3 x 224 x 224, bicubic, ImageNet
  mean/std, crop_pct 0.875, centre crop. The network's ``input_size`` and ``preprocess``
  keys apply as for a timm model;
* ``(module, data_config)``: a mapping with any of those keys, the rest from the defaults;
* ``(module, transform)``: a callable PIL image -> ``(C, H, W)`` float tensor, used as it is
  (``preprocess`` and ``input_size`` do not apply; its ``repr`` is recorded).

The module ``package.module`` is imported as Python imports it (installed packages,
``PYTHONPATH``), and also from the working directory (where ``snakemake`` runs), after
those. A factory's weights are its own; ``checkpoint`` (with ``remap``) optionally loads a
state dict into the model it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emergence.sources.models.loaded import LoadedModel, input_size

if TYPE_CHECKING:
    from emergence.sources.models.spec import NetworkSpec

__all__ = ["FACTORY", "Built", "build", "check_factory", "load_factory", "state_dict_sha256"]

#: ``package.module:function``: what ``factory`` looks like.
FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def check_factory(factory: str) -> str | None:
    """The problem with ``factory`` that needs no import of the module itself (its format,
    a module Python cannot find), or ``None``. Parent packages are imported to look
    inside them."""
    if not FACTORY.fullmatch(factory):
        return f"{factory!r} is not 'package.module:function'"
    module = factory.split(":")[0]
    try:
        with _working_directory_importable():
            found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        found, detail = None, f" ({type(exc).__name__}: {exc})"
    else:
        detail = ""
    if found is None:
        return (f"module {module!r} is not importable{detail}; install it, add its folder "
                "to PYTHONPATH or run from the folder that holds it")
    return None


def _function(factory: str) -> Callable[[], Any]:
    problem = check_factory(factory)
    if problem is not None:
        raise ValueError(f"factory {problem}")
    module_name, function = factory.split(":")
    try:
        with _working_directory_importable():
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"factory {factory!r}: importing {module_name!r} failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    func = getattr(module, function, None)
    if not callable(func):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        what = "is not callable" if func is not None else "does not exist"
        raise ValueError(f"factory {factory!r}: {module_name}.{function} {what} "
                         f"(callables in {module_name}: {', '.join(names) or 'none'})")
    return func


@dataclass(frozen=True)
class Built:
    """What a factory returned: the module and at most one of its data config and its
    transform."""

    model: Any
    data_config: Mapping[str, Any] | None
    transform: Callable[..., Any] | None


def build(factory: str, seed: int) -> Built:
    """Import and call ``factory`` under ``torch.manual_seed(seed)``.

    Raises
    ------
    ValueError
        One line naming the factory: a malformed name, a module that is not importable
        or fails to import, a missing function, a call that raises, or a return value
        that is not a module, ``(module, data config)`` or ``(module, transform)``.
    """
    import torch
    from torch import nn

    func = _function(factory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            result = func()
        except Exception as exc:
            raise ValueError(f"factory {factory!r} raised {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}") from exc
    extra: Any = None
    if isinstance(result, tuple) and len(result) == 2:
        result, extra = result
    if not isinstance(result, nn.Module):
        raise ValueError(f"factory {factory!r} returned {type(result).__name__}, not a "
                         "torch.nn.Module (or a (module, data config or transform) tuple)")
    if extra is None or isinstance(extra, Mapping):
        return Built(result, extra, None)
    if callable(extra):
        return Built(result, None, extra)
    raise ValueError(f"factory {factory!r} returned ({type(result).__name__}, "
                     f"{type(extra).__name__}); the second item must be a data config "
                     "(mapping) or a transform (callable)")


def state_dict_sha256(model: Any) -> str:
    """SHA-256 over the model's state dict: each entry's key, dtype, shape and bytes, in
    the state dict's order."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_factory(spec: NetworkSpec) -> LoadedModel:
    """The model of ``spec.factory`` (:func:`emergence.sources.models.factories.build`), its
    optional checkpoint loaded, in eval mode; its data config (the factory's, or timm's
    from the module) or its transform; the weights described by the factory, the seed and
    the sha256 of the state dict."""
    import PIL.Image
    import timm.data

    from emergence.sources.models.checkpoints import load_checkpoint  # imports torch and timm

    assert spec.factory is not None  # checked by the caller
    built = build(spec.factory, spec.seed)
    model = built.model
    weights = f"python factory {spec.factory} (torch.manual_seed({spec.seed}))"
    if spec.checkpoint is not None:
        weights += "; " + load_checkpoint(model, spec.checkpoint, spec.remap)
    weights += f"; state_dict sha256 {state_dict_sha256(model)}"
    model.eval()
    if built.transform is not None:
        if spec.input_size is not None:
            raise ValueError(f"network {spec.name!r}: input_size does not apply to a factory "
                             "that returns its own transform")
        probe = built.transform(PIL.Image.new("RGB", (256, 256), (128, 128, 128)))
        data_config: dict[str, Any] = {"input_size": tuple(int(d) for d in probe.shape)}
    else:
        overrides = dict(built.data_config or {})
        if spec.input_size is not None:
            overrides["input_size"] = input_size(spec.input_size)
        data_config = dict(timm.data.resolve_data_config(overrides, model=model))
    return LoadedModel(model=model, name=f"python:{spec.factory}", weights=weights,
                       data_config=data_config, spec=spec, transform=built.transform)
