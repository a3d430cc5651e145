"""A network of precomputed features (``source: features``): its config, its activations
file (the same statistics as the forward pass's, bit for bit), a bad features file in the
workflow, the export in thingsvision's layout, and the worked example's DAG."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from emergence.config import ConfigError, check_config
from emergence.errors import InputFileError
from emergence.extraction.export import export_features
from emergence.extraction.extract import extract_statistics
from emergence.extraction.precomputed import precomputed_statistics
from emergence.formats.activations import load_group
from emergence.sources.common import ManifestRow
from emergence.sources.models.features import layer_files
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model
from tests.conftest import ROOT, run_snakemake

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONCEPTS = ["apple", "dog", "cat", "cup", "car"]
EXTRACTION = {"batch_size": 2, "device": "cpu", "threads": 1, "ram_budget_mb": 64,
              "reuse_freed_memory": True}
STATS = ("correlation", "sums", "gram", "shift")


def draw(path: Path, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def manifest(root: Path) -> list[ManifestRow]:
    """Two groups of one random picture per concept."""
    return [ManifestRow(group, c, c, draw(root / c / f"{group}.png", 10 * i + int(group)),
                        "test")
            for group in ("1", "2") for i, c in enumerate(CONCEPTS)]


def test_features_network_equals_the_forward_pass_bit_for_bit(tmp_path: Path) -> None:
    """A tiny random timm model's layers through the normal path, exported in thingsvision's
    layout, then read as a `source: features` network: every statistic of every layer is
    bit-identical to the forward pass's with its rows in RAM or on disk (the float32 rows
    are the same and the reduction is the same PearsonAccumulator kernel), equal to float64
    rounding with its rows on the device (torch's summation order); the rows are those of
    the file, not of its order (the layout is shuffled); the 1 vs 2 test gets its reason."""
    rows = manifest(tmp_path / "images")
    spec = NetworkSpec("net", "test_efficientnet", pretrained=False, input_size=32,
                       layers=("pixels", "conv_stem", {"module": "blocks.*", "name": "b{i}"},
                               "classifier"))
    out = tmp_path / "exported"
    shapes = export_features(spec, rows, ["1", "2"], out, EXTRACTION)
    assert (out / "file_names.txt").read_text().split() == [r.path for r in rows]
    layers = {name: out / name for name in shapes}
    # thingsvision does not promise our order: shuffle the rows and their names together
    order = np.random.default_rng(0).permutation(len(rows))
    names = (out / "file_names.txt").read_text().split()
    (out / "file_names.txt").write_text("".join(f"{names[i]}\n" for i in order))
    for path in layers.values():
        np.save(path / "features.npy", np.load(path / "features.npy")[order])

    model = load_model(spec)
    resolved = resolve_layers(model, spec.layers)
    for group in ("1", "2"):
        paths = [r.path for r in rows if r.group == group]
        meta = {"wnid": [r.wnid for r in rows if r.group == group]}
        forward, features = tmp_path / f"forward-{group}.h5", tmp_path / f"features-{group}.h5"
        extract_statistics(model, paths, resolved, forward, batch_size=2, threads=1,
                           progress=False, image_meta=meta)
        precomputed_statistics(layers, paths, features, image_meta=meta)
        with h5py.File(forward) as a, h5py.File(features) as b:
            assert list(b.attrs["layer_names"]) == list(a.attrs["layer_names"]) == list(shapes)
            assert b.attrs["source"] == "features" and "predictions" not in b
            for name in shapes:
                for key in STATS:
                    assert np.array_equal(a[f"layers/{name}/{key}"][()],
                                          b[f"layers/{name}/{key}"][()], equal_nan=True), \
                        (group, name, key)
                la, lb = a[f"layers/{name}"].attrs, b[f"layers/{name}"].attrs
                assert la["n_features"] == lb["n_features"] == shapes[name][1]
                assert lb["module"] == str(layers[name])
                assert list(lb["file"]) == [str(f) for f in layer_files(layers[name])]
                assert len(lb["sha256"][0]) == 64
        # the forward pass's other row stores: a file on disk gives the same bits; the
        # device path (torch on the device, another summation order: CUDA's, here on the
        # CPU) agrees to float64 rounding only
        for store, budgets in (("disk", {"ram_budget_bytes": 0}),
                               ("device", {"device_budget_bytes": 1 << 30})):
            other = tmp_path / f"{store}-{group}.h5"
            summary = extract_statistics(model, paths, resolved, other, batch_size=2,
                                         threads=1, progress=False, **budgets)
            assert set(summary.spilled if store == "disk" else summary.on_device) == set(shapes)
            with h5py.File(other) as a, h5py.File(features) as b:
                for name in shapes:
                    x, y = a[f"layers/{name}/gram"][()], b[f"layers/{name}/gram"][()]
                    if store == "disk":
                        assert np.array_equal(x, y), (store, name)
                    else:
                        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12 * abs(y).max())
        group_stats = load_group(features, CONCEPTS, "feat", group)
        assert (group_stats.predicted == -1).all()
        assert group_stats.no_prediction.startswith("precomputed features (source: features)")


def test_a_features_network_in_the_config(tmp_path: Path) -> None:
    """The schema branch and the spec: a mapping of layers in config order, `root`, no model
    keys; its params hold what the job reads (not the forward pass's preprocess and seed)."""
    entry = {"source": "features", "root": "/data/images",
             "layers": {"conv": "f/conv", "fc": "f/fc.npy"}, "label": "F"}
    cfg = {"images": {"source": "folders", "path": "x"}, "networks": {"feat": entry},
           "word_models": {"w": {"type": "embedding", "path": "e.npy", "ids": "ids.txt"}}}
    study = check_config(cfg, SCHEMA)
    spec = study.networks["feat"]
    assert spec.feature_layers == {"conv": "f/conv", "fc": "f/fc.npy"}
    assert spec.params() == {"source": "features", "root": "/data/images",
                             "layers": {"conv": "f/conv", "fc": "f/fc.npy"}}
    assert NetworkSpec.from_params(spec.params(), "feat") == dataclasses.replace(spec, label=None)
    bad = [({"layers": ["conv"]}, "networks.feat.layers"),
           ({"model": "resnet18"}, "networks.feat.model"),
           ({"pretrained": True}, "networks.feat.pretrained"),
           ({"layers": {"a/b": "f"}}, "networks.feat.layers.a/b")]
    for change, key in bad:
        with pytest.raises(ConfigError, match=f"'{key}'") as err:
            check_config({**cfg, "networks": {"feat": {**entry, **change}}}, SCHEMA)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="networks.cnn.root"):
        check_config({**cfg, "networks": {"cnn": {"model": "resnet18", "pretrained": False,
                                                  "root": "x", "layers": ["fc"]}}}, SCHEMA)
    (tmp_path / "f" / "conv").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"'networks.feat.layers.fc': f/fc.npy does not "
                                          "exist") as err:
        spec.check_data_paths(tmp_path)
    assert "\n" not in str(err.value)


def test_the_features_path_imports_no_torch(tmp_path: Path) -> None:
    """The activations job of a features network runs without torch (~2 s, ~1 GB)."""
    np.save(tmp_path / "f.npy", np.arange(12, dtype=np.float32).reshape(3, 4) ** 2)
    (tmp_path / "file_names.txt").write_text("a.png\nb.png\nc.png\n")
    code = ("import sys\nfrom emergence.extraction.precomputed import precomputed_statistics\n"
            f"precomputed_statistics({{'x': {str(tmp_path / 'f.npy')!r}}}, "
            f"['c.png', 'a.png', 'b.png'], {str(tmp_path / 'o.h5')!r})\n"
            "assert 'torch' not in sys.modules, 'torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["layers/x/correlation"].shape == (3, 3)


def study(root: Path) -> dict:
    """A folders study of 5 concepts x 2 pictures, and a network of precomputed features of
    those pictures (an .npy and its file_names.txt per layer)."""
    rng = np.random.default_rng(1)
    names = []
    for i, c in enumerate(CONCEPTS):
        for j in range(2):
            draw(root / "images" / c / f"{j}.png", 10 * i + j)
            names.append(f"{c}/{j}.png")  # keys relative to the image folder
    for layer, width in (("low", 6), ("high", 3)):
        (root / "features" / layer).mkdir(parents=True)
        np.save(root / "features" / layer / "features.npy",
                rng.standard_normal((len(names), width)).astype(np.float32))
    (root / "features" / "file_names.txt").write_text("".join(f"{n}\n" for n in names))
    np.save(root / "emb.npy", rng.standard_normal((len(CONCEPTS), 4)))
    (root / "ids.txt").write_text("\n".join(CONCEPTS) + "\n")
    return {
        "seed": 3, "results": "results",
        "images": {"source": "folders", "path": "images", "images_per_concept": 2},
        "networks": {"feat": {"source": "features", "root": "images",
                              "layers": {"low": "features/low", "high": "features/high"}}},
        "word_models": {"emb": {"type": "embedding", "path": "emb.npy", "ids": "ids.txt"}},
        "extraction": {"batch_size": 8, "device": "cpu", "threads": 1},
        "permutations": {"n": 4, "shards": 1, "batch_size": 4},
        "intervals": {"method": "none"},
        "one_vs_two": {"n_permutations": 4},
        "figures": {"formats": ["png"]},
    }


def test_a_bad_features_file_stops_its_job_in_one_line(tmp_path: Path) -> None:
    """In the workflow: the features files are inputs of the activations job (editing one
    plans it again); a non-finite value stops the job with one line naming the file and the
    image, and leaves no activations file and no temporary."""
    cfg = study(tmp_path)
    target = "results/activations/feat/1.h5"
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(tmp_path / target) as f:
        assert list(f.attrs["layer_names"]) == ["low", "high"]
    proc = run_snakemake(tmp_path, cfg, "-n", target)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    file = tmp_path / "features" / "high" / "features.npy"
    values = np.load(file)
    values[3, 1] = np.nan  # dog/1.png, in group 2
    np.save(file, values)
    proc = run_snakemake(tmp_path, cfg, "-n", target)
    assert "activations" in proc.stdout, proc.stdout[-2000:]  # the edited input reruns it
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", "results/activations/feat/2.h5")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "non-finite" in ln]
    assert lines, proc.stderr[-3000:]
    assert lines[0].startswith("activations (network=feat, group=2): InputFileError: "
                               "features/high/features.npy: non-finite features (nan or inf) "
                               "for 1 image(s): 'images/dog/1.png'"), lines
    folder = tmp_path / "results" / "activations" / "feat"
    assert sorted(p.name for p in folder.iterdir()) == ["1.h5"]


def test_the_precomputed_example_builds_its_dag(tmp_path: Path) -> None:
    """config/precomputed.yaml after `make demo` and its two export commands: `snakemake -n`
    plans every job of the features network and the embedding word model (their files here
    are stand-ins of the right layout, written where the commands write them)."""
    cfg = yaml.safe_load((ROOT / "config" / "precomputed.yaml").read_text())
    shutil.copy(ROOT / "config" / "demo_concepts.tsv", tmp_path / "demo_concepts.tsv")
    cfg["images"]["concepts"] = "demo_concepts.tsv"
    for path in cfg["networks"]["lite0-features"]["layers"].values():
        (tmp_path / path).mkdir(parents=True)
        np.save(tmp_path / path / "features.npy", np.zeros((2, 3), np.float32))
    (tmp_path / Path(path).parent / "file_names.txt").write_text("a.png\nb.png\n")
    emb = cfg["word_models"]["minilm-word-embedding"]
    (tmp_path / emb["path"]).parent.mkdir(parents=True, exist_ok=True)
    np.save(tmp_path / emb["path"], np.zeros((2, 3)))
    (tmp_path / emb["ids"]).write_text("n01440764\nn01443537\n")
    proc = run_snakemake(tmp_path, cfg, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "activations" in proc.stdout and "word_vectors" in proc.stdout


def test_export_refuses_a_features_network(tmp_path: Path) -> None:
    spec = NetworkSpec("f", source="features", layers=(("x", "x.npy"),))
    with pytest.raises(ValueError, match="itself precomputed features"):
        export_features(spec, [], ["1"], tmp_path, EXTRACTION)
    with pytest.raises(InputFileError):
        precomputed_statistics({"x": tmp_path / "none.npy"}, ["a.png"], tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()


def test_export_vectors_gives_an_embedding_of_the_same_vectors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`emergence export-vectors`: a word model's vectors.h5 as .npy + ids, which a
    `type: embedding` word model reads back as the same vectors for every concept; the
    export of a network needs the workflow's manifest (one line when it is missing)."""
    from emergence.cli import main
    from emergence.formats.vectors import write_word_vectors
    from emergence.sources.precomputed import read_keyed_matrix

    vectors = np.random.default_rng(4).standard_normal((3, 5))
    write_word_vectors(tmp_path / "vectors.h5", "wm", {}, ["n1", "n2", "n3"], vectors)
    assert main(["export-vectors", str(tmp_path / "vectors.h5"), str(tmp_path / "out")]) == 0
    table = read_keyed_matrix(tmp_path / "out" / "vectors.npy", ids=tmp_path / "out" / "ids.txt")
    rows = table.rows_of(["n3", "n1", "n2"])
    assert np.array_equal(table.values[[rows["n3"], rows["n1"], rows["n2"]]], vectors[[2, 0, 1]])
    cfg = {"results": str(tmp_path / "results"), "images": {"source": "folders", "path": "x"},
           "networks": {"cnn": {"source": "python", "factory": "emergence.examples:tiny_cnn",
                                "layers": ["conv1"]}},
           "word_models": {"w": {"type": "embedding", "path": "e.npy", "ids": "ids.txt"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["export-features", "cnn", str(tmp_path / "f"), "--configfile",
                 str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "images/manifest.tsv does not exist: run the workflow" in err
