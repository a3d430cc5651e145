"""The one validation path (emergence.config.check_config): schema, defaults, semantic checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from emergence.config import ConfigError, check_config
from tests.conftest import ROOT, small_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _configs(tmp: Path) -> dict[str, dict]:
    out = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "config").glob("*.yaml"))}
    out["small_config"] = small_config(tmp)
    sparse = copy.deepcopy(out["small_config"])
    for key in ("extraction", "permutations", "one_vs_two", "figures", "two_vs_two", "seed"):
        sparse.pop(key, None)
    out["sparse"] = sparse
    return out


def test_defaults_are_those_snakemake_validate_fills(tmp_path: Path) -> None:
    """One pass fills in exactly the defaults `snakemake.utils.validate` filled in before."""
    configs = _configs(tmp_path)
    assert len(configs) >= 4
    for name, cfg in configs.items():
        ours, theirs = copy.deepcopy(cfg), copy.deepcopy(cfg)
        check_config(ours, SCHEMA)
        validate(theirs, schema=str(SCHEMA))
        assert ours == theirs, name
        assert ours != cfg or name == "paper.yaml", name  # a default was filled in


def test_invalid_config_fails_before_defaults_matter(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    cfg["permutations"] = {"n": "many"}
    with pytest.raises(ConfigError, match=r"^config key 'permutations.n': 'many' is not of type"):
        check_config(cfg, SCHEMA)


def test_two_controls_of_one_network_are_rejected_naming_both(tmp_path: Path) -> None:
    """One control is compared per trained network (Study.controls_of): a second one would be
    extracted and scored, then never compared. One line naming both; one control passes."""
    cfg = small_config(tmp_path)
    cfg["networks"]["lite0-untrained-2"] = copy.deepcopy(cfg["networks"]["lite0-untrained"])
    with pytest.raises(ConfigError) as info:
        check_config(copy.deepcopy(cfg), SCHEMA)
    assert str(info.value) == (
        "config key 'networks.lite0-untrained-2.control_for': 'lite0' already has a control, "
        "'lite0-untrained' (networks 'lite0-untrained' and 'lite0-untrained-2' both name it); "
        "keep one")
    del cfg["networks"]["lite0-untrained-2"]["control_for"]  # a plain untrained network: fine
    study = check_config(cfg, SCHEMA)
    assert study.controls_of("lite0") == ["lite0-untrained"]
    assert study.controls_of("lite0-untrained-2") == []
