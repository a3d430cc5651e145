"""Configuration checks with one-line, actionable messages."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["ConfigError", "check_config", "check_data_paths", "group_names", "primary_word_model"]


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


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


def check_config(config: MutableMapping[str, Any], schema_path: str | os.PathLike[str]) -> None:
    """Validate ``config`` against the JSON schema, fill in the schema's defaults (in place),
    and run the checks a schema cannot say; raise :class:`ConfigError` in one line.

    This is the one validation path: the workflow calls it once, before the DAG is built."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _fill_defaults(jsonschema.Draft202012Validator)(schema)
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
        raise ConfigError(f"config key '{_where(best)}': {msg}")
    _check_semantics(config)


def _check_semantics(config: Mapping[str, Any]) -> None:
    """Rules a schema cannot express: cross references and exclusive options."""
    networks = config["networks"]
    for name, net in networks.items():
        sources = [k for k in ("pretrained", "checkpoint") if k in net]
        if len(sources) != 1:
            raise ConfigError(
                f"config key 'networks.{name}': set exactly one of 'pretrained' or 'checkpoint' "
                f"(found {sources or 'neither'})")
        if "remap" in net and "checkpoint" not in net:
            raise ConfigError(f"config key 'networks.{name}.remap': only valid with 'checkpoint'")
        ctrl = net.get("control_for")
        if ctrl is not None and ctrl not in networks:
            raise ConfigError(f"config key 'networks.{name}.control_for': unknown network "
                              f"'{ctrl}' (networks: {', '.join(networks)})")
        if ctrl == name:
            raise ConfigError(f"config key 'networks.{name}.control_for': a network cannot be "
                              "its own control")
        if ctrl is not None and networks[ctrl].get("control_for") is not None:
            raise ConfigError(f"config key 'networks.{name}.control_for': '{ctrl}' is itself "
                              f"a control (of '{networks[ctrl]['control_for']}'); name a "
                              "trained network")
        for key in (name,):
            if not key.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"config key 'networks.{key}': names may use letters, digits, "
                                  "'-' and '_' only (they become file names)")
    for key in config["word_models"]:
        if not key.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"config key 'word_models.{key}': names may use letters, digits, "
                              "'-' and '_' only (they become file names)")
    wm = config.get("figures", {}).get("word_model")
    if wm is not None and wm not in config["word_models"]:
        raise ConfigError(f"config key 'figures.word_model': unknown word model '{wm}' "
                          f"(word models: {', '.join(config['word_models'])})")
    groups = config.get("one_vs_two", {}).get("groups", "all")
    if groups != "all":
        unknown = [g for g in groups if g not in group_names(config)]
        if unknown:
            raise ConfigError(f"config key 'one_vs_two.groups': unknown group(s) {unknown} "
                              f"(groups: {', '.join(group_names(config))})")


_IMAGE_HINTS = {
    ("imagenet-val", "path"): "the folder of the 50,000 ILSVRC2012_val_*.JPEG images "
    "(ILSVRC2012_img_val.tar from https://image-net.org, free registration)",
    ("imagenet-val", "labels"): "LOC_val_solution.csv (Kaggle, ImageNet Object Localization "
    "Challenge) or the devkit's ILSVRC2012_validation_ground_truth.txt with meta.mat beside it "
    "(ILSVRC2012_devkit_t12.tar.gz from https://image-net.org)",
    ("imagenet-folders", "path"): "a folder with one sub-folder of images per wnid "
    "(the ILSVRC2012 layout)",
    ("emoji", "concepts"): "the curated concept table, e.g. config/demo_concepts.tsv",
}


def check_data_paths(config: Mapping[str, Any], base: str | os.PathLike[str] = ".") -> None:
    """Stop with one line when a configured input file or folder does not exist.

    The line names the config key, the missing path and where to get the data.
    """
    root = Path(base)
    images = config["images"]
    for (source, key), hint in _IMAGE_HINTS.items():
        if images["source"] == source:
            value = images.get(key)
            if value is None:
                raise ConfigError(f"config key 'images.{key}' is required for source "
                                  f"'{source}': set it to {hint}")
            if not (root / value).exists():
                raise ConfigError(f"config key 'images.{key}': {value} does not exist; "
                                  f"set it to {hint}")
    for name, wm in config["word_models"].items():
        if wm["type"] == "keyedvectors" and not (root / wm["path"]).exists():
            hint = wm.get("download", "a word2vec/GloVe/fastText vector file")
            raise ConfigError(f"config key 'word_models.{name}.path': {wm['path']} does not "
                              f"exist; download {hint} and set the path")
    for name, net in config["networks"].items():
        ckpt = net.get("checkpoint")
        if ckpt and not ckpt.startswith("package://") and not (root / ckpt).exists():
            raise ConfigError(f"config key 'networks.{name}.checkpoint': {ckpt} does not exist")


def group_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the image groups, known from the config alone (no file is read)."""
    images = config["images"]
    if images["source"] == "emoji":
        return list(images.get("styles", ["twemoji", "openmoji"]))
    return [str(j + 1) for j in range(images.get("images_per_concept", 5))]


def primary_word_model(config: Mapping[str, Any]) -> str:
    """The word model of Figs. 2-4: figures.word_model, else the first configured."""
    return config.get("figures", {}).get("word_model") or next(iter(config["word_models"]))
