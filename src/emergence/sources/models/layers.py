"""Naming the layers whose activations are extracted.

Model-family quirks live in small :class:`ModelAdapter` objects (default layer lists);
:func:`resolve_layers` expands the layer entries of a network's config into named module
paths (:class:`LayerSpec`), in network order. :mod:`emergence.extraction` only sees the
resulting list of :class:`LayerSpec`.

Layer entries::

    ["pixels",
     {"name": "stem", "module": "bn1"},
     {"module": "blocks.*", "name": "stage{i}"},
     {"module": "blocks.*", "name": "block{i}", "tokens": "cls"},   # a vision transformer
     "global_pool"]

``tokens`` (``all``, ``cls`` or ``mean``) says which units of a ``(batch, tokens, dim)``
output are the layer's features (:mod:`emergence.extraction.tokens`); without it, every
output is flattened (the same as ``all``).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # torch loads with the model, not with the config (it costs every job ~2 s)
    from torch import nn

    from emergence.sources.models.loaded import LoadedModel

__all__ = [
    "ADAPTERS",
    "PIXELS",
    "TOKENS",
    "LayerEntry",
    "LayerSpec",
    "ModelAdapter",
    "check_layer_name",
    "default_layers",
    "get_adapter",
    "resolve_layers",
]

#: Name (and layer entry) of the preprocessed input tensor.
PIXELS = "pixels"

#: The values of a layer entry's ``tokens`` key (:mod:`emergence.extraction.tokens`).
TOKENS = ("all", "cls", "mean")

#: A layer entry as written in a config: ``"pixels"``, a module path, or a mapping
#: with ``module`` (path or glob), optional ``name`` (template) and optional ``tokens``.
LayerEntry = str | Mapping[str, str]

#: What a layer name may consist of: it becomes an HDF5 group (``layers/<name>``) and a
#: TSV value, so no ``/`` (which would nest groups), no spaces; and not ``.`` or ``..``.
LAYER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class LayerSpec(NamedTuple):
    """One extracted layer.

    Attributes
    ----------
    name : str
        Name used in outputs (``layers/<name>`` in the HDF5 file).
    module : str
        Dotted path of the module in ``model.named_modules()`` whose forward output
        is captured; ``""`` for the preprocessed input (``pixels``).
    tokens : {"all", "cls", "mean"}, optional
        The entry's ``tokens`` choice for a ``(batch, tokens, dim)`` output
        (:class:`~emergence.extraction.tokens.TokenReduction`); ``None``: not set (the
        output is flattened, and the activations file records nothing about tokens).
    """

    name: str
    module: str
    tokens: str | None = None


def _network(model: nn.Module | LoadedModel) -> nn.Module:
    """The module itself (a :class:`LoadedModel` is not a module: it holds one)."""
    from torch import nn

    return model if isinstance(model, nn.Module) else model.model


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
    net = _network(model)
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
    return adapter.default_layers(_network(model))


# --------------------------------------------------------------------------------------
# resolving layer entries
# --------------------------------------------------------------------------------------


def _model_label(model: nn.Module | LoadedModel) -> str:
    from torch import nn

    if not isinstance(model, nn.Module):
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
        * ``{"module": <path or glob>, "name": <template>, "tokens": <choice>}`` --
          ``tokens`` (optional: ``all``, ``cls``, ``mean``) applies to every match;
          ``name`` defaults to
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
        entry or ``tokens`` value, a name that is not letters, digits, ``_ . -``
        (:func:`check_layer_name`), or duplicate names.
    """
    net = _network(model)
    if layers is None:
        layers = default_layers(model)
    names = [n for n, _ in net.named_modules() if n]
    order = {n: k for k, n in enumerate(names)}
    label = _model_label(model)
    found: list[LayerSpec] = []
    for entry in layers:
        tokens = None
        if isinstance(entry, str):
            module, template = ("", PIXELS) if entry == PIXELS else (entry, "{module}")
        elif isinstance(entry, Mapping):
            extra = set(entry) - {"module", "name", "tokens"}
            if extra or "module" not in entry:
                raise ValueError(f"layer entry {dict(entry)!r}: expected keys 'module' and "
                                 "optional 'name' and 'tokens'")
            module = str(entry["module"])
            template = str(entry.get("name") or (PIXELS if module == "" else "{module}"))
            tokens = entry.get("tokens")
            if tokens is not None and tokens not in TOKENS:
                raise ValueError(f"layer entry {dict(entry)!r}: tokens must be one of "
                                 f"{', '.join(TOKENS)}")
        else:
            raise ValueError(f"layer entry must be a string or a mapping, got {entry!r}")
        if module == "":
            found.append(LayerSpec(template, "", tokens))
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
            found.append(LayerSpec(layer_name, match, tokens))
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
