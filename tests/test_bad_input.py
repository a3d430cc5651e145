"""Bad input through the workflow as a user meets it (issue #11).

One tiny study (ImageNet folder layout, 8 classes x 2 images, an untrained Lite0 at 32 px,
a word2vec text file) runs end to end once; each bad-input case then edits one file or
config key and runs the job it breaks. Every case must end in either

* a non-zero exit whose error names the culprit (file, key or concept) in one line, with no
  partial output and no temporary file left, or
* the documented NaN-with-reason (a layer that cannot be scored).

The package-level cases (messages, API calls, kills) are in tests/test_messages.py and
tests/test_bad_statistics.py; config keys in tests/test_workflow.py.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emergence.sources.common import imagenet_classes
from tests.conftest import GREY, N_CLASSES, error_lines, read_tsv, run_snakemake


def leftovers(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if ".tmp" in p.name or ".spill-" in p.name)


@pytest.mark.slow
def test_constant_pixels_are_nan_with_a_reason_everywhere(study: tuple[Path, dict]) -> None:
    """The issue's worst case: a uniform grey image scored 0.0 (exit 0) and broke the
    permutation job. Now the layer is NaN with the reason, and everything else runs."""
    root, _ = study
    res = root / "results"
    wnid, concept = imagenet_classes()[GREY]
    scores = read_tsv(res / "two_vs_two" / "lite" / "w2v" / "scores.tsv")
    pixels = [r for r in scores if r["layer"] == "pixels"]
    assert len(pixels) == 2
    for r in pixels:
        assert r["two_vs_two"] == "nan" and r["rsa"] == "nan"
        assert wnid in r["reason"] and concept in r["reason"] and "constant" in r["reason"]
    others = [r for r in scores if r["layer"] != "pixels"]
    assert others and all(r["reason"] == "" and 0 <= float(r["two_vs_two"]) <= 1
                          for r in others)
    sig = read_tsv(res / "two_vs_two" / "lite" / "w2v" / "significance.tsv")
    for r in sig:
        if r["layer"] == "pixels":
            assert (r["p_value"], r["p_value_fwe"], r["significant"]) == ("nan", "nan", "false")
            assert concept in r["reason"]
        else:
            assert not math.isnan(float(r["p_value"])) and r["reason"] == ""
    ones = read_tsv(res / "one_vs_two" / "lite" / "w2v.tsv")
    assert all(r["accuracy"] == "nan" for r in ones if r["layer"] == "pixels")
    assert leftovers(res) == []


def write_vectors(path: Path, value: str | None, constant: bool = False) -> None:
    """vectors.txt with the second concept's vector broken: one entry ``value`` or all equal."""
    rng = np.random.default_rng(5)
    lines = [f"{N_CLASSES} 16"]
    for c, (_, concept) in enumerate(imagenet_classes()[:N_CLASSES]):
        vec = [f"{v:.6f}" for v in rng.standard_normal(16)]
        if c == 1:
            vec = ["0.5"] * 16 if constant else [value, *vec[1:]]
        lines.append(" ".join([concept.replace(" ", "_"), *vec]))
    path.write_text("\n".join(lines) + "\n")


BROKEN_JPEG = imagenet_classes()[5][0]
NOT_AN_IMAGE = imagenet_classes()[6][0]
A = imagenet_classes()[1][1]  # the concept whose vector is broken
NULL = "two_vs_two/lite/w2v/null"
# (id, the output that must not appear, what the error line must contain)
CASES = [
    ("nan-vector", "words/nan/vectors.h5", ["non-finite", f"'{A}'", "nan.txt"]),
    ("inf-vector", "words/inf/vectors.h5", ["non-finite", f"'{A}'", "inf.txt"]),
    ("constant-vector", "words/constant/vectors.h5", ["constant", f"'{A}'", "constant.txt"]),
    ("truncated-jpeg", "activations/images/1.h5",
     [f"{BROKEN_JPEG}_0.JPEG", "cannot read image"]),
    ("not-an-image", "activations/images/2.h5", [f"{NOT_AN_IMAGE}_1.JPEG", "not an image"]),
    ("garbage-checkpoint", "activations/checkpoint/1.h5",
     ["weights.pth", "not a PyTorch checkpoint"]),
    ("truncated-shard", "two_vs_two/lite/w2v/significance.tsv",
     ["shard-1-of-2.h5", "delete it and rerun"]),
    ("truncated-activations", "one_vs_two/lite/w2v.tsv", ["2.h5", "delete it and rerun"]),
]


@pytest.fixture(scope="module")
def broken(study: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[list[str], Path]:
    """A copy of the finished study with every breakage below, and one --keep-going run
    of the jobs each one breaks (independent jobs: each error shows on its own)."""
    src, cfg = study
    root = tmp_path_factory.mktemp("broken") / "study"
    shutil.copytree(src, root, symlinks=True)
    cfg = copy.deepcopy(cfg)
    res = root / "results"
    # word vectors: three new word models, each with one bad vector
    for name, value, constant in (("nan", "nan", False), ("inf", "1e39", False),
                                  ("constant", None, True)):
        write_vectors(root / f"{name}.txt", value, constant)
        cfg["word_models"][name] = {"type": "keyedvectors", "path": f"{name}.txt"}
    # images: two new networks, one on broken images, one with a garbage checkpoint
    jpeg = root / "images" / BROKEN_JPEG / f"{BROKEN_JPEG}_0.JPEG"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    (root / "images" / NOT_AN_IMAGE / f"{NOT_AN_IMAGE}_1.JPEG").write_text("not a JPEG\n")
    cfg["networks"]["images"] = dict(cfg["networks"]["lite"])
    (root / "weights.pth").write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    ckpt = {k: v for k, v in cfg["networks"]["lite"].items() if k not in ("pretrained", "seed")}
    cfg["networks"]["checkpoint"] = dict(ckpt, checkpoint="weights.pth")
    # intermediates: a truncated shard and activations file (mtimes kept: only the jobs
    # that read them run again)
    for rel, keep in ((f"{NULL}/shard-1-of-2.h5", 1000), ("activations/lite/2.h5", 4096)):
        path = res / rel
        stat = path.stat()
        path.write_bytes(path.read_bytes()[:keep])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for rel in ("two_vs_two/lite/w2v/significance.tsv", "one_vs_two/lite/w2v.tsv"):
        (res / rel).unlink()
    targets = [f"results/{c[1]}" for c in CASES]
    # The broken images change the images rule's `listing` param, which would rerun it and
    # every job after it (tests/test_bad_input_images.py): without the params trigger here,
    # each breakage meets only the job it breaks.
    proc = run_snakemake(root, cfg, "--cores", "2", "--keep-going", *targets,
                         "--rerun-triggers", "mtime", "input", "software-env", "code")
    assert proc.returncode != 0, "the bad input was accepted"
    return error_lines(proc.stderr), res


@pytest.mark.slow
@pytest.mark.parametrize(("absent", "needles"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_stops_its_job_with_one_line_and_leaves_nothing(
        broken: tuple[list[str], Path], absent: str, needles: list[str]) -> None:
    lines, results = broken
    assert [ln for ln in lines if all(n in ln for n in needles)], "\n".join(lines[-40:])
    assert not (results / absent).exists()
    assert leftovers(results) == []
