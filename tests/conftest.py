"""Shared test helpers: the reduced demo config and its one end-to-end run per session,
and `kill -9` of a helper process at a chosen moment."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from emergence.sources.common import imagenet_classes

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
N_CONCEPTS = 12

# The fixtures that run the workflow end to end (minutes each): `demo_run` and `study` here,
# `paper_run` (tests/test_paper.py) and `things` (tests/test_things.py). A test that uses one,
# itself or through another fixture, is marked `slow`: `make test-fast` (-m "not slow")
# leaves it out. A test that runs jobs of the workflow without one of them says @slow itself.
END_TO_END = frozenset({"demo_run", "study", "paper_run", "things"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if END_TO_END.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def error_lines(stderr: str) -> list[str]:
    """stderr without blank lines and Snakemake's notice that it applied profiles/default."""
    return [ln for ln in stderr.splitlines()
            if ln.strip() and not ln.startswith("Using workflow specific profile")]


def small_config(tmp: Path) -> dict:
    """A reduced demo: 12 emoji concepts, 64 px, lite0 (real weights) + untrained control,
    MiniLM and a word2vec text file written here that lacks one concept."""
    with open(ROOT / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    lines = (ROOT / "config" / "demo_concepts.tsv").read_text().splitlines()
    (tmp / "concepts.tsv").write_text("\n".join(lines[: N_CONCEPTS + 1]) + "\n")
    words = [ln.split("\t")[1] for ln in lines[1 : N_CONCEPTS + 1]]
    rng = np.random.default_rng(0)
    kept_words = words[1:]  # the first concept is missing from the vector file
    with open(tmp / "vectors.txt", "w") as fh:
        fh.write(f"{len(kept_words)} 20\n")
        for w in kept_words:
            fh.write(w + " " + " ".join(f"{v:.5f}" for v in rng.standard_normal(20)) + "\n")
    lite0 = dict(cfg["networks"]["lite0"], input_size=64)
    control = dict(cfg["networks"]["lite0-untrained"], input_size=64)
    return {
        "seed": 7,
        "results": str(tmp / "results"),
        "images": {"source": "emoji", "concepts": str(tmp / "concepts.tsv"),
                   "styles": ["twemoji", "openmoji"], "render_size": 64},
        "networks": {"lite0": lite0, "lite0-untrained": control},
        "word_models": {
            "minilm-word": cfg["word_models"]["minilm-word"],
            "w2v": {"type": "keyedvectors", "path": str(tmp / "vectors.txt"),
                    "format": "word2vec-text"},
        },
        # Each word model keeps the concepts it covers (the paper's intersection rule is
        # exercised by tests/test_paper.py), so adding a word model leaves the others alone.
        "concepts": {"intersect_word_models": False},
        # raw activations kept (every layer at 64 px): tests/test_measures.py scores them
        # with the literal measures
        "extraction": {"batch_size": 8, "device": "cpu", "keep_raw_max_features": 40000},
        "permutations": {"n": 40, "shards": 3, "batch_size": 8},
        "measures": {"names": ["two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn"],
                     "mutual_knn_k": 3},
        "intervals": {"pairs": 24, "shards": 3, "batch_size": 8},
        "one_vs_two": {"n_permutations": 20},
        "figures": {"word_model": "minilm-word"},
    }


def run_snakemake(tmp: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess[str]:
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp), "--configfile", str(cfg_path), *args],
        capture_output=True, text=True, timeout=1800,
    )


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The reduced demo run once per session (--cores 2); tests read its results."""
    tmp = tmp_path_factory.mktemp("workflow")
    cfg = small_config(tmp)
    proc = run_snakemake(tmp, cfg, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, cfg


def kill_when_ready(script: str) -> int:
    """Run ``script`` in a fresh interpreter, ``kill -9`` it once it prints 'ready'."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "ready", proc.communicate(timeout=60)[1][-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid


# A tiny study in the ImageNet folder layout (tests/test_bad_input.py, tests/test_slurm.py)
N_CLASSES = 8
GREY = 3  # this class's images are one uniform grey: its `pixels` row is constant


def write_study(root: Path) -> dict:
    classes = imagenet_classes()[:N_CLASSES]
    rng = np.random.default_rng(0)
    for c, (wnid, _) in enumerate(classes):
        folder = root / "images" / wnid
        folder.mkdir(parents=True)
        for j in range(2):
            if c == GREY:
                pixels = np.full((24, 24, 3), 128, dtype=np.uint8)
            else:
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{j}.JPEG", quality=95)
    with open(root / "vectors.txt", "w") as fh:
        fh.write(f"{N_CLASSES} 16\n")
        for _, concept in classes:
            vec = rng.standard_normal(16)
            fh.write(concept.replace(" ", "_") + " " + " ".join(f"{v:.6f}" for v in vec) + "\n")
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    net = demo["networks"]["lite0-untrained"]
    net = {k: v for k, v in net.items() if k not in ("label", "control_for")}
    return {
        "seed": 11,
        "results": "results",  # relative paths: a copy of the study is the same study
        "images": {"source": "imagenet-folders", "path": "images",
                   "images_per_concept": 2},
        "networks": {"lite": dict(net, input_size=32)},
        "word_models": {"w2v": {"type": "keyedvectors", "path": "vectors.txt",
                                "format": "word2vec-text"}},
        # each word model on its own: a word model added later leaves w2v's branch alone
        "concepts": {"intersect_word_models": False},
        # 4 forward-pass threads on 2 cores: the SLURM test sees them capped to a node's 2
        "extraction": {"batch_size": 8, "device": "cpu", "threads": 4},
        "permutations": {"n": 16, "shards": 2, "batch_size": 8},
        "intervals": {"pairs": 16, "shards": 1, "batch_size": 8},
        "one_vs_two": {"n_permutations": 8},
    }


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny study run once per session (--cores 2); every path in it is relative."""
    root = tmp_path_factory.mktemp("study")
    cfg = write_study(root)
    proc = run_snakemake(root, cfg, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, cfg
