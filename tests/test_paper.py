"""config/paper.yaml end to end on a fixture tree of the right shape.

No ImageNet and no pretrained weights here: the test builds tiny JPEGs in both ImageNet
layouts, tiny vector files in all four formats, and runs the paper's DAG with the three
architectures at random weights (``pretrained: false``), every layer of the paper, reduced
image size and concept count.
"""

from __future__ import annotations

import csv
import gzip
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from gensim.models import KeyedVectors
from PIL import Image

from emergence.sources.common import imagenet_classes
from tests.conftest import error_lines

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
N_CLASSES = 8  # the first 8 ImageNet classes; each with 6 images (5 are sampled)
PER_CLASS = 6


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_images(root: Path) -> list[tuple[str, str]]:
    """Flat val folder + LOC_val_solution.csv, and the one-folder-per-wnid layout."""
    classes = imagenet_classes()[:N_CLASSES]
    flat = root / "val"
    flat.mkdir()
    rng = np.random.default_rng(0)
    lines = ["ImageId,PredictionString"]
    idx = 0
    for c, (wnid, _) in enumerate(classes):
        (root / "train" / wnid).mkdir(parents=True)
        for j in range(PER_CLASS):
            idx += 1
            name = f"ILSVRC2012_val_{idx:08d}"
            pixels = (rng.integers(0, 255, (24, 24, 3)) // (c + 1)).astype(np.uint8)
            img = Image.fromarray(pixels)
            if j == 1:
                img = img.convert("L")  # ImageNet has greyscale JPEGs ...
            elif j == 2:
                img = img.convert("CMYK")  # ... and CMYK ones
            img.save(flat / f"{name}.JPEG", quality=90)
            shutil.copy(flat / f"{name}.JPEG", root / "train" / wnid / f"{name}.JPEG")
            lines.append(f"{name},{wnid} 1 1 20 20")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return classes


def write_vectors(root: Path, classes: list[tuple[str, str]]) -> dict[str, Path]:
    """The paper's four formats; 'stingray' (class 7) is missing from the RNN vectors."""
    rng = np.random.default_rng(1)
    tokens = [c.replace(" ", "_") for _, c in classes]  # GoogleNews-style phrases
    paths = {}
    for name, fmt, dim in [("skipgram", "w2v-bin", 30), ("glove", "glove", 25),
                           ("rnn", "w2v-txt", 64), ("cross", "vec", 51)]:
        words = [t for t in tokens if not (name == "rnn" and t == "stingray")] + ["filler"]
        kv = KeyedVectors(vector_size=dim)
        kv.add_vectors(words, rng.standard_normal((len(words), dim)).astype(np.float32))
        if fmt == "w2v-bin":
            path = root / "GoogleNews-vectors-negative300.bin.gz"
            raw = root / "tmp.bin"
            kv.save_word2vec_format(str(raw), binary=True)
            path.write_bytes(gzip.compress(raw.read_bytes()))
        elif fmt == "glove":
            path = root / "glove.6B.300d.txt"
            kv.save_word2vec_format(str(path), binary=False, write_header=False)
        elif fmt == "w2v-txt":
            path = root / "rnn-640.txt"
            kv.save_word2vec_format(str(path), binary=False)
        else:
            path = root / "en-de-512.vec"
            kv.save_word2vec_format(str(path), binary=False)
        paths[name] = path
    return paths


def paper_config(root: Path, source: str = "imagenet-val") -> dict:
    with open(ROOT / "config" / "paper.yaml") as fh:
        cfg = yaml.safe_load(fh)
    vec = write_vectors(root, write_images(root))
    cfg["results"] = str(root / "results")
    cfg["images"] = ({"source": "imagenet-val", "path": str(root / "val"),
                      "labels": str(root / "LOC_val_solution.csv"), "images_per_concept": 5,
                      "max_concepts": N_CLASSES} if source == "imagenet-val" else
                     {"source": "imagenet-folders", "path": str(root / "train"),
                      "images_per_concept": 5, "max_concepts": N_CLASSES})
    for name, net in cfg["networks"].items():
        net["pretrained"] = False
        net["input_size"] = 80 if name == "inception_v3" else 32
    cfg["word_models"] = {
        "skipgram": {"type": "keyedvectors", "path": str(vec["skipgram"]),
                     "format": "word2vec-binary"},
        "glove": {"type": "keyedvectors", "path": str(vec["glove"]), "format": "auto"},
        "rnn": {"type": "keyedvectors", "path": str(vec["rnn"]), "format": "auto"},
        "cross-lingual": {"type": "keyedvectors", "path": str(vec["cross"]),
                          "format": "fasttext-vec"},
    }
    cfg["extraction"] = {"batch_size": 8, "device": "cpu"}
    cfg["permutations"] = {"n": 20, "shards": 2, "batch_size": 8, "device": "cpu"}
    # paper.yaml's jackknife would add 48 jobs here; tests/test_measures.py covers it
    cfg["intervals"] = {"method": "none"}
    cfg["measures"]["mutual_knn_k"] = 3  # paper.yaml's 10 needs at least 11 concepts; 7 here
    cfg["one_vs_two"] = {"n_permutations": 10, "groups": "all"}
    return cfg


def run(root: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = root / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run([*SNAKEMAKE, "--directory", str(root), "--configfile", str(path), *args],
                          capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    proc = run(root, paper_config(root), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "results"


def test_paper_config_without_data_says_which_path_to_set() -> None:
    proc = subprocess.run([*SNAKEMAKE, "-n", "--configfile", str(ROOT / "config" / "paper.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "config key 'images.path'" in lines[0] and "image-net.org" in lines[0]


EXPECTED_LAYERS = {
    "vgg16": ["pixels", "B1C1", "B1C2", "B2C1", "B2C2", "B3C1", "B3C2", "B3C3", "B4C1", "B4C2",
              "B4C3", "B5C1", "B5C2", "B5C3", "FC1", "FC2", "predictions"],
    "resnet50": [f"activation_{i}" for i in range(1, 50)],
    "inception_v3": [f"mixed{i}" for i in range(11)],
}


@pytest.mark.slow
def test_paper_layers_pairs_and_figures(paper_run: Path) -> None:
    concepts = read_tsv(paper_run / "concepts" / "skipgram.tsv")
    kept = [r for r in concepts if r["kept"] == "true"]
    dropped = {r["concept"]: r["reason"] for r in concepts if r["kept"] == "false"}
    assert dropped == {"stingray": "not in rnn: no lemma of 'stingray' in vocabulary"}
    k = len(kept)
    assert k == N_CLASSES - 1
    shark = next(r for r in concepts if r["concept"] == "great white shark")
    assert (shark["token"], shark["how"]) == ("great_white_shark", "phrase")
    for net, layers in EXPECTED_LAYERS.items():
        assert len(layers) == {"vgg16": 17, "resnet50": 49, "inception_v3": 11}[net]
        for wm in ("skipgram", "glove", "rnn", "cross-lingual"):
            rows = read_tsv(paper_run / "two_vs_two" / net / wm / "scores.tsv")
            groups = sorted({r["group"] for r in rows})
            assert groups == ["1", "2", "3", "4", "5"]
            for g in groups:
                assert [r["layer"] for r in rows if r["group"] == g] == layers
            assert {int(r["n_pairs"]) for r in rows} == {math.comb(k, 2)}
    stems = ["overview"] + [f"{f}_{n}" for n in EXPECTED_LAYERS
                            for f in ("fig1_word_models", "fig2_layers", "fig4_one_vs_two")]
    for stem in stems:
        for ext in ("png", "pdf"):
            assert (paper_run / "figures" / f"{stem}.{ext}").is_file(), stem
    ones = read_tsv(paper_run / "one_vs_two" / "vgg16" / "skipgram.tsv")
    assert {r["group"] for r in ones} == {"1", "2", "3", "4", "5", "all"}


@pytest.mark.slow
def test_both_imagenet_layouts_sample_the_same_images(paper_run: Path, tmp_path: Path) -> None:
    root = paper_run.parent
    cfg = paper_config(tmp_path, source="imagenet-folders")
    proc = run(tmp_path, cfg, "--cores", "1", str(tmp_path / "results/images/manifest.tsv"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    flat = read_tsv(root / "results" / "images" / "manifest.tsv")
    folders = read_tsv(tmp_path / "results" / "images" / "manifest.tsv")
    key = [(r["group"], r["wnid"], Path(r["path"]).name) for r in flat]
    assert key == [(r["group"], r["wnid"], Path(r["path"]).name) for r in folders]
    assert len(flat) == 5 * N_CLASSES
