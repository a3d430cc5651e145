"""What the resampling steps will take, known before any job: memory, disk and time.

``permutations.n`` permutations and the jackknife's 1 + k + ``intervals.pairs`` samples
(:mod:`emergence.stats.jackknife`) are drawn in ``shards`` jobs per network x word model;
each job holds its shard's values of one group (every measure, companion and layer,
float64) while it writes them, and every shard file stays on disk for the aggregation
(which reads the null block by block: :mod:`emergence.tables.null_summary`). :func:`estimate` sizes
this from what the DAG knows:

* layers per network: the config's entries (a glob such as ``blocks.*`` counts once: at
  least one layer), or the layer names of activation files an earlier run wrote;
* k, the concepts of a word model: the word matrix an earlier run wrote, else an upper
  bound from the image source (the emoji table's rows, the 1,000 ImageNet classes, the
  concept table's rows or the concept folders, ``images.max_concepts``);
* groups, measures, n (pairs), shards and ``batch_size`` exactly.

:func:`check` refuses (:class:`~emergence.errors.ConfigError`, one line naming the key and
the figure) a shard job that needs more memory than this machine has (local runs) or
shard files that do not fit on the disk of the results folder, with lower bounds (k = 5,
the layers surely there), so that it never refuses what could run; and warns above
:data:`WARN_JOB_FRACTION` of the memory, :data:`WARN_DISK_BYTES` of shards or
:data:`WARN_CPU_HOURS` of computing, and where the null draws more permutations than
there are distinct ones (``k!``).

Times come from the per-evaluation costs measured on this project's 2-core VM (README,
Performance), scaled with k; read them as a guide within a factor of about 2.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emergence.errors import ConfigError

__all__ = ["Pair", "Resampling", "check", "distinct_draws", "estimate", "machine_memory",
           "repeated_draws"]

GiB = 1 << 30
BASE_BYTES = 600 << 20
"""A statistics job after its imports (582 MB measured, README "Scale")."""
MIN_K = 5
"""The fewest concepts a study can keep (:func:`emergence.concepts.check_enough_concepts`)."""
WARN_JOB_FRACTION = 0.5
WARN_DISK_BYTES = 20 * GiB
WARN_CPU_HOURS = 24.0
_FIT = 0.8  # a job may use this share of the machine's memory


def _eval_seconds(measure: str, k: int, rsa_method: str) -> float:
    """One evaluation (one sample, one layer, one group) on one thread at k concepts:
    README's k = 166 figures, the 2 vs 2 scaled with k³ (its cross product), the others
    with k² (the pairs), each with a floor for the fixed costs of small k."""
    r = k / 166.0
    if measure == "two_vs_two":
        return max(2e-5, 2.7e-4 * r ** 3)
    if measure == "rsa" and rsa_method == "kendall":
        return max(2e-5, 4.8e-4 * r ** 2)
    return max(5e-6, 3.5e-5 * r ** 2)


def _jackknife_seconds(measure: str, k: int, rsa_method: str) -> float:
    """One jackknife sample (one layer, one group) on one thread at k concepts, from its
    time against a permutation's measured alternately in one process (k = 166 and 400):
    the 2 vs 2's deletion kernel 0.6x, RSA Pearson and CKA 0.2-0.7x (both O(k²) per
    sample); Spearman and Kendall use the bootstrap's weighted kernels (1.35x)."""
    r = k / 166.0
    if measure == "two_vs_two":
        return max(1e-5, 1.6e-4 * r ** 2)
    if measure == "rsa" and rsa_method != "pearson":
        return 1.35 * _eval_seconds(measure, k, rsa_method)
    if measure in ("rsa", "cka", "cka_debiased"):
        return max(1e-6, 1.8e-5 * r ** 2)
    return 0.0  # a companion: computed with its measure


@dataclass(frozen=True)
class Pair:
    """One network x word model: its layers and concepts (``*_exact`` False: a bound)."""

    network: str
    word_model: str
    layers: int
    layers_exact: bool
    k: int
    k_exact: bool


@dataclass(frozen=True)
class Resampling:
    """The permutations or the jackknife of a study: ``key`` is the config section
    (``permutations`` or ``intervals``), ``n`` its count (``permutations.n``,
    ``intervals.pairs``; 0: none), ``measures`` what a shard stores per layer."""

    key: str
    n: int
    shards: int
    batch_size: int
    groups: int
    measures: tuple[str, ...]
    rsa_method: str
    pairs: tuple[Pair, ...]

    @property
    def jackknife(self) -> bool:
        return self.key == "intervals"

    @property
    def rule(self) -> str:
        """The rule whose jobs draw the shards."""
        return "jackknife" if self.jackknife else "permutations"

    @property
    def count_key(self) -> str:
        return "intervals.pairs" if self.jackknife else "permutations.n"

    @property
    def what(self) -> str:
        return "pairs deleted" if self.jackknife else "permutations"

    def samples(self, k: int) -> int:
        """Samples per layer and group at k concepts: n, or the jackknife's 1 + k + the
        pairs used (at most every pair)."""
        if not self.jackknife:
            return self.n
        return 1 + k + min(self.n, k * (k - 1) // 2) if self.n else 0

    def per_shard(self, k: int) -> int:
        """Samples in the largest shard at k concepts (whole batches, as the rules cut
        them)."""
        from emergence.stats.permutation import shard_range

        n = self.samples(k)
        sizes = [b - a for a, b in (shard_range(n, self.shards, s, self.batch_size)
                                    for s in range(self.shards))]
        return max(sizes, default=0)

    def values_bytes(self, layers: int, k: int) -> int:
        """One group's values in the largest shard: every measure and layer, float64."""
        return self.per_shard(k) * (len(self.measures) * layers + 1) * 8

    def job_bytes(self, pair: Pair, k: int | None = None) -> int:
        """One shard job: imports, the groups' similarity (and Gram) matrices, W, one
        group's values (and the jackknife's 2 vs 2 cross-products of one group's layers)."""
        k = pair.k if k is None else k
        mats = self.groups * pair.layers * (2 if {"cka", "cka_debiased"} & set(self.measures)
                                            else 1) + 2
        if self.jackknife and "two_vs_two" in self.measures:
            mats += pair.layers
        return BASE_BYTES + mats * k * k * 8 + self.values_bytes(pair.layers, k)

    def disk_bytes(self) -> int:
        return sum(self.groups * self.samples(p.k) * (len(self.measures) * p.layers + 1) * 8
                   for p in self.pairs)

    def cpu_seconds(self, k: int | None = None) -> float:
        """Computing time on one thread (``k``: every pair at that many concepts)."""
        cost = _jackknife_seconds if self.jackknife else _eval_seconds
        total = 0.0
        for p in self.pairs:
            kk = p.k if k is None else k
            total += self.samples(kk) * self.groups * p.layers * sum(
                cost(m, kk, self.rsa_method) for m in self.measures)
        return total

    def summary(self) -> str:
        """One line: jobs, the largest job's memory, disk and time."""
        if not self.n or not self.pairs:
            return f"{self.key}: none ({self.count_key} = 0)" if not self.jackknife \
                else f"{self.key}: none (method none)"
        big = max(self.pairs, key=lambda p: self.job_bytes(p))
        high, low = self.cpu_seconds(), self.cpu_seconds(MIN_K)
        time = (f"about {_hours(high)}" if all(p.k_exact for p in self.pairs)
                or _hours(low) == _hours(high)
                else f"{_hours(low)} to {_hours(high)} (k not known yet)")
        layers = ", ".join(sorted({f"{p.network} {'' if p.layers_exact else '>= '}{p.layers}"
                                   for p in self.pairs}))
        ks = ", ".join(sorted({f"{p.word_model} {'' if p.k_exact else '<= '}{p.k}"
                               for p in self.pairs}))
        count = (f"1 + k + {self.n:,} pairs deleted (jackknife samples)" if self.jackknife
                 else f"{self.n:,} {self.what}")
        return (f"{self.key}: {count} x {len(self.pairs)} network x word model "
                f"pair(s) x {self.groups} group(s) x {len(self.measures)} measure(s) "
                f"(layers: {layers}; k: {ks}): {len(self.pairs) * self.shards:,} jobs, each "
                f"at most {_size(self.job_bytes(big))} of memory; {_size(self.disk_bytes())} "
                f"of shard files; {time} on one thread")


def _size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20)):
        if n >= scale or unit == "MiB":
            return f"{n / scale:,.1f} {unit}"
    return f"{n:.0f} B"


def _hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} CPU-hours"


def _layer_count(entries: Any) -> tuple[int, bool]:
    """Layers of a network's ``layers:`` entries; a glob counts once (at least one)."""
    globs = 0
    for e in entries or ():
        module = e if isinstance(e, str) else e.get("module", "")
        globs += any(ch in module for ch in "*?[")
    return len(entries or ()), globs == 0


def _rows(table: str | os.PathLike[str]) -> int | None:
    """Data rows of a TSV/CSV concept table (None when it cannot be read)."""
    try:
        with open(table, encoding="utf-8-sig", errors="replace") as fh:
            return max(sum(1 for line in fh if line.strip()) - 1, 0)
    except OSError:
        return None


def _k_bound(images: Mapping[str, Any]) -> int:
    """The most concepts the image source can give."""
    source = images.get("source")
    bound: int | None = None
    if source == "emoji" and images.get("concepts"):
        bound = _rows(images["concepts"])
    elif source in ("imagenet-val", "imagenet-folders", "imagenetv2"):
        bound = 1000
    elif source == "folders":
        table = images.get("table")
        if table and table.get("path"):
            bound = _rows(table["path"])
        elif images.get("path"):
            try:
                with os.scandir(images["path"]) as it:
                    bound = sum(1 for e in it if e.is_dir())
            except OSError:
                bound = None
    bound = 1000 if bound is None else bound
    cap = images.get("max_concepts")
    return max(min(bound, cap) if cap else bound, 1)


def _h5_attr(path: Path, name: str) -> Any:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs[name]
    except (OSError, KeyError):
        return None


def estimate(config: Mapping[str, Any], groups: list[str], results: str | os.PathLike[str],
             word_spaces: Sequence[str] | None = None) -> list[Resampling]:
    """The permutations and the jackknife of a validated config (defaults filled in), per
    network x word space (``word_spaces``: each layer of a layered word model is one,
    :attr:`emergence.config.Study.word_spaces`; default the config's word models)."""
    root = Path(results)
    bound = _k_bound(config["images"])
    layers = {}
    for net, entry in config["networks"].items():
        count, exact = _layer_count(entry.get("layers"))
        names = _h5_attr(root / "activations" / net / f"{groups[0]}.h5", "layer_names") \
            if groups else None
        layers[net] = (len(names), True) if names is not None else (count, exact)
    spaces = list(word_spaces) if word_spaces is not None else list(config["word_models"])
    ks = {}
    for wm in spaces:
        k = _h5_attr(root / "words" / wm / "similarity.h5", "k")
        ks[wm] = (int(k), True) if k is not None else (bound, False)
    pairs = tuple(Pair(net, wm, *layers[net], *ks[wm])
                  for net in config["networks"] for wm in spaces)
    from emergence.uncertainty import jackknife_names

    measures = tuple(config["measures"]["names"])
    rsa = config["two_vs_two"]["rsa_method"]
    perm, iv = config["permutations"], config["intervals"]
    pairs_deleted = int(iv["pairs"]) if iv["method"] == "jackknife" else 0
    return [Resampling("permutations", int(perm["n"]), int(perm["shards"]),
                       int(perm["batch_size"]), len(groups), measures, rsa, pairs),
            Resampling("intervals", pairs_deleted, int(iv["shards"]), int(iv["batch_size"]),
                       len(groups), jackknife_names(measures), rsa, pairs)]


def distinct_draws(kind: str, k: int) -> int:
    """Distinct permutations of k concepts (k!); ``kind`` is ``permutations``."""
    if kind != "permutations":
        raise ValueError(f"distinct draws of {kind!r}: only permutations repeat")
    return math.factorial(k)


def repeated_draws(kind: str, n: int, k: int, *, bound: bool = False) -> str | None:
    """The line saying that ``n`` permutations exceed the distinct ones at ``k`` concepts
    (None when they do not; the jackknife deletes distinct concepts and pairs, at most
    every pair, so it never repeats)."""
    if kind != "permutations" or not n or distinct_draws(kind, k) >= n:
        return None
    distinct = distinct_draws(kind, k)
    return (f"{kind}.n = {n:,} is more than the {distinct:,} distinct permutations of "
            f"{'at most ' if bound else ''}{k} concepts ({k}!): draws repeat, and the "
            f"distribution has at most {distinct:,} distinct values (lower {kind}.n or add "
            "concepts)")


def _free_bytes(results: Path) -> int | None:
    here = results.resolve()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return None


def _present_bytes(results: Path, r: Resampling) -> int:
    """Bytes of this config's shard files already there (a rerun replaces them)."""
    folder = "jackknife" if r.jackknife else "null"
    total = 0
    for p in r.pairs:
        for s in range(r.shards):
            f = results / "two_vs_two" / p.network / p.word_model / folder / \
                f"shard-{s}-of-{r.shards}.h5"
            total += f.stat().st_size if f.is_file() else 0
    return total


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check(resamplings: list[Resampling], results: str | os.PathLike[str], *,
          memory: int | None, free: int | None = -1,
          requested: Mapping[str, float] | None = None) -> list[str]:
    """Raise :class:`ConfigError` for what cannot fit; return the warnings (one line each).

    ``memory``: this machine's memory for a local run (None: the jobs run elsewhere);
    ``requested``: for a cluster run, the ``mem_mb`` (MiB) the ``permutations`` and
    ``jackknife`` rules ask for where it is set (``--set-resources``, a profile): a job
    that needs more is killed by the scheduler; ``free``: bytes free for the results (-1:
    look them up; None: unknown)."""
    root = Path(results)
    warnings: list[str] = []
    active = [r for r in resamplings if r.n and r.pairs]
    for r in active:
        limit, where = None, ""
        if memory is not None:
            limit, where = _FIT * memory, f"this machine's {_size(memory)} allows"
        elif requested and requested.get(r.rule):
            mib = float(requested[r.rule])
            limit = mib * (1 << 20)
            where = (f"the {mib:,.0f} MB its jobs ask for (mem_mb; --set-resources "
                     f"{r.rule}:mem_mb=... asks for more)")
        # The least a shard job can need: the layers surely there, k = 5.
        low = max(r.job_bytes(p, MIN_K) for p in r.pairs)
        if limit is not None and low > limit:
            per_sample = max((len(r.measures) * p.layers + 1) * 8 for p in r.pairs)
            need = math.ceil(r.samples(MIN_K) / max((limit - BASE_BYTES) / per_sample, 1))
            raise ConfigError(
                f"config key '{r.count_key}': {r.n:,} {r.what} in {r.shards} shard(s): each "
                f"{r.rule} job holds at least {_size(low)} ({r.per_shard(MIN_K):,} samples x "
                f"{len(r.measures)} measure(s) x the layers, float64), more than {where}; "
                f"raise {r.key}.shards to at least {need:,} or lower {r.count_key}")
        high = max(r.job_bytes(p) for p in r.pairs)
        if memory is not None and high > WARN_JOB_FRACTION * memory:
            warnings.append(f"{r.key}: each {r.rule} job may hold up to {_size(high)}, over "
                            f"half of this machine's {_size(memory)}: run fewer at once "
                            f"(--resources mem_mb=...) or raise {r.key}.shards")
        elif memory is None and limit is not None and high > limit:
            warnings.append(f"{r.key}: each {r.rule} job may hold up to {_size(high)}, more "
                            f"than {where}")
        if all(p.k_exact for p in r.pairs) and r.cpu_seconds() > WARN_CPU_HOURS * 3600:
            warnings.append(f"{r.summary()} (over {WARN_CPU_HOURS:.0f} CPU-hours)")
        elif r.cpu_seconds(MIN_K) > WARN_CPU_HOURS * 3600:
            warnings.append(f"{r.summary()} (over {WARN_CPU_HOURS:.0f} CPU-hours even at "
                            f"k = {MIN_K})")
        for p in sorted(r.pairs, key=lambda p: p.k)[:1]:
            line = repeated_draws(r.key, r.n, p.k, bound=not p.k_exact)
            if line:
                warnings.append(line)
    disk = sum(r.disk_bytes() for r in active)
    if free == -1:
        free = _free_bytes(root)
    if active and free is not None:
        need = disk - sum(_present_bytes(root, r) for r in active)
        if need > free:
            worst = max(active, key=lambda r: r.disk_bytes())
            raise ConfigError(
                f"config key '{worst.count_key}': {worst.n:,} {worst.what}: the shard files "
                f"take {_size(disk)} ({_size(worst.disk_bytes())} of them {worst.rule}), more "
                f"than the {_size(free)} free for {root}; lower {worst.count_key}")
    if disk > WARN_DISK_BYTES:
        warnings.append(f"the shard files will take {_size(disk)} on disk")
    return warnings
