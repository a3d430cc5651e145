"""`kill -9` in the middle of a job, then a rerun: no temporary file survives, and the
results are byte-identical to an uninterrupted run's.

The interrupted runs use --cores 1 and the reference (the reduced demo, tests/conftest.py)
--cores 2, so this is also the demo's check that the scores and p-values do not depend on
the cores given."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SNAKEMAKE, small_config

# The files a rerun must give byte for byte (they hold no absolute paths).
COMPARED = ["two_vs_two/lite0/minilm-word/scores.tsv",
            "two_vs_two/lite0/minilm-word/significance.tsv",
            "one_vs_two/lite0/minilm-word.tsv",
            "concepts/minilm-word.tsv"]


def temporaries(results: Path) -> list[Path]:
    return [p for p in results.rglob("*") if ".tmp" in p.name or ".spill-" in p.name]


def start(workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--cores", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen[str], seen: callable, timeout: float = 600) -> list[Path]:
    """SIGKILL the whole job tree as soon as ``seen()`` returns paths; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = seen()
        if found:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return found
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the moment to kill it: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the moment to kill the run never came")


@pytest.mark.slow
def test_kill_9_mid_extraction_and_mid_permutation_then_rerun(
        demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    reference, ref_cfg = demo_run
    cfg = small_config(tmp_path)
    cfg["results"] = str(tmp_path / "results")
    cfg["networks"] = {"lite0": ref_cfg["networks"]["lite0"]}
    cfg["word_models"] = {"minilm-word": ref_cfg["word_models"]["minilm-word"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    results = tmp_path / "results"

    # 1. killed while the forward pass of the first group writes its file
    proc = start(tmp_path)
    left = kill_when(proc, lambda: [p for p in temporaries(results / "activations")])
    assert left, "no temporary file at the moment of the kill"

    # 2. killed while a permutation shard is being computed
    subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--configfile",
                    str(tmp_path / "config.yaml"), "--unlock"], check=True, capture_output=True)
    proc = start(tmp_path)
    left = kill_when(proc, lambda: [p for p in temporaries(results / "two_vs_two")
                                    if "shard" in p.name])
    assert left

    # 3. the rerun cleans up and completes
    subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--configfile",
                    str(tmp_path / "config.yaml"), "--unlock"], check=True, capture_output=True)
    proc = start(tmp_path)
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-3000:]
    assert temporaries(results) == []
    for name in COMPARED:
        assert (results / name).read_bytes() == (reference / "results" / name).read_bytes(), name
