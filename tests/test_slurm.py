"""`snakemake --profile slurm` on a real SLURM cluster gives the same TSVs as a local run.

Needs a running cluster with accounting (CI starts one with .ci/slurm/up.sh and sets
EMERGENCE_SLURM_TEST=1); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, small_config

pytestmark = pytest.mark.skipif(
    os.environ.get("EMERGENCE_SLURM_TEST") != "1" or shutil.which("sbatch") is None,
    reason="needs a SLURM cluster (CI: .ci/slurm/up.sh and EMERGENCE_SLURM_TEST=1)",
)

# The same thread counts in both runs, so the extraction is bit-identical.
THREADS = ["--set-threads", "activations=2", "word_vectors=1"]


def run(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(path), *THREADS, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=3000,
    )


def tsvs(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*.tsv"))
            if "benchmarks" not in p.parts and "logs" not in p.parts}


@pytest.mark.slow
def test_slurm_profile_matches_local_run(tmp_path: Path) -> None:
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster.mkdir()
    cfg = small_config(tmp_path)
    cfg["results"] = "results"  # relative: paths inside the TSVs are the same in both runs
    cfg["networks"].pop("lite0-untrained")
    cfg["permutations"] = {"n": 16, "shards": 2, "batch_size": 8}
    cfg["one_vs_two"] = {"n_permutations": 8}

    proc = run(local, cfg, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(cluster, cfg, "--profile", "slurm")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "slurm" in proc.stderr.lower()

    a, b = tsvs(local / "results"), tsvs(cluster / "results")
    assert len(a) > 10 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    # Every job went through SLURM and is in its accounting database.
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobName,State", "-S", "now-1hour"],
                          capture_output=True, text=True, check=True).stdout
    assert acct.count("COMPLETED") >= 10
