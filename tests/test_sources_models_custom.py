"""Any model (emergence.sources.models: factories, layers; emergence.cli): token outputs of
vision transformers (``tokens: all | cls | mean``), custom models from a Python factory
(``source: python``), and ``emergence layers MODEL``."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import timm.data
import torch
import yaml
from PIL import Image
from torch import nn

from emergence.cli import main
from emergence.config import ConfigError, check_config
from emergence.extraction.extract import extract_statistics
from emergence.extraction.forward import Capture
from emergence.extraction.preprocess import load_image, make_transform
from emergence.sources.models.factories import state_dict_sha256
from emergence.sources.models.layers import LayerSpec, resolve_layers
from emergence.sources.models.loaded import LoadedModel
from emergence.sources.models.spec import NetworkSpec, load_model, network_specs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three small noise images (batches of 2: one full, one partial)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for k in range(3):
        path = root / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    return load_model(NetworkSpec.from_params(
        {"model": "vit_tiny_patch16_224", "pretrained": False}, name="vit"))


def _hooked(loaded: LoadedModel, paths: list[str], modules: list[str],
            batch: int) -> list[torch.Tensor]:
    """The modules' outputs for the images, captured by plain hooks."""
    transform = make_transform(loaded.data_config, "timm")
    x = torch.stack([transform(load_image(p)) for p in paths])
    named = dict(loaded.model.named_modules())
    out: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
    handles = [named[m].register_forward_hook(lambda _m, _a, o, m=m: out[m].append(o.clone()))
               for m in modules]
    try:
        with torch.inference_mode():
            for s in range(0, len(x), batch):
                loaded.model(x[s:s + batch])
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(out[m]) for m in modules]


def test_vit_tokens_all_cls_mean(vit: LoadedModel, images: list[str], tmp_path: Path) -> None:
    entries = [
        "pixels",
        {"module": "blocks.11", "name": "last"},
        {"module": "blocks.11", "name": "last_all", "tokens": "all"},
        {"module": "blocks.11", "name": "last_cls", "tokens": "cls"},
        {"module": "blocks.11", "name": "last_mean", "tokens": "mean"},
        {"module": "patch_embed", "name": "patches_mean", "tokens": "mean"},
        {"module": "head", "name": "logits"},
    ]
    layers = resolve_layers(vit, entries)
    out = tmp_path / "vit.h5"
    summary = extract_statistics(vit, images, layers, out, batch_size=2, progress=False,
                                 keep_raw_max_features=1 << 20)
    assert summary.layers["last"] == (197, 192) and summary.layers["last_cls"] == (192,)
    assert summary.layers["last_mean"] == (192,) and summary.layers["patches_mean"] == (192,)
    hooked, patches = _hooked(vit, images, ["blocks.11", "patch_embed"], 2)
    assert hooked.shape == (3, 197, 192) and patches.shape == (3, 196, 192)
    expected = {
        "last": hooked.reshape(3, -1), "last_all": hooked.reshape(3, -1),
        "last_cls": hooked[:, 0, :],
        "last_mean": hooked[:, 1:, :].mean(dim=1),  # the class token is not a patch
        "patches_mean": patches.mean(dim=1),  # no prefix tokens before they are added
    }
    with h5py.File(out) as h5:
        for name, rows in expected.items():
            group = h5[f"layers/{name}"]
            np.testing.assert_allclose(group["activations"][()], rows.numpy(), rtol=1e-5,
                                       atol=1e-5, err_msg=name)
            np.testing.assert_allclose(
                group["correlation"][()],
                np.corrcoef(group["activations"][()].astype(np.float64)),
                rtol=0, atol=1e-10, err_msg=name)
        assert not np.allclose(h5["layers/last_mean/activations"][()],
                               hooked.mean(dim=1).numpy(), atol=1e-4)
        attrs = {name: dict(h5[f"layers/{name}"].attrs) for name in h5["layers"]}
    # layers without `tokens` record nothing new (CNN files keep their attributes)
    assert set(attrs["last"]) == set(attrs["logits"]) == set(attrs["pixels"]) == \
        {"module", "n_features", "shape", "index", "statistic"}
    assert attrs["last_all"]["tokens"] == "all"
    assert list(attrs["last_all"]["output_shape"]) == [197, 192]
    assert "prefix_tokens" not in attrs["last_all"]
    assert (attrs["last_cls"]["tokens"], attrs["last_cls"]["prefix_tokens"]) == ("cls", 1)
    assert list(attrs["last_cls"]["shape"]) == [192] and attrs["last_cls"]["n_features"] == 192
    assert (attrs["last_mean"]["tokens"], attrs["last_mean"]["prefix_tokens"]) == ("mean", 1)
    assert attrs["patches_mean"]["prefix_tokens"] == 0


def _probe(net: nn.Module, layers: list[LayerSpec], size: int) -> Capture:
    capture = Capture(net, layers, lambda *_: None)
    with capture, torch.inference_mode():
        net.eval()(torch.zeros(1, 3, size, size))
        capture.end_probe()
    return capture


def test_token_choices_need_a_matching_output() -> None:
    small = {"pretrained": False, "img_size": 32, "depth": 1}
    plain = timm.create_model("vit_tiny_patch16_224", **small)
    with pytest.raises(ValueError, match=r"^layer 'p': tokens: cls, but module 'patch_embed'"
                       r"'s output has no class token .*patches only.*; use tokens: mean"):
        _probe(plain, [LayerSpec("p", "patch_embed", "cls")], 32)
    with pytest.raises(ValueError, match=r"^layer 'c': tokens: mean applies to \(batch, tokens, "
                       r"dim\) outputs, module 'patch_embed.proj' outputs \(batch, 192, 2, 2\)"):
        _probe(plain, [LayerSpec("c", "patch_embed.proj", "mean")], 32)
    with pytest.raises(ValueError, match=r"^layer 'h': tokens: cls applies to .* outputs"):
        _probe(plain, [LayerSpec("h", "head", "cls")], 32)
    pooled = timm.create_model("vit_tiny_patch16_224", **small, class_token=False,
                               global_pool="avg")
    with pytest.raises(ValueError, match=r"^layer 'b': tokens: cls, but .*num_prefix_tokens=0, "
                       r"class token: no"):
        _probe(pooled, [LayerSpec("b", "blocks.0", "cls")], 32)
    capture = _probe(pooled, [LayerSpec("b", "blocks.0", "mean")], 32)
    assert capture.shapes == {"b": (192,)} and capture.layer_attrs["b"]["prefix_tokens"] == 0
    # a distilled model has two prefix tokens (class, distillation): both left out of `mean`
    deit = timm.create_model("deit_tiny_distilled_patch16_224", **small)
    capture = _probe(deit, [LayerSpec("b", "blocks.0", "mean")], 32)
    assert capture.layer_attrs["b"] == {"tokens": "mean", "output_shape": [6, 192],
                                        "prefix_tokens": 2}


class _Tokens(nn.Module):
    """A custom model with token outputs and none of timm's prefix-token attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.mix = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.embed(x).flatten(2).transpose(1, 2))


def test_tokens_of_a_model_that_declares_no_class_token() -> None:
    net = _Tokens()
    with pytest.raises(ValueError, match=r"^layer 'm': tokens: cls, .*the model declares no "
                       r"class token"):
        _probe(net, [LayerSpec("m", "mix", "cls")], 16)
    rows: list[torch.Tensor] = []
    capture = Capture(net, [LayerSpec("m", "mix", "mean")], lambda _n, _r, v: rows.append(v))
    x = torch.rand(2, 3, 16, 16)
    with capture, torch.inference_mode():
        net.eval()(x[:1])
        capture.end_probe()
        expected = net(x).mean(dim=1)  # no prefix tokens: the mean of all of them
    assert torch.equal(rows[0], expected)


def test_tokens_key_in_layer_entries() -> None:
    net = _Tokens()
    layers = resolve_layers(net, ["pixels", {"module": "*", "name": "l{i}", "tokens": "mean"}])
    assert layers == [LayerSpec("pixels", ""), LayerSpec("l1", "embed", "mean"),
                      LayerSpec("l2", "mix", "mean")]
    with pytest.raises(ValueError, match="tokens must be one of all, cls, mean"):
        resolve_layers(net, [{"module": "mix", "tokens": "first"}])


# --------------------------------------------------------------------------------------
# source: python
# --------------------------------------------------------------------------------------

FACTORY_MODULE = '''
import torch
from torch import nn
from torchvision import transforms


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def plain():
    return Tiny()


def configured():
    return Tiny(), {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5),
                    "std": (0.25, 0.25, 0.25), "interpolation": "bilinear", "crop_pct": 1.0}


def transformed():
    return Tiny(), transforms.Compose([transforms.Resize((24, 24)), transforms.ToTensor()])


def not_a_module():
    return "a model"


def bad_pair():
    return Tiny(), 3


def raises():
    raise RuntimeError("no weights\\nhere")


NOT_CALLABLE = 3
'''


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of factories (``<name>:<function>``)."""
    (tmp_path / "emergence_test_factories.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "emergence_test_factories", raising=False)
    return "emergence_test_factories"


def _python(factory: str, **extra: object) -> NetworkSpec:
    return NetworkSpec.from_params({"source": "python", "factory": factory, **extra}, name="c")


def test_factory_model_weights_and_data_config(factory: str) -> None:
    before = torch.random.get_rng_state()
    loaded = load_model(_python(f"{factory}:plain"))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert type(loaded.model).__name__ == "Tiny" and not loaded.model.training
    assert loaded.name == f"python:{factory}:plain" and loaded.transform is None
    assert loaded.weights == (f"python factory {factory}:plain (torch.manual_seed(0)); "
                              f"state_dict sha256 {state_dict_sha256(loaded.model)}")
    assert loaded.data_config == timm.data.resolve_data_config({}, model=nn.Identity())
    again = load_model(_python(f"{factory}:plain"))
    other = load_model(_python(f"{factory}:plain", seed=1))
    assert again.weights == loaded.weights and other.weights != loaded.weights
    assert torch.equal(again.model.fc.weight, loaded.model.fc.weight)
    assert not torch.equal(other.model.fc.weight, loaded.model.fc.weight)
    configured = load_model(_python(f"{factory}:configured"))
    assert configured.data_config["input_size"] == (3, 32, 32)
    assert configured.data_config["mean"] == (0.5, 0.5, 0.5)
    assert configured.data_config["interpolation"] == "bilinear"
    resized = load_model(_python(f"{factory}:configured", input_size=40))
    assert resized.data_config["input_size"] == (3, 40, 40)
    assert resized.data_config["std"] == (0.25, 0.25, 0.25)


def test_factory_checkpoint(factory: str, tmp_path: Path) -> None:
    seeded = load_model(_python(f"{factory}:plain", seed=5))
    path = tmp_path / "tiny.pth"
    torch.save(seeded.model.state_dict(), path)
    loaded = load_model(_python(f"{factory}:plain", checkpoint=str(path)))
    assert torch.equal(loaded.model.conv.weight, seeded.model.conv.weight)
    assert str(path) in loaded.weights and loaded.weights.endswith(
        f"state_dict sha256 {state_dict_sha256(seeded.model)}")


def test_factory_transform_in_the_activations_file(factory: str, images: list[str],
                                                   tmp_path: Path) -> None:
    loaded = load_model(_python(f"{factory}:transformed"))
    assert loaded.data_config == {"input_size": (3, 24, 24)}
    layers = resolve_layers(loaded, ["pixels", "conv", {"module": "fc", "name": "logits"}])
    out = tmp_path / "custom.h5"
    extract_statistics(loaded, images, layers, out, batch_size=2, progress=False,
                       keep_raw_max_features=4096)
    expected = torch.stack([loaded.transform(load_image(p)) for p in images])
    with h5py.File(out) as h5:
        assert h5.attrs["model"] == f"python:{factory}:transformed"
        assert h5.attrs["weights"] == loaded.weights
        assert h5.attrs["preprocess"].startswith("factory transform: Compose(")
        assert list(h5.attrs["input_size"]) == [3, 24, 24] and len(h5.attrs["mean"]) == 0
        np.testing.assert_array_equal(h5["layers/pixels/activations"][()],
                                      expected.reshape(len(images), -1).numpy())
        assert h5["predictions/top5_index"].shape == (len(images), 5)
    with pytest.raises(ValueError, match="input_size does not apply to a factory that returns "
                       "its own transform"):
        load_model(_python(f"{factory}:transformed", input_size=32))


@pytest.mark.parametrize(("function", "message"), [
    ("missing", r"^factory '{m}:missing': {m}.missing does not exist \(callables in {m}: "
                r"Tiny, bad_pair, configured, .*\)$"),
    ("NOT_CALLABLE", r"^factory '{m}:NOT_CALLABLE': {m}.NOT_CALLABLE is not callable"),
    ("not_a_module", r"^factory '{m}:not_a_module' returned str, not a torch.nn.Module"),
    ("bad_pair", r"^factory '{m}:bad_pair' returned \(Tiny, int\); the second item must be "
                 r"a data config \(mapping\) or a transform \(callable\)$"),
    ("raises", r"^factory '{m}:raises' raised RuntimeError: no weights here$"),
])
def test_factory_errors_are_one_line(factory: str, function: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.format(m=factory)) as info:
        load_model(_python(f"{factory}:{function}"))
    assert "\n" not in str(info.value)


def _config_with(entry: dict[str, object]) -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["networks"] = {"custom": entry}
    return config


def test_python_source_in_the_config(factory: str) -> None:
    entry = {"source": "python", "factory": f"{factory}:plain", "preprocess": "resize",
             "layers": ["pixels", {"module": "conv", "name": "conv", "tokens": "all"}]}
    study = check_config(_config_with(copy.deepcopy(entry)), SCHEMA)
    spec = study.networks["custom"]
    assert (spec.source, spec.factory, spec.model) == ("python", f"{factory}:plain", None)
    assert spec.params() == {**entry, "seed": 0}
    assert NetworkSpec.from_params(spec.params(), name="custom") == spec


@pytest.mark.parametrize(("entry", "message"), [
    ({"source": "python"}, "config key 'networks.custom': 'factory' is a required property"),
    ({"source": "python", "factory": "{m}"},
     "config key 'networks.custom.factory': '{m}' is not 'package.module:function'"),
    ({"source": "python", "factory": "no_such_package_x.models:build"},
     "config key 'networks.custom.factory': module 'no_such_package_x.models' is not "
     "importable (ModuleNotFoundError: No module named 'no_such_package_x'); install it, add "
     "its folder to PYTHONPATH or run from the folder that holds it"),
    ({"source": "python", "factory": "{m}:plain", "model": "resnet18"},
     "config key 'networks.custom.model': not used with 'source: python' (the factory "
     "builds the model)"),
    ({"source": "python", "factory": "{m}:plain", "pretrained": False},
     "config key 'networks.custom.pretrained': not used with 'source: python' (the "
     "factory's weights are its own; 'checkpoint' may load a state dict)"),
    ({"model": "resnet18", "pretrained": False, "factory": "{m}:plain"},
     "config key 'networks.custom.factory': only valid with 'source: python'"),
    ({"pretrained": False}, "config key 'networks.custom': 'model' is a required property"),
])
def test_python_source_config_errors(factory: str, entry: dict, message: str) -> None:
    entry = {k: v.format(m=factory) if isinstance(v, str) else v for k, v in entry.items()}
    with pytest.raises(ConfigError) as info:
        check_config(_config_with({**entry, "layers": ["pixels"]}), SCHEMA)
    assert str(info.value) == message.format(m=factory)


def test_demo_networks_keep_their_params() -> None:
    """No new key reaches the demo's params (its extraction would rerun)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    before = copy.deepcopy(config["networks"])
    for name, spec in network_specs(config["networks"]).items():
        assert set(spec.params()) <= set(before[name]) | {"preprocess", "seed"}
        assert spec.source is None and spec.factory is None


# --------------------------------------------------------------------------------------
# emergence layers
# --------------------------------------------------------------------------------------


def test_layers_command_lists_modules_and_shapes() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, "-m", "emergence", "layers", "test_efficientnet",
                          "--depth", "2"], capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "test_efficientnet: random init (torch.manual_seed(0)); input 3 x 160 x 160"
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
    assert rows["pixels"][2:] == ["3", "x", "160", "x", "160", "76800"]
    assert rows["blocks.0"][1:] == ["Sequential", "16", "x", "80", "x", "80", "102400"]
    assert rows["classifier"][1:] == ["Linear", "1000", "1000"]
    assert "blocks.0.0" not in rows and "T" not in run.stdout.split()
    # the paths it lists are layer entries
    loaded = load_model(NetworkSpec("x", "test_efficientnet", pretrained=False))
    assert [s.module for s in resolve_layers(loaded, ["bn1", "blocks.0", "classifier"])] == \
        ["bn1", "blocks.0", "classifier"]


def test_layers_command_marks_token_outputs(capsys: pytest.CaptureFixture[str],
                                            factory: str) -> None:
    assert main(["layers", "vit_tiny_patch16_224", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert rows["patch_embed"].split()[2:] == ["196", "x", "192", "37632", "T", "tokens:",
                                               "all|mean"]
    assert rows["blocks"].split()[-2:] == ["tokens:", "all|cls|mean"]
    assert rows["head"].split()[1:] == ["Linear", "1000", "1000"]
    assert "197 tokens = 1 prefix + 196 patches" in out
    assert main(["layers", f"python:{factory}:configured"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"python:{factory}:configured: python factory")
    assert "input 3 x 32 x 32" in out.splitlines()[0]
    assert [line.split()[0] for line in out.splitlines()[2:]] == \
        ["pixels", "conv", "pool", "fc"]
    assert main(["layers", f"python:{factory}:not_a_module"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("emergence layers: factory") and err.count("\n") == 1
