"""Fit the workflow's per-rule requests to what a SLURM partition's nodes offer.

A job that asks for more CPUs than any node of its partition has is never started: SLURM
keeps it pending (reason ``PartitionConfig``) and Snakemake waits without a word. Before the
first job is submitted, :func:`plan` compares every job's request with its partition
(queried with ``sinfo`` and ``scontrol``): threads are capped at the most CPUs a node offers
(a job may run on fewer CPUs: no result of this workflow depends on them, since the forward
pass always runs ``extraction.threads`` threads, see the README); memory and GPUs cannot be lowered
safely, so a request no node can meet stops the run with one line naming the rule, the
request and what the partition offers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "Partition",
    "Request",
    "SlurmFitError",
    "default_partition",
    "parse_partition",
    "plan",
    "query_partition",
]


class SlurmFitError(RuntimeError):
    """A job no node of its partition can run, described in one line."""


@dataclass(frozen=True)
class Partition:
    """The most one node of a partition offers (limits of the partition applied)."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    """What one job asks for (``partition`` None: the cluster's default)."""

    rule: str
    threads: int
    mem_mb: float | None = None
    mem_mb_per_cpu: float | None = None
    gpus: int = 0
    partition: str | None = None


def default_partition(sinfo_partitions: str) -> str | None:
    """The default partition from ``sinfo -h -o %P`` (marked with ``*``)."""
    for name in sinfo_partitions.split():
        if name.endswith("*"):
            return name.rstrip("*")
    return None


def _number(text: str) -> int | None:
    m = re.match(r"\d+", text.strip())
    return int(m.group()) if m else None


def _mb(value: float | None) -> str:
    return f"{value:.0f}" if value is not None and float(value).is_integer() else f"{value}"


def _gres_gpus(gres: str) -> int:
    """GPUs in a ``%G`` field: ``gpu:4``, ``gpu:a100:2(S:0-1)``, ``(null)``."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres):
        fields = entry.split("(")[0].split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def parse_partition(name: str, sinfo_nodes: str, scontrol: str = "") -> Partition:
    """A :class:`Partition` from ``sinfo -h -N -p NAME -o '%c|%m|%G'`` (one line per node)
    and, optionally, ``scontrol show partition NAME --oneliner`` (MaxCPUsPerNode,
    MaxMemPerNode)."""
    cpus = mem = gpus = 0
    for line in sinfo_nodes.splitlines():
        if not line.strip():
            continue
        c, m, g = (line.split("|") + ["", "", ""])[:3]
        cpus = max(cpus, _number(c) or 0)
        mem = max(mem, _number(m) or 0)
        gpus = max(gpus, _gres_gpus(g.strip()))
    if cpus == 0:
        raise SlurmFitError(f"SLURM partition '{name}' has no nodes (sinfo -N -p {name})")
    limits = dict(re.findall(r"(\w+)=(\S+)", scontrol))
    for key, value in (("MaxCPUsPerNode", "cpus"), ("MaxMemPerNode", "mem")):
        n = _number(limits.get(key, ""))
        if n is not None:
            if value == "cpus":
                cpus = min(cpus, n)
            else:
                mem = min(mem, n)
    return Partition(name, cpus, mem, gpus)


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True,
                              timeout=60).stdout
    except FileNotFoundError as err:
        raise SlurmFitError(f"'{args[0]}' not found: the SLURM executor needs the SLURM "
                            "client commands on this machine") from err
    except subprocess.CalledProcessError as err:
        msg = " ".join((err.stderr or "").split())
        raise SlurmFitError(f"'{' '.join(args)}' failed: {msg}") from err


def query_partition(name: str | None, run: Callable[[list[str]], str] = _run) -> Partition:
    """Ask SLURM what a node of partition ``name`` (None: the default one) offers."""
    if name is None:
        name = default_partition(run(["sinfo", "-h", "-o", "%P"]))
        if name is None:
            raise SlurmFitError("SLURM has no default partition: set one with "
                                "--default-resources slurm_partition=<partition>")
    nodes = run(["sinfo", "-h", "-N", "-p", name, "-o", "%c|%m|%G"])
    try:
        limits = run(["scontrol", "show", "partition", name, "--oneliner"])
    except SlurmFitError:
        limits = ""
    return parse_partition(name, nodes, limits)


def plan(requests: Iterable[Request],
         query: Callable[[str | None], Partition] = query_partition,
         max_threads: int | None = None) -> tuple[int | None, list[str]]:
    """The thread cap that makes every request fit its partition, and what was capped.

    Returns ``(cap, notes)``: ``cap`` is the most threads a job may use (the smallest node
    CPU count over the partitions in use, and ``max_threads`` when given), None when no
    request exceeds it; ``notes`` are one line per rule whose threads were lowered.
    Raises :class:`SlurmFitError` for memory or GPUs that no node of the partition offers.
    """
    reqs = list(requests)
    parts: dict[str | None, Partition] = {}
    for r in reqs:
        if r.partition not in parts:
            parts[r.partition] = query(r.partition)
    if not reqs:
        return None, []
    cap = min(p.cpus for p in parts.values())
    if max_threads is not None:
        cap = min(cap, max_threads)
    asked: dict[str, int] = {}
    for r in reqs:
        part = parts[r.partition]
        threads = min(r.threads, cap)
        mem = r.mem_mb if r.mem_mb is not None else (
            r.mem_mb_per_cpu * threads if r.mem_mb_per_cpu is not None else None)
        if mem is not None and mem > part.mem_mb:
            what = (f"mem_mb={_mb(r.mem_mb)}" if r.mem_mb is not None
                    else f"mem_mb_per_cpu={_mb(r.mem_mb_per_cpu)} x {threads} threads")
            raise SlurmFitError(
                f"rule {r.rule} asks for {what}, but a node of SLURM partition '{part.name}' "
                f"offers at most {part.mem_mb} MB: lower it (--set-resources "
                f"{r.rule}:mem_mb=N) or choose a partition with bigger nodes "
                "(--default-resources slurm_partition=...)")
        if r.gpus > part.gpus:
            raise SlurmFitError(
                f"rule {r.rule} asks for gpu={r.gpus}, but a node of SLURM partition "
                f"'{part.name}' offers {part.gpus}: choose a GPU partition "
                f"(--set-resources {r.rule}:slurm_partition=...) or set the device to cpu "
                "in the config")
        if r.threads > cap:
            asked[r.rule] = max(asked.get(r.rule, 0), r.threads)
    if not asked:
        return None, []
    offered = ", ".join(f"'{p.name}' {p.cpus}" for p in parts.values())
    notes = [f"threads of rule {rule} capped at {cap} (asked for {n}; CPUs per node: "
             f"{offered})" for rule, n in sorted(asked.items())]
    return cap, notes
