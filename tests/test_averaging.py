"""Averaging several images per concept (``images_per_average``) in the activations
reader, and how predictions map onto concepts for the 1 vs 2 test (label map, skip
reasons), on activations files written by a small random-init model."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from emergence.analysis import one_vs_two_rows
from emergence.extraction.extract import extract_statistics
from emergence.formats.activations import load_group
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model
from tests.test_sources_images_folders import draw

CONCEPTS = ["c0", "c1", "c2", "c3", "c4"]
PER = 3  # images averaged per concept


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file with PER images per concept (raw activations kept), one with one image per
    concept whose ids are ImageNet wnids."""
    root = tmp_path_factory.mktemp("averaging")
    model = load_model(NetworkSpec.from_params(
        {"model": "test_efficientnet", "pretrained": False, "input_size": 48}))
    layers = resolve_layers(model)
    paths = []
    for i in range(len(CONCEPTS) * PER):
        draw(root / f"{i}.png", 100 + i)
        paths.append(str(root / f"{i}.png"))
    ids = [c for c in CONCEPTS for _ in range(PER)]
    out = {"averaged": root / "averaged.h5", "single": root / "single.h5"}
    extract_statistics(model, paths, layers, out["averaged"], batch_size=4,
                       keep_raw_max_features=10**9, progress=False,
                       image_meta={"wnid": ids, "concept": ids})
    wnids = [f"n0{i:07d}" for i in range(len(CONCEPTS))]
    extract_statistics(model, paths[::PER], layers, out["single"], batch_size=4,
                       progress=False, image_meta={"wnid": wnids, "concept": CONCEPTS})
    return out


def _concept_means(f: h5py.File, layer: str, ids: list[str], kept: list[str]) -> np.ndarray:
    """The mean raw activation of each kept concept's images, in kept order."""
    raw = f[f"layers/{layer}/activations"][()].astype(np.float64)
    return np.stack([raw[[i for i, w in enumerate(ids) if w == c]].mean(axis=0) for c in kept])


def test_average_equals_corrcoef_of_mean_activations(files: dict[str, Path]) -> None:
    kept = ["c3", "c0", "c4", "c1"]  # any order and subset
    g = load_group(files["averaged"], kept, "net", "1")
    assert g.no_prediction.startswith("images are averaged per concept")
    assert (g.predicted == -1).all()
    with h5py.File(files["averaged"]) as f:
        ids = f["images/wnid"].asstr()[()].tolist()
        for j, name in enumerate(g.layers):
            means = _concept_means(f, name, ids, kept)
            expected = np.corrcoef(means)
            np.testing.assert_allclose(g.similarity[j], expected, rtol=0, atol=1e-10,
                                       err_msg=name)
            assert (g.similarity[j] == g.similarity[j].T).all()
            assert (np.diag(g.similarity[j]) == 1.0).all()


def test_centred_gram_equals_the_gram_of_centred_activations(files: dict[str, Path]) -> None:
    """CKA's image side: load_group(gram=True) gives X_c X_cᵀ of the (mean) activations of
    the kept concepts, centred over them, from the stored statistics alone."""
    from emergence.stats.cka import linear_gram

    kept = ["c3", "c0", "c4", "c1"]
    g = load_group(files["averaged"], kept, "net", "1", gram=True)
    assert load_group(files["averaged"], kept, "net", "1").gram is None
    assert g.gram is not None and g.gram.shape == g.similarity.shape
    with h5py.File(files["averaged"]) as f:
        ids = f["images/wnid"].asstr()[()].tolist()
        for j, name in enumerate(g.layers):
            means = _concept_means(f, name, ids, kept)
            expected = linear_gram(means)
            scale = np.abs(expected).max()
            np.testing.assert_allclose(g.gram[j], expected, rtol=0, atol=1e-11 * scale,
                                       err_msg=name)
            assert (g.gram[j] == g.gram[j].T).all()
            single = load_group(files["averaged"], kept, "net", "1", gram=True)
            assert (single.gram[j] == g.gram[j]).all()  # bit-identical on every read


def test_single_image_reads_the_stored_correlation(files: dict[str, Path]) -> None:
    with h5py.File(files["single"]) as f:
        wnids = f["images/wnid"].asstr()[()].tolist()
        stored = f[f"layers/{f.attrs['layer_names'][0]}/correlation"][()]
    g = load_group(files["single"], wnids[::-1], "net", "1")
    assert (g.similarity[0] == stored[::-1, ::-1]).all()  # bit-identical, no recomputation


def test_prediction_by_wnid_and_label_map(files: dict[str, Path]) -> None:
    with h5py.File(files["single"]) as f:
        wnids = f["images/wnid"].asstr()[()].tolist()
        top1 = f["predictions/top5_wnid"].asstr()[()][:, 0].tolist()
    # ImageNet wnid ids: the prediction maps by id (none of these made-up wnids is predicted)
    g = load_group(files["single"], wnids, "net", "1")
    assert g.no_prediction == "" and (g.predicted == -1).all() and g.predicted_wnid == top1
    # a label map sends each predicted class to a concept (the next image's, by first use)
    label_map: dict[str, str] = {}
    for i, label in enumerate(top1):
        label_map.setdefault(label, wnids[(i + 1) % len(wnids)])
    g = load_group(files["single"], wnids, "net", "1", label_map=label_map)
    assert g.predicted.tolist() == [wnids.index(label_map[t]) for t in top1]
    assert (g.predicted != np.arange(len(wnids))).any()


def test_no_mapping_is_a_skip_with_reason(files: dict[str, Path], tmp_path: Path) -> None:
    g = load_group(files["averaged"], CONCEPTS, "net", "1")
    w = np.corrcoef(np.random.default_rng(0).standard_normal((len(CONCEPTS), 9)))
    summary, tests = one_vs_two_rows("wm", w, CONCEPTS, [g], n_permutations=5, seed=0)
    assert tests == []
    assert len(summary) == 2 * len(g.layers)  # group 1 and "all", per layer
    assert all(r["reason"].startswith("1 vs 2 test skipped: images are averaged")
               and np.isnan(r["accuracy"]) and r["n_tests"] == 0 for r in summary)

    # concept ids that are not wnids: no label of an ImageNet network can be one
    renamed = tmp_path / "renamed.h5"
    shutil.copy(files["single"], renamed)
    with h5py.File(renamed, "r+") as f:
        del f["images/wnid"]
        f.create_dataset("images/wnid", data=np.array(CONCEPTS, dtype=object),
                         dtype=h5py.string_dtype())
        index = f["predictions/top5_index"][()][:, 0]
    g = load_group(renamed, CONCEPTS, "net", "1")
    assert g.no_prediction.startswith("no concept id is an ImageNet wnid")
    # a network whose classes are not ImageNet's: labels are class indices
    with h5py.File(renamed, "r+") as f:
        f["predictions/top5_wnid"][...] = np.full((len(CONCEPTS), 5), "", dtype=object)
    g = load_group(renamed, CONCEPTS, "net", "1")
    assert g.no_prediction.startswith("the network's class labels are not ImageNet wnids")
    g = load_group(renamed, CONCEPTS, "net", "1", label_map={str(index[2]): "c4"})
    assert g.no_prediction == ""
    assert g.predicted[2] == 4 and g.predicted_wnid[2] == str(index[2])
    with h5py.File(renamed, "r+") as f:
        del f["predictions"]
    g = load_group(renamed, CONCEPTS, "net", "1")
    assert g.no_prediction.startswith("the network has no class predictions")
