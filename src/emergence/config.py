"""The one place the config is read: validated once, turned into typed specs.

:func:`check_config` runs when the DAG is built. It validates the config against the JSON
schema and fills in the schema's defaults in the same pass, then builds the spec of every
section (:class:`~emergence.sources.images.spec.ImageSourceSpec`,
:class:`~emergence.sources.models.spec.NetworkSpec`,
:class:`~emergence.sources.words.spec.WordModelSpec`), each checking what a schema cannot say,
and the checks across sections; it returns them as a :class:`Study`. The plain settings are
typed sections of the study too (:class:`Permutations`, :class:`Intervals`,
:class:`Extraction`, :class:`OneVsTwo`, :class:`Figures`, :class:`Concepts`): the rule files
read nothing from ``config`` but through the study. Every problem is a :class:`ConfigError`
in one line naming the key. Rules get their slice as ``spec.params()``; job scripts rebuild
the spec with ``from_params``.

Snakemake reruns a job whose params changed, comparing their ``repr``: a section handed to a
rule whole (``Permutations.params``, ``Extraction.params``) keeps the keys in the config's
order, so the params of a config that did not change stay equal, whatever order its file
writes them in.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from emergence.errors import ConfigError
from emergence.sources.images.spec import ImageSourceSpec
from emergence.sources.models.spec import NetworkSpec, network_specs
from emergence.sources.words.spec import WordModelSpec, word_spaces
from emergence.stats.measures import MeasureSpec

__all__ = ["Concepts", "ConfigError", "Extraction", "Figures", "Intervals", "OneVsTwo",
           "Permutations", "Study", "check_config"]


@dataclass(frozen=True)
class _Section:
    """A plain config section, every key typed; no defaults here: the schema fills them in
    (:func:`check_config`). ``order`` is the config's order of the keys (what :meth:`params`
    keeps)."""

    order: tuple[str, ...] = field(default=(), repr=False, compare=False, kw_only=True)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]):  # noqa: ANN206  (the subclass)
        names = {f.name for f in fields(cls)} - {"order"}
        return cls(**{k: section[k] for k in names if k in section},
                   order=tuple(k for k in section if k in names))

    def params(self) -> dict[str, Any]:
        """The section as a rule's param: its keys in the config's order."""
        return {k: getattr(self, k) for k in self.order}


@dataclass(frozen=True)
class Permutations(_Section):
    """``permutations``: the null's size and shards; ``alpha``, the level of significance.tsv's
    ``significant`` column (permutation p < alpha; not a setting of the shards)."""

    n: int
    shards: int
    batch_size: int
    device: str
    alpha: float

    def params(self) -> dict[str, Any]:
        """The shard jobs' settings (``alpha`` decides nothing they compute)."""
        return {k: v for k, v in super().params().items() if k != "alpha"}


@dataclass(frozen=True)
class Intervals(_Section):
    """``intervals``: the jackknife over concepts (``method: none``: no intervals)."""

    method: str
    pairs: int
    factors: str
    shards: int
    batch_size: int
    confidence: float

    @property
    def enabled(self) -> bool:
        return self.method == "jackknife"

    def shard_params(self) -> dict[str, Any]:
        """What a jackknife shard depends on."""
        return {"pairs": self.pairs, "shards": self.shards, "batch_size": self.batch_size}


@dataclass(frozen=True)
class Extraction(_Section):
    """``extraction``: the forward pass's batch, device, threads, raw features, RAM, and
    whether freed memory stays in the heap during the pass."""

    batch_size: int
    device: str
    threads: int
    keep_raw_max_features: int
    ram_budget_mb: int
    reuse_freed_memory: bool


@dataclass(frozen=True)
class OneVsTwo(_Section):
    """``one_vs_two``: permutations of the 1 vs 2 test, the label map, the groups tested
    (``"all"`` or a list)."""

    n_permutations: int
    groups: str | list[str]
    label_map: str | None = None  # optional: no default in the schema


@dataclass(frozen=True)
class Figures(_Section):
    """``figures``: the word model of Figs. 2-4 (``None``: the first), the level of the
    figures' markers, the formats."""

    alpha: float
    formats: list[str]
    word_model: str | None = None  # optional: the first word model


@dataclass(frozen=True)
class Concepts(_Section):
    """``concepts``: keep only concepts every word model covers (the paper's rule)."""

    intersect_word_models: bool


@dataclass(frozen=True)
class Study:
    """The validated config as typed specs and typed sections (the rules read the config
    through it and nothing else)."""

    results: str
    seed: int
    images: ImageSourceSpec
    networks: dict[str, NetworkSpec]
    word_models: dict[str, WordModelSpec]
    primary_word_model: str  # the word space of Figs. 2-4
    permutations: Permutations
    intervals: Intervals
    extraction: Extraction
    one_vs_two: OneVsTwo
    figures: Figures
    concepts: Concepts
    measures: MeasureSpec = MeasureSpec()  # measures.names, two_vs_two.rsa_method
    # the scored word spaces (a model, or one layer of a layered model): name -> (model,
    # layer); see emergence.sources.words.spec.word_spaces
    word_spaces: dict[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)

    @property
    def label_map(self) -> str | None:
        """``one_vs_two.label_map``."""
        return self.one_vs_two.label_map

    @property
    def one_vs_two_groups(self) -> list[str]:
        """The groups of the 1 vs 2 test, in the config's order (``all``: every group)."""
        chosen = self.one_vs_two.groups
        return self.groups if chosen == "all" else list(chosen)

    @property
    def groups(self) -> list[str]:
        """Names of the image groups, known from the config alone (no file is read)."""
        return self.images.group_names()

    @property
    def controls(self) -> list[str]:
        """Networks that are the untrained control of another, in config order."""
        return [n for n, spec in self.networks.items() if spec.control_for]

    def controls_of(self, network: str) -> list[str]:
        """The untrained control drawn beside ``network`` (at most one: ``check_controls``
        rejects a second)."""
        return [c for c in self.controls if self.networks[c].control_for == network]

    def label(self, name: str) -> str:
        """Display label of a network, word model or word space (default: its name; a
        layer's space: its model's label and the layer)."""
        if name in self.networks:
            return self.networks[name].label or name
        model, layer = self.word_spaces.get(name, (name, None))
        label = self.word_models[model].label or model
        return label if layer is None else f"{label} {layer}"

    def space_params(self, space: str) -> dict[str, Any]:
        """The params of a word space's jobs (:meth:`WordModelSpec.space_params`)."""
        model, layer = self.word_spaces[space]
        return self.word_models[model].space_params(layer)

    def layered_models(self) -> dict[str, list[str]]:
        """Each layered word model -> its word spaces, in layer order."""
        out: dict[str, list[str]] = {}
        for space, (model, layer) in self.word_spaces.items():
            if layer is not None:
                out.setdefault(model, []).append(space)
        return out

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        """Stop with one line when a configured input file or folder does not exist: the
        line names the config key, the missing path and where to get the data."""
        self.images.check_data_paths(base)
        for spec in self.word_models.values():
            spec.check_data_paths(base)
        root = Path(base)
        if self.label_map and not (root / self.label_map).is_file():
            raise ConfigError(f"config key 'one_vs_two.label_map': {self.label_map} does not "
                              "exist; set it to a table with columns label, concept_id")
        for net in self.networks.values():  # checkpoints, precomputed features
            net.check_data_paths(root)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _branch_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The sub-errors of a oneOf/anyOf error worth reporting.

    When the branches are told apart by ``properties.type.const`` (word models), only
    the branch of the entry's ``type``; an unknown ``type`` is reported as such, with
    the types the schema knows (instead of a random branch's "'path' is required").
    """
    branches = error.validator_value if error.validator in ("oneOf", "anyOf") else []
    types = [b.get("properties", {}).get("type", {}).get("const") for b in branches
             if isinstance(b, Mapping)]
    instance = error.instance
    if not types or None in types or not isinstance(instance, Mapping) \
            or "type" not in instance:
        return list(error.context)
    if instance["type"] not in types:
        where = f"{_where(error)}.type" if error.absolute_path else "type"
        raise ConfigError(f"config key '{where}': unknown type {instance['type']!r}; "
                          f"use one of {', '.join(types)}")
    chosen = types.index(instance["type"])
    return [e for e in error.context if e.relative_schema_path[0] == chosen] \
        or list(error.context)


Validator = type[jsonschema.protocols.Validator]


def _is_integer(_checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _strict_integers(cls: Validator) -> Validator:
    """``cls`` whose ``integer`` is an integer as YAML writes it: JSON Schema (draft 6 on)
    counts a float with a zero fraction (``20.0``) as an integer, which then reaches
    ``range()`` or a seed as a float; here it is a type error naming the key."""
    return jsonschema.validators.extend(
        cls, type_checker=cls.TYPE_CHECKER.redefine("integer", _is_integer))


def _fill_defaults(cls: Validator) -> Validator:
    """``cls`` that also writes each missing property's schema ``default`` into the instance
    while it validates (the jsonschema FAQ recipe, as ``snakemake.utils.validate`` does):
    validation and defaults in one pass. The schema has no defaults inside ``oneOf``
    branches, so no branch that fails can leave a default behind."""
    validate_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):  # noqa: ANN001, ANN202
        if validator.is_type(instance, "object"):
            for name, sub in props.items():
                if isinstance(sub, Mapping) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": properties})


def check_config(config: MutableMapping[str, Any], schema_path: str | os.PathLike[str]
                 ) -> Study:
    """Validate ``config`` against the JSON schema, fill in the schema's defaults (in place),
    build the specs and run the checks a schema cannot say; raise :class:`ConfigError` in
    one line. The one validation path: the workflow calls it once, before the DAG is built.
    Data paths are checked apart (:meth:`Study.check_data_paths`)."""
    if "bootstrap" in config:
        raise ConfigError("config key 'bootstrap': replaced by 'intervals' (the jackknife over "
                          "concepts; keys method, pairs, factors, shards, batch_size, "
                          "confidence); rename the section and drop bootstrap.n and "
                          "bootstrap.device")
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _fill_defaults(_strict_integers(jsonschema.Draft202012Validator))(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        # For oneOf (word model types) the most specific sub-error is the useful one,
        # from the branch the entry's `type` selects.
        while best.context:
            best = jsonschema.exceptions.best_match(_branch_errors(best))
        msg = best.message.replace("\n", " ")
        if best.validator == "pattern" and "description" in best.schema:
            msg += f" ({best.schema['description']})"
        if best.validator == "type" and isinstance(best.instance, float) \
                and best.instance.is_integer() and "integer" in best.validator_value:
            msg += f" (write {int(best.instance)}, without the decimal point)"
        raise ConfigError(f"config key '{_where(best)}': {msg}")
    return _study(config)


def _default_primary(spaces: Mapping[str, tuple[str, str | None]]) -> str:
    """Figs. 2-4's word space when ``figures.word_model`` is not set: the first one-vector
    word model, else the last layer of the first layered one."""
    one = [s for s, (_, layer) in spaces.items() if layer is None]
    if one:
        return one[0]
    first = next(iter(spaces.values()))[0]
    return [s for s, (m, _) in spaces.items() if m == first][-1]


def _study(config: Mapping[str, Any]) -> Study:
    """The specs of every section, then the checks across sections."""
    images = ImageSourceSpec.from_config(config["images"])
    networks = network_specs(config["networks"])
    word_models = {name: WordModelSpec.from_config(name, entry)
                   for name, entry in config["word_models"].items()}
    spaces = word_spaces(word_models)
    primary = config["figures"].get("word_model")
    if primary is not None and primary not in spaces:
        layered = [s for s, (m, _) in spaces.items() if m == primary]
        hint = (f"word model '{primary}' is scored layer by layer: name one of its layers "
                f"({', '.join(layered)})") if layered else f"unknown word model '{primary}'"
        raise ConfigError(f"config key 'figures.word_model': {hint} (word models: "
                          f"{', '.join(spaces)})")
    groups = config["one_vs_two"]["groups"]
    if groups != "all":
        unknown = [g for g in groups if g not in images.group_names()]
        if unknown:
            raise ConfigError(f"config key 'one_vs_two.groups': unknown group(s) {unknown} "
                              f"(groups: {', '.join(images.group_names())})")
    measures = MeasureSpec(tuple(config["measures"]["names"]),
                           config["two_vs_two"]["rsa_method"],
                           config["measures"]["mutual_knn_k"])
    for spec in word_models.values():  # e.g. a similarity matrix has no features for CKA
        spec.check_study(measures.names)
    return Study(results=config["results"], seed=config["seed"], images=images,
                 networks=networks, word_models=word_models,
                 primary_word_model=primary or _default_primary(spaces),
                 measures=measures, word_spaces=spaces,
                 permutations=Permutations.from_config(config["permutations"]),
                 intervals=Intervals.from_config(config["intervals"]),
                 extraction=Extraction.from_config(config["extraction"]),
                 one_vs_two=OneVsTwo.from_config(config["one_vs_two"]),
                 figures=Figures.from_config(config["figures"]),
                 concepts=Concepts.from_config(config["concepts"]))
