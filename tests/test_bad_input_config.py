"""Bad input in the config (issue 19, items 7, 8 and 12): whole-number floats and negative
seeds, counts no machine can serve, and shard files left by another shard count."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from emergence.config import ConfigError, check_config
from tests.conftest import ROOT, error_lines, run_snakemake, small_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# --- item 7: every count and seed is an integer with a minimum ----------------------------


def _integer_keys(schema: Mapping[str, Any], path: tuple[str, ...] = ()
                  ) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """(config path, schema) of every ``type: integer`` in the schema; ``*`` stands for a
    name of the user's (a network, a word model), ``oneOf`` branches by their ``type``."""
    if schema.get("type") == "integer":
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _integer_keys(sub, (*path, name))
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield from _integer_keys(extra, (*path, "*"))
    for branch in schema.get("oneOf", []):
        const = branch.get("properties", {}).get("type", {}).get("const")
        for sub_path, sub in _integer_keys(branch, path):
            if sub_path != path:
                yield (*path, f"<{const}>", *sub_path[len(path):]), sub


def _place(cfg: dict, path: tuple[str, ...]) -> tuple[dict, str, str]:
    """The mapping that holds ``path``'s last key in ``cfg`` (made where missing), that key,
    and the dotted key the error names: ``*`` under networks is lite0, under word models
    the entry of the ``<type>`` that follows."""
    node, named = cfg, []
    keys = list(path)
    while len(keys) > 1:
        key = keys.pop(0)
        if key == "*":
            continue
        if key.startswith("<"):  # a word model of this type
            kind = key[1:-1]
            name = next(n for n, e in node.items() if e["type"] == kind)
            node, named = node[name], [*named, name]
            continue
        if key == "networks":
            node, named = node[key]["lite0"], [*named, key, "lite0"]
            continue
        node = node.setdefault(key, {})
        named.append(key)
    return node, keys[0], ".".join([*named, keys[0]])


def _integer_cases() -> list[tuple[tuple[str, ...], Mapping[str, Any]]]:
    return list(_integer_keys(yaml.safe_load(SCHEMA.read_text())))


def test_the_sweep_finds_every_count_and_seed() -> None:
    found = {".".join(p) for p, _ in _integer_cases()}
    assert {"seed", "permutations.n", "images.images_per_concept", "extraction.batch_size",
            "networks.*.seed", "word_models.*.<sentence-transformer>.batch_size",
            "bootstrap.shards", "one_vs_two.n_permutations"} <= found
    assert len(found) >= 20
    for path, sub in _integer_cases():
        assert "minimum" in sub, f"{'.'.join(path)} has no minimum"


@pytest.mark.parametrize(("path", "sub"), _integer_cases(),
                         ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_integer_key_refuses_a_float_and_a_value_below_its_minimum(
        tmp_path: Path, path: tuple[str, ...], sub: Mapping[str, Any]) -> None:
    base = small_config(tmp_path)
    for value, expected in ((float(max(sub["minimum"], 2)), "is not of type 'integer'"),
                            (sub["minimum"] - 1, "is less than the minimum")):
        cfg = copy.deepcopy(base)
        node, key, dotted = _place(cfg, path)
        node[key] = value
        with pytest.raises(ConfigError) as err:
            check_config(cfg, SCHEMA)
        line = str(err.value)
        assert "\n" not in line
        assert line.startswith(f"config key '{dotted}': {value!r} {expected}"), line


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["permutations"].update(n=20.0),
     "config key 'permutations.n': 20.0 is not of type 'integer' (write 20, without the "
     "decimal point)"),
    (lambda c: c["images"].update(images_per_concept=2.0),
     "config key 'images.images_per_concept': 2.0 is not of type 'integer' (write 2"),
    (lambda c: c["extraction"].update(batch_size=8.0),
     "config key 'extraction.batch_size': 8.0 is not of type 'integer' (write 8"),
    (lambda c: c.update(seed=-1), "config key 'seed': -1 is less than the minimum of 0"),
    (lambda c: c.update(seed=2**64), "config key 'seed': 18446744073709551616 is greater than "
     "the maximum"),  # HDF5 attributes and torch.manual_seed stop at 2^64 - 1
])
def test_the_four_reported_cases_are_one_line(tmp_path: Path, edit, message: str) -> None:
    cfg = small_config(tmp_path)
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    assert str(err.value).startswith(message), str(err.value)


def test_a_float_count_stops_the_dry_run_before_any_job(tmp_path: Path) -> None:
    """`images_per_concept: 2.0` was a Snakemake traceback from common.smk."""
    cfg = small_config(tmp_path)
    cfg["images"] = {"source": "folders", "path": str(tmp_path), "images_per_concept": 2.0}
    proc = run_snakemake(tmp_path, cfg, "-n")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "config key 'images.images_per_concept': 2.0 is not of type 'integer'" in lines[0]
    assert not (tmp_path / "results").exists()
