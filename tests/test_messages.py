"""Bad input and faults get one line naming the culprit, and leave nothing behind.

Issue #11, items 8 (messages that did not name the file, key or concept) and 9
(temporaries left by a killed job). Each test reproduces the defect with a real file
or a real ``kill -9``.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFile

from emergence.analysis import null_shard
from emergence.concepts import (
    MIN_CONCEPTS,
    check_enough_concepts,
    select_concepts,
    word_similarity_matrix,
)
from emergence.config import ConfigError, check_config
from emergence.extraction.preprocess import load_image
from emergence.formats.activations import GroupSimilarities, load_group
from emergence.formats.nulls import read_nulls
from emergence.formats.vectors import read_word_vectors
from emergence.formats.word_matrix import read_word_matrix, write_word_matrix
from emergence.io import atomic_h5, remove_stale_temporaries, scratch_dir, temporaries_of
from emergence.ownership import HOST
from emergence.runner import start
from emergence.sources.common import ManifestRow
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model
from emergence.sources.words.spec import WordModelSpec, embed_concepts
from emergence.stats.similarity import similarity_matrix
from tests.conftest import kill_when_ready

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "cannot read image (image file is truncated"),
        ("text", "not an image file PIL can read"),
        ("empty", "not an image file PIL can read"),
        ("missing", "image file not found"),
    ],
)
def test_unreadable_image_names_the_file(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / f"{kind}.jpg"
    rng = np.random.default_rng(0)
    if kind == "truncated":
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        truncate(path)
    elif kind == "text":
        path.write_text("not a picture\n")
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(OSError) as info:
        load_image(path)
    text = one_line(info)
    assert text.startswith(f"{path}: ") and message in text
    if kind != "missing":
        assert text.endswith("replace or remove the file")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never padded silently


# --------------------------------------------------------------------------------------
# HDF5 intermediates
# --------------------------------------------------------------------------------------


def small_groups(k: int = 6, n_layers: int = 2) -> tuple[np.ndarray, list[GroupSimilarities]]:
    rng = np.random.default_rng(1)
    w_mat = similarity_matrix(rng.standard_normal((k, 9)))
    sims = np.stack([similarity_matrix(rng.standard_normal((k, 11))) for _ in range(n_layers)])
    group = GroupSimilarities("net", "model", "g1", [f"l{j}" for j in range(n_layers)],
                              ["m"] * n_layers, [11] * n_layers, sims,
                              np.full(k, -1), [""] * k, [f"{i}.png" for i in range(k)])
    return w_mat, [group]


def write_shard(path: Path, start_: int = 0, stop: int = 8) -> None:
    w_mat, groups = small_groups()
    null_shard(path, "w2v", w_mat, groups, seed=3, start=start_, stop=stop, batch_size=4,
               device="cpu", progress=False)


def test_truncated_or_incomplete_shard_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "shard-0-of-2.h5"
    bad = tmp_path / "shard-1-of-2.h5"
    write_shard(good, 0, 8)
    write_shard(bad, 8, 16)
    assert read_nulls([good, bad])["g1"]["two_vs_two"].shape == (16, 2)
    truncate(bad)
    with pytest.raises(OSError) as info:
        read_nulls([good, bad])
    text = one_line(info)
    assert text.startswith(f"{bad}: cannot read permutation shard (")
    assert text.endswith("delete it and rerun (Snakemake will recreate it)")

    with atomic_h5(bad, {"start": 8, "stop": 16}):  # opens, but holds no groups
        pass
    with pytest.raises(ValueError) as info:
        read_nulls([good, bad])
    text = one_line(info)
    assert text.startswith(f"{bad}: permutation shard is incomplete") and "'groups'" in text
    assert text.endswith("delete it and rerun (Snakemake will recreate it)")


def test_truncated_activations_and_word_files_name_the_file(tmp_path: Path) -> None:
    acts = tmp_path / "activations.h5"
    with atomic_h5(acts, {"layer_names": ["l0"]}) as f:
        f.create_dataset("images/wnid", data=np.array(["n1", "n2"], dtype=object),
                         dtype=h5py.string_dtype())
        f.create_dataset("pad", data=np.zeros(4096))
    truncate(acts)
    with pytest.raises(OSError) as info:
        load_group(acts, ["n1", "n2"], "net", "g1")
    assert one_line(info).startswith(f"{acts}: cannot read activations file (")

    kept = [(f"n{i}", f"c{i}") for i in range(5)]
    vectors = np.random.default_rng(0).standard_normal((5, 7))
    matrix = tmp_path / "similarity.h5"
    w_mat = word_similarity_matrix("w2v", [w for w, _ in kept], vectors, kept)
    write_word_matrix(matrix, "w2v", {}, kept, w_mat, vectors.shape[1], w_mat)
    assert read_word_matrix(matrix)[0] == [w for w, _ in kept]
    truncate(matrix)
    with pytest.raises(OSError) as info:
        read_word_matrix(matrix)
    assert one_line(info).startswith(f"{matrix}: cannot read word-matrix file (")

    vec = tmp_path / "vectors.h5"
    vec.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(OSError) as info:
        read_word_vectors(vec)
    assert one_line(info).startswith(f"{vec}: cannot read word-vectors file (")


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("garbage.pth", b"this is not a checkpoint\nsecond line\n", "IndexError: "),
        ("pickle.pth", pickle.dumps(PurePosixPath("x"), protocol=2),
         "UnpicklingError: Unsupported global: GLOBAL pathlib.PurePosixPath was not"),
        ("empty.pth", b"", "EOFError: the file is empty or cut short"),
        ("cut.pth", None, "RuntimeError: PytorchStreamReader failed reading zip archive"),
        ("garbage.safetensors", b"garbage", "SafetensorError: "),
    ],
)
def test_unreadable_checkpoint_names_the_file(tmp_path: Path, name: str, content: bytes | None,
                                              detail: str) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(timm_state(), path)
        truncate(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_model(NetworkSpec("net", "test_efficientnet", checkpoint=str(path)))
    text = one_line(info)
    kind = "safetensors file" if name.endswith(".safetensors") else "PyTorch checkpoint"
    assert text.startswith(f"{path}: not a {kind} ({detail}")
    assert "weights_only" not in text and len(text) < 300


@pytest.mark.parametrize(
    ("content", "found"),
    [([torch.ones(1)], "list"), (torch.ones(2), "Tensor"),
     ({"weights": {"w": torch.ones(1)}, "epoch": 3}, "dict"),
     ({"model": [torch.ones(1)]}, "list")],
)
def test_checkpoint_that_is_not_a_state_dict_says_so(tmp_path: Path, content: object,
                                                     found: str) -> None:
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(ValueError) as info:
        load_model(NetworkSpec("net", "test_efficientnet", checkpoint=str(path)))
    assert one_line(info) == (f"{path}: not a state dict of tensors (found {found}); "
                              "save model.state_dict()")


def test_training_checkpoint_loads_its_state_dict_not_the_ema(tmp_path: Path) -> None:
    state = timm_state()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "train.pth"
    torch.save({"state_dict": state, "state_dict_ema": ema, "epoch": 9}, path)
    loaded = load_model(NetworkSpec("net", "test_efficientnet", checkpoint=str(path)))
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())


def timm_state() -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model("test_efficientnet").state_dict()


# --------------------------------------------------------------------------------------
# word vectors
# --------------------------------------------------------------------------------------

CONCEPTS = [("n01440764", "tench"), ("n99999991", "cat"), ("n99999992", "dog"),
            ("n99999993", "fox"), ("n99999994", "owl")]


def vector_file(path: Path, bad: dict[str, str]) -> Path:
    rng = np.random.default_rng(0)
    lines = [f"{len(CONCEPTS)} 5"]
    for _, word in CONCEPTS:
        values = bad.get(word) or " ".join(f"{v:.4f}" for v in rng.standard_normal(5))
        lines.append(f"{word} {values}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"cat": "0.1 nan 0.3 0.4 0.5"}, "non-finite values (nan or inf; values beyond +-3.4e38 "
         "overflow float32 to inf) in the vector of 'cat' (n99999991, token 'cat')"),
        ({"dog": "0.1 0.2 inf 0.4 0.5"}, "non-finite values (nan or inf;"),
        ({"fox": "0.1 0.2 0.3 1e39 0.5"}, "in the vector of 'fox' (n99999993, token 'fox')"),
        ({"owl": "0.25 0.25 0.25 0.25 0.25"},
         "a constant vector (all values equal, correlation undefined) for 'owl' (n99999994"),
        ({"cat": "nan nan nan nan nan", "owl": "1 1 1 1 1"},
         "in the vector of 'cat' (n99999991, token 'cat'); a constant vector"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39
def test_bad_word_vector_names_the_concept(tmp_path: Path, bad: dict[str, str],
                                           message: str) -> None:
    path = vector_file(tmp_path / "vectors.txt", bad)
    with pytest.raises(ValueError) as info:
        embed_concepts(WordModelSpec.from_params({"type": "keyedvectors", "path": str(path)}),
                       CONCEPTS)
    text = one_line(info)
    assert text.startswith(f"{path}: ") and message in text, text
    assert text.endswith("fix or remove these vectors")


@pytest.mark.parametrize(("value", "what"), [(np.nan, "non-finite"), (np.inf, "non-finite"),
                                              (None, "constant")])
def test_word_matrix_names_the_bad_concept(tmp_path: Path, value: float | None,
                                           what: str) -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 6))
    if value is None:
        vectors[2] = 0.5
    else:
        vectors[2, 3] = value
    kept = [(w, c) for w, c in CONCEPTS]
    with pytest.raises(ValueError) as info:
        word_similarity_matrix("w2v", [w for w, _ in kept], vectors, kept)
    text = one_line(info)
    assert text.startswith(f"word model w2v: the vector of 'dog' (n99999992): {what}")
    assert "rows [" not in text
    assert list(tmp_path.iterdir()) == []  # no output, no temporary


def test_too_few_concepts_points_to_the_coverage_file(tmp_path: Path) -> None:
    groups = ["1", "2"]
    manifest = [ManifestRow(g, w, c, f"{g}/{w}.png", "t") for w, c in CONCEPTS[:5] for g in groups]
    manifest += [ManifestRow("1", "n99999995", "emu", "1/emu.png", "t")]  # no image in group 2
    found = {"n01440764": True, "n99999991": True, "n99999992": True, "n99999993": False,
             "n99999994": False, "n99999995": True}
    cov = [{"wnid": w, "found": "true" if f else "false",
            "reason": "" if f else "no lemma in vocabulary", "lemma": "", "token": "",
            "how": ""} for w, f in found.items()]
    rows = select_concepts(manifest, groups, "w2v", {"w2v": cov}, intersect=False)
    coverage_tsv = tmp_path / "results" / "words" / "w2v" / "coverage.tsv"
    with pytest.raises(ValueError) as info:
        check_enough_concepts(rows, "w2v", coverage_tsv)
    assert one_line(info) == (
        f"word model w2v: only 3 of 6 candidate concepts kept, the 2 vs 2 test needs at least "
        f"{MIN_CONCEPTS} (dropped: 2 not in w2v, 1 no image in group 2); the reason per concept "
        f"is in {coverage_tsv}")
    for row in rows[3:5]:
        row["kept"] = True
    check_enough_concepts(rows, "w2v", coverage_tsv)  # five (MIN_CONCEPTS) are enough

    with pytest.raises(ValueError) as info:
        word_similarity_matrix("w2v", ["a", "b", "c"], np.eye(3),
                               [("a", "x"), ("b", "y"), ("c", "z")])
    assert "concepts TSV" not in one_line(info)
    assert not (tmp_path / "w.h5").exists()


# --------------------------------------------------------------------------------------
# config keys
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["word_models"].update(x={"type": "glove", "path": "v.txt"}),
         "config key 'word_models.x.type': unknown type 'glove'; use one of keyedvectors, "
         "gensim-data, sentence-transformer"),
        (lambda c: c["word_models"].update(x={"type": "gensim-data"}),
         "config key 'word_models.x': 'name' is a required property"),
        (lambda c: c["word_models"].update(x={"type": "sentence-transformer", "model": "m",
                                              "path": "p"}),
         "config key 'word_models.x': Additional properties are not allowed ('path'"),
        (lambda c: c["word_models"].update(x={"type": "keyedvectors", "path": "p",
                                              "multiword": "all"}),
         "config key 'word_models.x.multiword': 'all' is not one of"),
        (lambda c: c["networks"]["lite0"].update(
            layers=["pixels", {"module": "bn1", "name": "a/b"}]),
         "config key 'networks.lite0.layers.1.name': 'a/b' does not match"),
        (lambda c: c["networks"]["lite0"].update(
            layers=[{"module": "blocks.*", "name": "stage {i}"}]),
         "config key 'networks.lite0.layers.0.name': 'stage {i}' does not match"),
    ],
)
def test_config_error_names_the_key(demo_config: dict, edit, message: str) -> None:
    cfg = copy.deepcopy(demo_config)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        check_config(cfg, SCHEMA)
    assert one_line(info).startswith(message), str(info.value)


def test_layer_name_templates_pass_the_schema(demo_config: dict) -> None:
    cfg = copy.deepcopy(demo_config)
    cfg["networks"]["lite0"]["layers"] = [
        "pixels", {"module": "blocks.*", "name": "s{i}_{module}"},
        {"module": "bn1", "name": "a.b-c"}]
    check_config(cfg, SCHEMA)


@pytest.mark.parametrize(
    ("entry", "name"),
    [({"module": "bn1", "name": "a/b"}, "a/b"),
     ({"module": "blocks.*", "name": "stage/{i}"}, "stage/1"),
     ({"module": "", "name": "in put"}, "in put"),
     ({"module": "bn1", "name": ".."}, ".."),
     ({"module": "blocks.*", "name": "{module}/x"}, "blocks.0/x")],
)
def test_layer_names_that_would_nest_hdf5_groups_are_refused(entry: dict, name: str) -> None:
    import timm

    net = timm.create_model("test_efficientnet")
    with pytest.raises(ValueError) as info:
        resolve_layers(net, ["pixels", entry])
    text = one_line(info)
    assert text.startswith(f"layer name {name!r} (")
    assert "use letters, digits, '_', '.' and '-' only" in text
    assert [s.name for s in resolve_layers(net, [{"module": "blocks.*", "name": "b.{i}-x_"}])] \
        == [f"b.{i}-x_" for i in range(1, 6)]


# --------------------------------------------------------------------------------------
# temporaries (item 9)
# --------------------------------------------------------------------------------------


def test_stale_temporaries_of_the_outputs_only_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "shard-0-of-3.h5"
    other = tmp_path / "shard-1-of-3.h5"
    dead = 2**31 - 1  # no process has this PID
    stale = [tmp_path / f".shard-0-of-3.h5.tmp-{HOST}-{dead}",
             tmp_path / f".shard-0-of-3.h5.spill-{HOST}-{dead}-x1"]
    stale[0].write_bytes(b"partial")
    stale[1].mkdir()
    (stale[1] / "0.f32").write_bytes(b"x" * 10)
    keep = [out, other, tmp_path / ".shard-1-of-3.h5.tmp-123", tmp_path / ".shard-0-of-3.h5x",
            tmp_path / "shard-0-of-3.h5.tmp-5"]
    for p in keep:
        p.write_bytes(b"keep")
    assert temporaries_of(out) == sorted(stale)
    assert sorted(remove_stale_temporaries([out, tmp_path / "missing" / "x.tsv"])) \
        == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    with scratch_dir(out) as scratch:  # the one naming scheme
        assert scratch.parent == tmp_path and scratch.name.startswith(".shard-0-of-3.h5.spill-")
        assert temporaries_of(out) == [scratch]
    assert temporaries_of(out) == []


KILLED_SHARD = """
import sys, time
import emergence.analysis as analysis
sys.path.insert(0, {tests!r})
from test_messages import small_groups

def stuck(*args, **kwargs):
    print("ready", flush=True)
    time.sleep(600)

analysis.permutation_null = stuck
w_mat, groups = small_groups()
analysis.null_shard({out!r}, "w2v", w_mat, groups, seed=3, start=0, stop=8, batch_size=4,
                    device="cpu", progress=False)
"""


def test_kill_9_mid_permutation_then_rerun(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "null" / "shard-0-of-3.h5"
    pid = kill_when_ready(KILLED_SHARD.format(tests=str(ROOT / "tests"), out=str(out)))
    left = tmp_path / "null" / f".shard-0-of-3.h5.tmp-{HOST}-{pid}"
    assert sorted((tmp_path / "null").iterdir()) == [left]  # the defect: left forever

    # The rerun: the job's runner.start removes it, then the shard is written afresh.
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    start(SimpleNamespace(output=[str(out)], threads=torch.get_num_threads(),
                          rule="permutations", wildcards={"shard": "0"}))
    assert not left.exists()
    assert f"removed {left}, left by an earlier run of this job" in caplog.text
    write_shard(out)
    reference = tmp_path / "reference.h5"
    write_shard(reference)
    assert sorted((tmp_path / "null").iterdir()) == [out]
    with h5py.File(out) as a, h5py.File(reference) as b:
        for key in ("two_vs_two", "rsa", "index"):
            assert np.array_equal(a[f"groups/g1/{key}"][()], b[f"groups/g1/{key}"][()])


FAILING_JOB = """
from types import SimpleNamespace
from emergence.runner import start

smk = SimpleNamespace(log=[{log!r}], output=[], threads=1, rule="word_matrix",
                      wildcards={{"word_model": "w2v"}})
start(smk)
raise ValueError("word model w2v: only 3 of 12 candidate concepts kept")
"""


def test_job_error_is_one_line_in_snakemakes_output_and_traced_in_the_log(
        tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", FAILING_JOB.format(log=str(log))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "word_matrix (word_model=w2v): ValueError: word model w2v: only 3 of 12 candidate "
        f"concepts kept (traceback: {log})"]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert text.rstrip().endswith("ValueError: word model w2v: only 3 of 12 candidate concepts "
                                  "kept")
