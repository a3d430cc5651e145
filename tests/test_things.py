"""A THINGS-layout study with k = 1,000 concepts, end to end (issue #13).

One sub-folder of images per concept (`<root>/<concept_id>/<images>`), a concept table that
maps each concept id to the word the word model looks up, a random-init network at 32 px, a
word2vec text file, few permutations. The concepts are not ImageNet classes, so the 1 vs 2
test is skipped with its reason. The 2 vs 2 accuracy the workflow writes is checked against
the literal reference (tests/literal.py) on a random subset of the 499,500 pairs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emergence.formats.activations import load_group
from emergence.formats.word_matrix import read_word_matrix
from emergence.io import read_tsv
from emergence.stats.two_vs_two import TwoVsTwo, pair_indices
from tests import literal
from tests.conftest import ROOT, SNAKEMAKE, error_lines, run_snakemake

K = 1000
PX = 16
LATENT = 6


def write_things(root: Path) -> dict:
    """k concept folders of two noisy images each, rendered from a latent per concept that
    also generates the concept's word vector (so the pixels carry the word structure)."""
    rng = np.random.default_rng(2024)
    z = rng.standard_normal((K, LATENT))
    basis = rng.standard_normal((LATENT, PX * PX * 3))
    table = ["concept_id\tword\tdefinition"]
    with open(root / "vectors.txt", "w") as vec:
        vec.write(f"{K} 12\n")
        words = z @ rng.standard_normal((LATENT, 12))
        for c in range(K):
            concept_id = f"thing_{c:04d}" + ("1" if c % 250 == 0 else "")  # sense digit: table
            word = f"w{c:04d}"
            table.append(f"{concept_id}\t{word}\ta thing numbered {c}")
            vec.write(word + " " + " ".join(f"{v:.6f}" for v in words[c]) + "\n")
            folder = root / "images" / concept_id
            folder.mkdir(parents=True)
            for j in range(2):
                signal = z[c] @ basis + 0.5 * rng.standard_normal(PX * PX * 3)
                pixels = np.clip(128 + 30 * signal, 0, 255).astype(np.uint8)
                Image.fromarray(pixels.reshape(PX, PX, 3)).save(folder / f"{j}.png")
    (root / "concepts.tsv").write_text("\n".join(table) + "\n")
    return {
        "seed": 5,
        "results": "results",
        "images": {"source": "folders", "path": "images", "images_per_concept": 2,
                   "table": {"path": "concepts.tsv"}},
        "networks": {"net": {"model": "test_efficientnet", "pretrained": False,
                             "input_size": 32, "preprocess": "resize",
                             "layers": ["pixels", "conv_head"]}},
        "word_models": {"w2v": {"type": "keyedvectors", "path": "vectors.txt",
                                "format": "word2vec-text"}},
        "extraction": {"batch_size": 64, "device": "cpu", "threads": 2},
        "permutations": {"n": 8, "shards": 1, "batch_size": 8},
        "intervals": {"method": "none"},
        "one_vs_two": {"n_permutations": 4},
        "figures": {"formats": ["png"]},
    }


@pytest.fixture(scope="module")
def things(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("things")
    cfg = write_things(root)
    proc = run_snakemake(root, cfg, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


@pytest.mark.slow
def test_k1000_two_vs_two_equals_the_literal_reference_on_sampled_pairs(things: Path) -> None:
    res = things / "results"
    scores = read_tsv(res / "two_vs_two" / "net" / "w2v" / "scores.tsv")
    assert {r["k"] for r in scores} == {str(K)}
    assert {r["n_pairs"] for r in scores} == {str(K * (K - 1) // 2)}
    wnids, w_mat, _ = read_word_matrix(res / "words" / "w2v" / "similarity.h5")
    assert len(wnids) == K and wnids[0] == "thing_00001" and wnids[1] == "thing_0001"
    rng = np.random.default_rng(0)
    for group in ("1", "2"):
        g = load_group(res / "activations" / "net" / f"{group}.h5", wnids, "net", group)
        engine = TwoVsTwo(w_mat)
        for layer_index, layer in enumerate(g.layers):
            i_mat = g.similarity[layer_index]
            outcomes = engine.outcomes(i_mat).numpy()
            row = next(r for r in scores if r["group"] == group and r["layer"] == layer)
            assert float(row["two_vs_two"]) == pytest.approx(outcomes.mean(), abs=1e-12)
            a, b = pair_indices(K)
            for p in rng.choice(len(outcomes), size=40, replace=False):
                assert outcomes[p] == literal.pair_passes(w_mat, i_mat, int(a[p]), int(b[p]))
    pixels = [float(r["two_vs_two"]) for r in scores if r["layer"] == "pixels"]
    assert min(pixels) > 0.7  # the planted latent structure is found


@pytest.mark.slow
def test_k1000_significance_and_skipped_one_vs_two(things: Path) -> None:
    res = things / "results"
    sig = read_tsv(res / "two_vs_two" / "net" / "w2v" / "significance.tsv")
    assert {r["n_permutations"] for r in sig} == {"8"}
    assert all(r["p_value"] for r in sig)
    ones = read_tsv(res / "one_vs_two" / "net" / "w2v.tsv")
    assert ones and all("skipped" in r["reason"] for r in ones)
    assert (res / "figures" / "overview.png").stat().st_size > 0


@pytest.mark.slow
def test_custom_config_runs_on_the_demo_images(demo_run: tuple[Path, dict],
                                               tmp_path: Path) -> None:
    """config/custom.yaml, unmodified, on the reduced demo's rendered images (copied to a
    folder of their own): a folder source read through a concept table, a `source: python`
    network and a ViT with token choices. (The reduced demo has 12 concepts, so its 12-row
    table stands in for the full one.)"""
    demo, cfg = demo_run
    tmp = tmp_path
    shutil.copytree(demo / "results" / "images" / "png", tmp / "results" / "images" / "png")
    (tmp / "config").mkdir()
    (tmp / "config" / "demo_concepts.tsv").write_text(
        (demo / cfg["images"]["concepts"]).read_text())
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp), "--configfile", str(ROOT / "config" / "custom.yaml"),
         "--cores", "2"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp / "results" / "custom"
    manifest = read_tsv(res / "images" / "manifest.tsv")
    assert {r["source"] for r in manifest} == {"folders"} and len(manifest) == 24
    scores = read_tsv(res / "summary" / "two_vs_two.tsv")
    layers = {(r["network"], r["layer"]) for r in scores}
    assert ("tiny-cnn", "conv3") in layers and ("vit-tiny", "block12") in layers
    assert all(0.0 <= float(r["two_vs_two"]) <= 1.0 for r in scores)
    cnn = read_tsv(res / "one_vs_two" / "tiny-cnn" / "minilm-word.tsv")
    assert all("not ImageNet wnids" in r["reason"] for r in cnn)  # skipped, with the reason
    vit = read_tsv(res / "one_vs_two" / "vit-tiny" / "minilm-word.tsv")
    assert not any("skipped" in r["reason"] for r in vit)  # ImageNet classes: it runs


def test_things_config_without_the_data_says_where_things_comes_from(tmp_path: Path) -> None:
    """`snakemake --cores all --configfile config/things.yaml` as typed, before THINGS is
    downloaded: one line naming the key, the missing path and where THINGS comes from."""
    proc = subprocess.run([*SNAKEMAKE, "--cores", "all", "--configfile",
                           "config/things.yaml"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr)
    assert lines == ["semantic-emergence: config key 'images.path': data/THINGS/object_images "
                     "does not exist; download THINGS from https://osf.io/jum2f/ "
                     "(THINGS/Images: the object_images folder, password on the page; "
                     "THINGS/Metadata: things_concepts.tsv) and set the path"], lines
    assert not (ROOT / "results" / "things").exists()
