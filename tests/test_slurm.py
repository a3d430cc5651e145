"""SLURM: requests fitted to the partition (unit tests), and `snakemake --profile slurm`, typed
verbatim, on a real one-node cluster gives the same TSVs as a local run.

The cluster test needs a running cluster with accounting (CI starts one with
.ci/slurm/up.sh and sets EMERGENCE_SLURM_TEST=1); it is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emergence.slurm import (
    Partition,
    Request,
    SlurmFitError,
    default_partition,
    parse_partition,
    plan,
    query_partition,
)
from tests.conftest import ROOT, small_config

ON_CLUSTER = os.environ.get("EMERGENCE_SLURM_TEST") == "1" and shutil.which("sbatch") is not None
needs_cluster = pytest.mark.skipif(
    not ON_CLUSTER, reason="needs a SLURM cluster (CI: .ci/slurm/up.sh and EMERGENCE_SLURM_TEST=1)")

SMALL = Partition("debug", cpus=2, mem_mb=23081, gpus=0)


def test_default_partition() -> None:
    assert default_partition("debug*\nbig\n") == "debug"
    assert default_partition("gpu\nbatch*") == "batch"
    assert default_partition("gpu\nbatch") is None


def test_parse_partition_takes_the_biggest_node_within_the_partition_limits() -> None:
    nodes = "2|23081|(null)\n8|64000|gpu:a100:2(S:0-1)\n4|32000|gpu:1,tmpdisk:100\n"
    assert parse_partition("p", nodes) == Partition("p", 8, 64000, 2)
    limits = "PartitionName=p MaxCPUsPerNode=6 MaxMemPerNode=UNLIMITED State=UP"
    assert parse_partition("p", nodes, limits) == Partition("p", 6, 64000, 2)
    with pytest.raises(SlurmFitError, match="SLURM partition 'p' has no nodes"):
        parse_partition("p", "\n")


def test_query_partition_asks_sinfo_for_the_default_partition() -> None:
    calls: list[list[str]] = []
    answers = {"%P": "debug*\n", "%c|%m|%G": "2|23081|(null)\n"}

    def run(args: list[str]) -> str:
        calls.append(args)
        if args[0] == "scontrol":
            raise SlurmFitError("no scontrol")
        return answers[args[-1]]

    assert query_partition(None, run) == SMALL
    assert calls[1] == ["sinfo", "-h", "-N", "-p", "debug", "-o", "%c|%m|%G"]


def test_plan_caps_threads_at_the_cpus_of_a_node() -> None:
    reqs = [Request("activations", 4, mem_mb=8000), Request("activations", 4, mem_mb=8000),
            Request("word_vectors", 2, mem_mb=8000), Request("permutations", 1)]
    cap, notes = plan(reqs, lambda name: SMALL)
    assert cap == 2
    assert notes == ["threads of rule activations capped at 2 (asked for 4; CPUs per node: "
                     "'debug' 2)"]
    assert plan(reqs[2:], lambda name: SMALL) == (None, [])  # everything fits: no cap
    assert plan(reqs, lambda name: SMALL, max_threads=1)[0] == 1  # --max-threads stands


def test_plan_stops_on_memory_or_gpus_no_node_has() -> None:
    with pytest.raises(SlurmFitError, match=(
            r"^rule activations asks for mem_mb=32000, but a node of SLURM partition 'debug' "
            r"offers at most 23081 MB: lower it \(--set-resources activations:mem_mb=N\)")):
        plan([Request("activations", 4, mem_mb=32000)], lambda name: SMALL)
    with pytest.raises(SlurmFitError, match="mem_mb_per_cpu=16000 x 2 threads"):
        plan([Request("activations", 4, mem_mb_per_cpu=16000)], lambda name: SMALL)
    with pytest.raises(SlurmFitError, match="asks for mem_mb=100000000, but"):
        plan([Request("images", 1, mem_mb=1e8)], lambda name: SMALL)
    with pytest.raises(SlurmFitError, match="asks for mem_mb=23081.5, but"):
        plan([Request("images", 1, mem_mb=23081.5)], lambda name: SMALL)
    with pytest.raises(SlurmFitError, match=(
            r"^rule permutations asks for gpu=1, but a node of SLURM partition 'debug' "
            r"offers 0: choose a GPU partition")):
        plan([Request("permutations", 1, gpus=1)], lambda name: SMALL)
    big = {"gpu": Partition("gpu", 16, 128000, 4), None: SMALL}
    cap, _ = plan([Request("permutations", 1, gpus=1, partition="gpu"),
                   Request("activations", 4)], big.__getitem__)
    assert cap == 2  # one cap for all jobs: the smallest node over the partitions in use


def run(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=3000,
    )


def tsvs(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*.tsv"))
            if "benchmarks" not in p.parts and "logs" not in p.parts}


@needs_cluster
@pytest.mark.slow
def test_slurm_profile_verbatim_matches_local_run(study: tuple[Path, dict],
                                                  tmp_path: Path) -> None:
    """`snakemake --profile slurm`, typed as is, on the tiny study (tests/conftest.py), whose
    activations ask for 4 threads (extraction.threads) on a cluster of 2-CPU nodes: the
    requests are capped to what a node has, and every TSV is byte-identical to the study's
    local `--cores 2` run (Snakemake scales the job down to 2 CPUs there too; the forward pass
    runs 4 threads in both)."""
    local, cfg = study
    cluster = tmp_path / "slurm"
    cluster.mkdir()
    shutil.copytree(local / "images", cluster / "images")
    shutil.copy(local / "vectors.txt", cluster / "vectors.txt")
    proc = run(cluster, cfg, "--profile", "slurm")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "slurm" in proc.stderr.lower()
    assert "semantic-emergence: threads of rule activations capped at 2 (asked for 4" in (
        proc.stderr), proc.stderr[-3000:]

    a, b = tsvs(local / "results"), tsvs(cluster / "results")
    assert len(a) >= 10 and a.keys() == b.keys()  # every TSV of the study, manifest included
    assert [k for k in a if a[k] != b[k]] == []
    # Every job went through SLURM and is in its accounting database, with the capped CPUs.
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobName,State,AllocCPUS",
                           "-S", "now-1hour"], capture_output=True, text=True, check=True).stdout
    assert acct.count("COMPLETED") >= 10
    assert {int(line.split("|")[2]) for line in acct.splitlines() if "COMPLETED" in line} <= {1, 2}


@needs_cluster
def test_slurm_memory_no_node_has_stops_with_one_line(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    proc = run(tmp_path, cfg, "--profile", "slurm", "--set-resources",
               "images:mem_mb=100000000")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("semantic-emergence:")]
    assert len(lines) == 1 and lines[0].startswith(
        "semantic-emergence: rule images asks for mem_mb=100000000, but a node of SLURM "
        "partition 'debug' offers at most "), proc.stderr[-3000:]
    assert not (tmp_path / "results" / "images").exists()


def job_rules() -> set[str]:
    """The rules that run a job (a script, shell or run block), from the rule files."""
    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.MULTILINE)[1:]:
            if re.search(r"^    (script|shell|run):", block, re.MULTILINE):
                rules.add(re.match(r"rule (\w+):", block).group(1))
    return rules


def test_the_workflow_profile_sizes_every_rule_that_runs_a_job() -> None:
    """Without an entry a job falls back to slurm/config.yaml's default-resources (60 min,
    4,000 MB): the (then) bootstrap shards got half the permutations' run time that way."""
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    sized = profile["set-resources"]
    rules = job_rules()
    assert {"images", "activations", "jackknife", "comparisons", "overview"} <= rules
    assert rules == set(sized), (rules - set(sized), set(sized) - rules)
    for rule, resources in sized.items():
        assert resources["mem_mb"] > 0 and resources["runtime"] > 0, rule
    assert sized["jackknife"] == sized["permutations"]
    assert profile["set-threads"]["jackknife"] == profile["set-threads"]["permutations"] == 1


def dry_run_submissions(stdout: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """From `snakemake -n` output: the rules of the jobs submitted alone, and each group job
    as (group, the rules of its jobs)."""
    alone: list[str] = []
    groups: list[tuple[str, list[str]]] = []
    for line in stdout.splitlines():
        if (m := re.search(r"Group job (\w+) \(jobs in lexicogr\. order\):$", line)):
            groups.append((m.group(1), []))
        elif (m := re.match(r"rule (\w+):$", line)):
            alone.append(m.group(1))
        elif (m := re.match(r" {4}rule (\w+):$", line)):
            groups[-1][1].append(m.group(1))
    return alone, groups


def test_the_slurm_profile_groups_the_small_jobs(tmp_path: Path) -> None:
    """`snakemake -n --profile slurm` (no cluster needed) on the tiny demo: every job of a
    grouped rule runs in a group job of at most `group-components` jobs of its group's rules
    (one CPU each: the group asks for that many CPUs, which must fit a node), the rest alone;
    fewer submissions than jobs."""
    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    groups, components = profile["groups"], profile["group-components"]
    assert set(groups) <= job_rules(), set(groups) - job_rules()  # no rule name mistyped
    assert set(groups.values()) == set(components) and max(components.values()) <= 2
    threads = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())[
        "set-threads"]
    for rule in groups:  # a grouped job asks for one CPU (the group sums them)
        assert "threads:" not in _rule_block(rule) and rule not in threads, rule

    proc = run(tmp_path, small_config(tmp_path), "-n", "--profile", "slurm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone, group_jobs = dry_run_submissions(proc.stdout)
    total = int(re.search(r"^total\s+(\d+)$", proc.stdout, re.MULTILINE).group(1))
    assert len(alone) + sum(len(jobs) for _, jobs in group_jobs) == total
    assert not set(alone) & set(groups), set(alone) & set(groups)
    for group, jobs in group_jobs:
        assert 1 <= len(jobs) <= components[group], (group, jobs)
        assert {groups[rule] for rule in jobs} == {group}, (group, jobs)
    assert {g for g, _ in group_jobs} == set(components)
    # at most one group job per group is not full (the last chunk of its components)
    assert sum(len(jobs) < components[g] for g, jobs in group_jobs) <= len(components)
    submitted = len([r for r in alone if r != "default"]) + len(group_jobs)  # default: no job
    assert submitted < total - 1, (submitted, total)  # here 45 submissions for 58 jobs


def _rule_block(rule: str) -> str:
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.MULTILINE)[1:]:
            if block.startswith(f"rule {rule}:"):
                return block
    raise AssertionError(f"no rule {rule}")
