"""The one place the config is read: validated once, turned into typed specs.

:func:`check_config` runs when the DAG is built. It validates the config against the JSON
schema and fills in the schema's defaults in the same pass, then builds the spec of every
section (:class:`~emergence.sources.images.spec.ImageSourceSpec`,
:class:`~emergence.sources.models.spec.NetworkSpec`,
:class:`~emergence.sources.words.spec.WordModelSpec`), each checking what a schema cannot say,
and the checks across sections; it returns them as a :class:`Study`. Every problem is a
:class:`ConfigError` in one line naming the key. Rules get their slice as ``spec.params()``;
job scripts rebuild the spec with ``from_params``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from emergence.errors import ConfigError
from emergence.sources.images.spec import ImageSourceSpec
from emergence.sources.models.spec import NetworkSpec, network_specs
from emergence.sources.words.spec import WordModelSpec
from emergence.stats.measures import MeasureSpec

__all__ = ["ConfigError", "Study", "check_config"]


@dataclass(frozen=True)
class Study:
    """The validated config as typed specs (the config itself, defaults filled in, stays
    the rules' source for plain settings such as ``permutations.n``)."""

    results: str
    seed: int
    images: ImageSourceSpec
    networks: dict[str, NetworkSpec]
    word_models: dict[str, WordModelSpec]
    primary_word_model: str  # the word model of Figs. 2-4
    label_map: str | None = None  # one_vs_two.label_map
    measures: MeasureSpec = MeasureSpec()  # measures.names, two_vs_two.rsa_method

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
        """Display label of a network or word model (default: its name)."""
        spec = self.networks.get(name) or self.word_models[name]
        return spec.label or name

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
        for name, net in self.networks.items():
            ckpt = net.checkpoint
            if ckpt and not ckpt.startswith("package://") and not (root / ckpt).exists():
                raise ConfigError(f"config key 'networks.{name}.checkpoint': {ckpt} does not "
                                  "exist")


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


def _study(config: Mapping[str, Any]) -> Study:
    """The specs of every section, then the checks across sections."""
    images = ImageSourceSpec.from_config(config["images"])
    networks = network_specs(config["networks"])
    word_models = {name: WordModelSpec.from_config(name, entry)
                   for name, entry in config["word_models"].items()}
    primary = config["figures"].get("word_model")
    if primary is not None and primary not in word_models:
        raise ConfigError(f"config key 'figures.word_model': unknown word model '{primary}' "
                          f"(word models: {', '.join(word_models)})")
    groups = config["one_vs_two"]["groups"]
    if groups != "all":
        unknown = [g for g in groups if g not in images.group_names()]
        if unknown:
            raise ConfigError(f"config key 'one_vs_two.groups': unknown group(s) {unknown} "
                              f"(groups: {', '.join(images.group_names())})")
    measures = MeasureSpec.from_config(config)
    for spec in word_models.values():  # e.g. a similarity matrix has no features for CKA
        spec.check_study(measures.names)
    return Study(results=config["results"], seed=config["seed"], images=images,
                 networks=networks, word_models=word_models,
                 primary_word_model=primary or next(iter(word_models)),
                 label_map=config["one_vs_two"].get("label_map"),
                 measures=measures)
