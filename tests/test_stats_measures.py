"""The measures as peers of the 2 vs 2 in the pipeline (issue #14): every measure's column
in scores.tsv equals its literal definition on the raw activations and word vectors; its
null and jackknife come from the same seeded samples for any number of shards; and
significance.tsv's p-values, bands and intervals are those of the shards."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from emergence.errors import ConfigError
from emergence.formats.activations import load_groups
from emergence.formats.nulls import read_nulls
from emergence.formats.vectors import read_word_vectors
from emergence.formats.word_matrix import read_word_gram, read_word_matrix
from emergence.io import read_tsv
from emergence.stats.cka import linear_gram
from emergence.stats.measures import MEASURES, MeasureSpec, column_prefix
from emergence.stats.permutation import family_wise_p_values, p_values, shard_range
from emergence.tables.score_table import jackknife_shard, null_shard
from emergence.tables.significance_table import percentile_band, significance_rows
from tests import literal

GROUPS = ["twemoji", "openmoji"]


def _results(demo_run: tuple[Path, dict]) -> Path:
    return Path(demo_run[1]["results"])


def test_measure_spec_orders_and_checks() -> None:
    spec = MeasureSpec(("mutual_knn", "two_vs_two", "cka"))
    assert spec.names == ("two_vs_two", "cka", "mutual_knn")  # MEASURES order
    assert spec.needs_gram and not MeasureSpec().needs_gram
    assert MeasureSpec.from_params(spec.params()) == spec
    with pytest.raises(ConfigError, match="'measures.names': two_vs_two is required"):
        MeasureSpec(("rsa", "cka"))
    with pytest.raises(ValueError, match="'measures.mutual_knn_k' = 12: .* at most k - 1 = 9"):
        MeasureSpec(("two_vs_two", "mutual_knn"), knn_k=12).check_k(10)


def test_word_gram_is_the_centred_gram_of_the_kept_vectors(demo_run: tuple[Path, dict]) -> None:
    res = _results(demo_run)
    for wm in demo_run[1]["word_models"]:
        wnids, _, _ = read_word_matrix(res / "words" / wm / "similarity.h5")
        vw, vectors = read_word_vectors(res / "words" / wm / "vectors.h5")
        y = vectors[[vw.index(w) for w in wnids]].astype(np.float64)
        np.testing.assert_array_equal(read_word_gram(res / "words" / wm / "similarity.h5"),
                                      linear_gram(y))


def test_scores_equal_the_literal_measures(demo_run: tuple[Path, dict]) -> None:
    """CKA (both), mutual kNN and RSA of every layer, group, network and word model, from
    the raw activations the reduced demo keeps, by the literal implementations."""
    res, cfg = _results(demo_run), demo_run[1]
    knn_k = cfg["measures"]["mutual_knn_k"]
    checked = 0
    for wm in cfg["word_models"]:
        wnids, w_mat, _ = read_word_matrix(res / "words" / wm / "similarity.h5")
        vw, vectors = read_word_vectors(res / "words" / wm / "vectors.h5")
        y = vectors[[vw.index(w) for w in wnids]].astype(np.float64)
        for net in cfg["networks"]:
            scores = read_tsv(res / "two_vs_two" / net / wm / "scores.tsv")
            assert [m for m in MEASURES if m in scores[0]] == list(MEASURES)
            for group in GROUPS:
                with h5py.File(res / "activations" / net / f"{group}.h5") as f:
                    ids = f["images/wnid"].asstr()[()].tolist()
                    rows = [ids.index(w) for w in wnids]
                    for r in (r for r in scores if r["group"] == group):
                        x = f[f"layers/{r['layer']}/activations"][()][rows].astype(np.float64)
                        if r["reason"]:
                            assert all(r[m] == "nan" for m in MEASURES)
                            continue
                        assert float(r["cka"]) == pytest.approx(literal.cka(x, y), abs=1e-10)
                        assert float(r["cka_debiased"]) == pytest.approx(
                            literal.cka_debiased(x, y), abs=1e-10)
                        # the same neighbours (one neighbour changes it by 1/(k knn_k));
                        # the mean is summed in another order
                        assert float(r["mutual_knn"]) == pytest.approx(
                            literal.mutual_knn(x, y, knn_k), abs=1e-12)
                        i_mat = literal.corr_matrix(x)
                        assert float(r["rsa"]) == pytest.approx(literal.rsa(w_mat, i_mat),
                                                                abs=1e-10)
                        checked += 1
    assert checked >= 2 * 2 * 2 * 5


def test_significance_columns_come_from_the_shards(demo_run: tuple[Path, dict]) -> None:
    from emergence.stats.intervals import RANGES, concept_variance, interval
    from emergence.stats.jackknife import COMPANIONS, jackknife_pairs, jackknife_size
    from emergence.uncertainty import WITHHELD

    res, cfg = _results(demo_run), demo_run[1]
    conf = 0.95
    for net in cfg["networks"]:
        for wm in cfg["word_models"]:
            d = res / "two_vs_two" / net / wm
            nulls = read_nulls(sorted((d / "null").glob("shard-*.h5")))
            jack = read_nulls(sorted((d / "jackknife").glob("shard-*.h5")))
            table = read_tsv(d / "significance.tsv")
            layers = list(dict.fromkeys(r["layer"] for r in table))
            k = int(table[0]["k"])
            pairs = jackknife_pairs(cfg["seed"], k, cfg["intervals"]["pairs"])
            for m in MEASURES:
                pre = column_prefix(m)
                for g in [*GROUPS, "mean"]:
                    rows = [r for r in table if r["group"] == g]
                    obs = np.array([float(r[m]) for r in rows])
                    members = GROUPS if g == "mean" else [g]
                    null = np.mean([nulls[x][m] for x in members], axis=0)
                    assert null.shape == (cfg["permutations"]["n"], len(layers))
                    got = {c: np.array([float(r[pre + c]) for r in rows])
                           for c in ("p_value", "p_value_fwe", "ci_low", "ci_high",
                                     "null_low", "null_high")}
                    np.testing.assert_array_equal(got["p_value"], p_values(obs, null))
                    np.testing.assert_array_equal(got["p_value_fwe"],
                                                  family_wise_p_values(obs, null))
                    if m in WITHHELD:
                        assert np.isnan(got["ci_low"]).all()
                        assert all(WITHHELD[m] in r["interval_reason"] for r in rows)
                        continue
                    # 2 groups: the mean rows are over concepts (factors: auto)
                    vals = np.mean([jack[x][m] for x in members], axis=0)
                    assert vals.shape == (jackknife_size(k, cfg["intervals"]["pairs"]),
                                          len(layers))
                    comp = COMPANIONS.get(m)
                    var = concept_variance(
                        vals, k, pairs, rule="ratio" if m == "two_vs_two" else "smooth",
                        companion=None if comp is None
                        else np.mean([jack[x][comp] for x in members], axis=0))
                    lo, hi = interval(obs, var, conf, RANGES.get(m))
                    for j in range(len(layers)):
                        if np.isnan(obs[j]):
                            assert np.isnan(got["ci_low"][j]) and np.isnan(got["null_low"][j])
                            continue
                        assert (got["ci_low"][j], got["ci_high"][j]) == (lo[j], hi[j])
                        assert got["ci_low"][j] <= obs[j] <= got["ci_high"][j]
                        lo_n, hi_n = np.quantile(null[:, j], [(1 - conf) / 2, (1 + conf) / 2])
                        assert (got["null_low"][j], got["null_high"][j]) == (lo_n, hi_n)
            assert all(r["interval_factors"] == "concepts" for r in table)


@pytest.mark.parametrize("kind", ["permutation", "jackknife"])
def test_resampling_shards_are_shard_count_invariant(demo_run: tuple[Path, dict],
                                                     tmp_path: Path, kind: str) -> None:
    """Every measure's null and jackknife, written as 1, 3 or 8 shard files, read back
    bit-identical."""
    from emergence.stats.jackknife import jackknife_size

    res, cfg = _results(demo_run), demo_run[1]
    net, wm = "lite0", "w2v"
    spec = MeasureSpec(tuple(MEASURES), "pearson", cfg["measures"]["mutual_knn_k"])
    wnids, w_mat, _ = read_word_matrix(res / "words" / wm / "similarity.h5")
    groups = load_groups([res / "activations" / net / f"{g}.h5" for g in GROUPS], GROUPS,
                         wnids, net, gram=True)
    gram = read_word_gram(res / "words" / wm / "similarity.h5")
    n, batch, pairs = 20, 4, 9
    whole = None
    for shards in (1, 3, 8):
        paths = []
        for s in range(shards):
            paths.append(tmp_path / f"{shards}-{s}.h5")
            if kind == "jackknife":
                jackknife_shard(paths[-1], wm, w_mat, groups, seed=5, n_pairs=pairs,
                                shards=shards, shard=s, batch_size=batch, measures=spec,
                                word_gram=gram, progress=False)
                continue
            lo, hi = shard_range(n, shards, s, batch)
            null_shard(paths[-1], wm, w_mat, groups, seed=5, start=lo, stop=hi,
                       batch_size=batch, measures=spec, device="cpu", word_gram=gram,
                       progress=False)
        got = read_nulls(paths)
        if whole is None:
            whole = got
            names = set(got[GROUPS[0]])
            if kind == "jackknife":
                assert names == {"two_vs_two", "rsa", "cka", "cka_debiased",
                                 "two_vs_two_margin"}  # mutual_knn: no interval
                assert got[GROUPS[0]]["rsa"].shape[0] == jackknife_size(len(wnids), pairs)
            else:
                assert names == set(MEASURES)
            continue
        for g in GROUPS:
            for m in whole[g]:
                np.testing.assert_array_equal(got[g][m], whole[g][m], err_msg=f"{m} {shards}")


def test_percentile_band_ignores_non_finite_samples() -> None:
    s = np.array([[0.1, np.nan], [0.5, np.nan], [np.nan, np.nan], [0.9, np.nan]])
    lo, hi = percentile_band(s, 0.5)
    assert (lo[0], hi[0]) == tuple(np.quantile([0.1, 0.5, 0.9], [0.25, 0.75]))
    assert np.isnan(lo[1]) and np.isnan(hi[1])


def test_significance_without_jackknife_has_nan_intervals() -> None:
    scores = [{"network": "n", "model": "m", "word_model": "w", "group": g, "layer": lay,
               "module": lay, "k": "6", "two_vs_two": "0.7", "rsa": "0.2", "reason": ""}
              for g in ("a", "b") for lay in ("l1", "l2")]
    rng = np.random.default_rng(0)
    nulls = {g: {"two_vs_two": rng.random((9, 2)), "rsa": rng.random((9, 2))} for g in "ab"}
    rows = significance_rows(scores, nulls, 0.05)
    assert all(np.isnan(r["ci_low"]) and np.isnan(r["rsa_ci_high"]) for r in rows)
    assert all(r["n_jackknife"] == 0 and r["n_permutations"] == 9 for r in rows)
    assert all(r["interval_factors"] == "" and r["interval_reason"] == "" for r in rows)
