"""Checkpoint files: where they are, how their keys are renamed, and loading them strictly.

A checkpoint is a state dict file (``.pth``/``.pt``/``.bin``, plain or wrapped in
``state_dict``/``model``; or ``.safetensors``) at a filesystem path or at
``package://<package>/<path inside it>`` (:func:`resolve_checkpoint_path`). Checkpoints
from other code bases are renamed to timm keys by a remap (:data:`REMAPS`; today the
lukemelas/EfficientNet-PyTorch layout, :func:`remap_lukemelas_efficientnet`).
:func:`load_checkpoint` reads the file with timm, remaps it and loads it strictly, with one
line naming the file for whatever does not fit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import timm.models
import torch
from torch import nn

__all__ = [
    "REMAPS",
    "StateDict",
    "load_checkpoint",
    "read_state_dict",
    "remap_lukemelas_efficientnet",
    "resolve_checkpoint_path",
]

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------
# checkpoint remaps
# --------------------------------------------------------------------------------------

_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inverted-residual blocks (with an expansion conv): timm InvertedResidual.
_LUKEMELAS_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Blocks without expansion (expand_ratio 1, the first block): timm DepthwiseSeparableConv,
# whose pointwise conv is the *projection* and whose norms are bn1 (after dw) and bn2.
_LUKEMELAS_DEPTHWISE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LUKEMELAS_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$")


def remap_lukemelas_efficientnet(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> StateDict:
    """Rename a lukemelas/EfficientNet-PyTorch state dict to timm ``tf_efficientnet*`` keys.

    lukemelas numbers blocks flatly (``_blocks.i``); timm nests them by stage
    (``blocks.s.j``). The flat index is mapped by walking ``model.blocks`` in order.
    Inside a block, the names depend on whether it has an expansion conv:

    ==================  =======================  ==========================
    lukemelas           timm, expanded block     timm, block w/o expansion
    ==================  =======================  ==========================
    ``_expand_conv``    ``conv_pw``              --
    ``_bn0``            ``bn1``                  --
    ``_depthwise_conv`` ``conv_dw``              ``conv_dw``
    ``_bn1``            ``bn2``                  ``bn1``
    ``_se_reduce``      ``se.conv_reduce``       ``se.conv_reduce``
    ``_se_expand``      ``se.conv_expand``       ``se.conv_expand``
    ``_project_conv``   ``conv_pwl``             ``conv_pw``
    ``_bn2``            ``bn3``                  ``bn2``
    ==================  =======================  ==========================

    Top level: ``_conv_stem -> conv_stem``, ``_bn0 -> bn1``, ``_conv_head -> conv_head``,
    ``_bn1 -> bn2``, ``_fc -> classifier``. Verified (strict load + ImageNet accuracy)
    for ``tf_efficientnet_lite0/1/2``; the SE rows follow the same scheme for the
    ``tf_efficientnet_b*`` family but are untested against real weights.

    Parameters
    ----------
    state_dict : Mapping[str, torch.Tensor]
        lukemelas-layout weights.
    model : torch.nn.Module
        The timm ``EfficientNet`` the weights are for (its ``blocks`` give the stages).

    Returns
    -------
    dict[str, torch.Tensor]
        The same tensors under timm names.

    Raises
    ------
    ValueError
        If the model is not a timm EfficientNet, a key is not recognised, or the
        number of blocks differs.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(
        isinstance(stage, nn.Sequential) for stage in blocks
    ):
        raise ValueError(
            "remap 'lukemelas-efficientnet' needs a timm EfficientNet (model.blocks of stages)"
        )
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(blocks) for j in range(len(stage))]
    block_ids = {
        int(m.group(1)) for k in state_dict if (m := _LUKEMELAS_BLOCK_KEY.match(k)) is not None
    }
    if block_ids != set(range(len(flat))):
        raise ValueError(
            f"checkpoint has {len(block_ids)} blocks (_blocks.0..), model has {len(flat)}"
        )
    expanded = {
        int(m.group(1))
        for k in state_dict
        if (m := _LUKEMELAS_BLOCK_KEY.match(k)) is not None and m.group(2) == "_expand_conv"
    }
    out: StateDict = {}
    for key, value in state_dict.items():
        m = _LUKEMELAS_BLOCK_KEY.match(key)
        if m is not None:
            index, sub, param = int(m.group(1)), m.group(2), m.group(3)
            table = _LUKEMELAS_EXPANDED if index in expanded else _LUKEMELAS_DEPTHWISE
            if sub not in table:
                raise ValueError(f"unrecognised lukemelas block key {key!r}")
            out[f"{flat[index]}.{table[sub]}.{param}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _LUKEMELAS_TOP or not rest:
            raise ValueError(f"unrecognised lukemelas key {key!r}")
        out[f"{_LUKEMELAS_TOP[top]}.{rest}"] = value
    return out


#: Checkpoint key remaps selectable by the ``remap`` key of a network.
REMAPS: dict[str, Callable[[Mapping[str, torch.Tensor], nn.Module], StateDict]] = {
    "lukemelas-efficientnet": remap_lukemelas_efficientnet,
}

# Architectures a remap may be applied to (lukemelas weights are TF ports: they need
# timm's TF-"same"-padding variants with TF BatchNorm epsilon).
_REMAP_ARCHITECTURES = {"lukemelas-efficientnet": ("tf_efficientnet*",)}


# --------------------------------------------------------------------------------------
# finding and loading
# --------------------------------------------------------------------------------------


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Resolve a checkpoint location to an existing file.

    Parameters
    ----------
    path : str or path-like
        A filesystem path (``~`` expanded) or ``package://<package>/<path inside it>``,
        resolved with :mod:`importlib.resources` (the package must be installed).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the file does not exist or the package is not installed.
    """
    text = os.fspath(path)
    if text.startswith("package://"):
        package, _, relative = text[len("package://") :].partition("/")
        if not package or not relative:
            raise ValueError(f"expected package://<package>/<path>, got {text!r}")
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(
                f"checkpoint {text!r}: python package {package!r} is not installed"
            ) from exc
        resource = root.joinpath(*relative.split("/"))
        resolved = Path(os.fspath(resource))  # type: ignore[call-overload]
    else:
        resolved = Path(text).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"checkpoint {text!r} not found (looked at {resolved})")
    return resolved


def _load_error(exc: BaseException) -> str:
    """The informative line of a torch/safetensors load error (torch's weights-only
    failures are a page of advice, with the cause after 'WeightsUnpickler error:')."""
    while exc.__cause__ is not None:  # timm re-raises torch's refusal with its own advice
        exc = exc.__cause__
    text = str(exc)
    _, marker, cause = text.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in (cause if marker else text).splitlines() if ln.strip()]
    line = lines[0] if lines else ("the file is empty or cut short"
                                   if isinstance(exc, EOFError) else "")
    if len(line) > 100 and ". " in line:  # torch's zip errors go on with advice
        line = line[: line.index(". ") + 1]
    return f"{type(exc).__name__}: {line}".rstrip(": ")


def _not_a_state_dict(path: Path, found: object) -> ValueError:
    return ValueError(f"{path}: not a state dict of tensors (found {type(found).__name__}); "
                      "save model.state_dict()")


def read_state_dict(path: Path) -> StateDict:
    """The tensors of a checkpoint file; one line naming the file if it is not one.

    Read with :func:`timm.models.load_state_dict` (safetensors or ``torch.load`` with
    ``weights_only=True``; a ``state_dict``/``model`` wrapper unwrapped; DDP and
    ``torch.compile`` key prefixes removed). ``use_ema=False``: a training checkpoint's
    ``state_dict`` is used, not its EMA copy.
    """
    try:
        obj = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except AttributeError as exc:
        if exc.name != "items":
            raise
        # timm's key clean-up calls .items() on what the file holds: not a mapping.
        raise _not_a_state_dict(path, exc.obj) from exc
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises: not a checkpoint
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise ValueError(f"{path}: not a {kind} ({_load_error(exc)}); "
                         "check the file or re-download it") from exc
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _not_a_state_dict(path, obj)
    return dict(obj)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """One line listing what a strict load would refuse: missing, unexpected and
    mis-shaped keys (the first five of each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:

        def head(keys: list[str]) -> str:
            shown = ", ".join(keys[:5])
            return shown + (f" ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [
            f"{label} ({len(keys)}): {head(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if keys
        ]
        raise ValueError(
            f"checkpoint {source} does not match {type(model).__name__}: " + "; ".join(parts)
        )


def load_checkpoint(model: nn.Module, checkpoint: str, remap: str | None = None) -> str:
    """Load a checkpoint into ``model``, strictly.

    timm's own :func:`timm.models.load_checkpoint` is not used for the whole: its strict
    load fails with torch's multi-line key listing rather than one line naming the file,
    and it hands ``.npz``/``.npy`` files to the model's own, non-strict loader. The
    reading is timm's (:func:`read_state_dict`); the remap and the key check run here.

    Parameters
    ----------
    model : torch.nn.Module
        A freshly created timm model.
    checkpoint : str
        Path or ``package://`` location (:func:`resolve_checkpoint_path`).
    remap : str, optional
        Name of a key remap in :data:`REMAPS`; it must fit the model's timm architecture.

    Returns
    -------
    str
        Provenance: ``checkpoint <location> sha256=<hex>[ remap=<name>]``.

    Raises
    ------
    ValueError
        Unknown remap, a remap for another architecture, a file that is not a state dict,
        or one that does not match the model.
    FileNotFoundError
        Checkpoint not found.
    """
    if remap is not None and remap not in REMAPS:
        raise ValueError(f"unknown remap {remap!r}; known: {sorted(REMAPS)}")
    path = resolve_checkpoint_path(checkpoint)
    state_dict = read_state_dict(path)
    if remap is not None:
        arch = str(getattr(model, "pretrained_cfg", {}).get("architecture", ""))
        allowed = _REMAP_ARCHITECTURES.get(remap, ("*",))
        if not any(fnmatch.fnmatchcase(arch, pattern) for pattern in allowed):
            raise ValueError(
                f"remap {remap!r} applies to {', '.join(allowed)} models, not {arch!r}"
            )
        state_dict = REMAPS[remap](state_dict, model)
    _check_keys(model, state_dict, f"{checkpoint} ({path})")
    model.load_state_dict(state_dict, strict=True)
    weights = f"checkpoint {checkpoint} sha256={_sha256(path)}"
    return weights + (f" remap={remap}" if remap is not None else "")
