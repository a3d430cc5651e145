"""The paper's analyses over one network x word model: scores, nulls, significance, 1 vs 2.

These functions read the activation statistics files (one per group), restrict the
image x image correlations to the kept concepts in matrix order, and produce rows
for the TSV outputs. Each function handles all layers and all groups at once.

A layer of a group whose image matrix has NaN entries (a concept whose activations
are constant there, e.g. a uniform grey image at the pixel layer) cannot be scored:
its 2 vs 2 accuracy, RSA, null, p-values and 1 vs 2 accuracy are NaN, each table row
says why in its ``reason`` column (empty when scored), and a warning goes to the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.activations import GroupSimilarities
from emergence.formats.nulls import Samples, samples_of, write_null_shard
from emergence.stats.measures import MEASURES, MeasureSpec, column_prefix
from emergence.stats.one_vs_two import MIN_REFERENCE, OneVsTwo, one_vs_two, pool
from emergence.stats.permutation import permutation_null, significant
from emergence.stats.two_vs_two import TwoVsTwo
from emergence.summaries import bootstrap_band, null_summary

__all__ = [
    "ONE_VS_TWO_COLUMNS",
    "ONE_VS_TWO_TEST_COLUMNS",
    "SCORE_COLUMNS",
    "SIGNIFICANCE_COLUMNS",
    "bootstrap_shard",
    "null_shard",
    "percentile_band",
    "one_vs_two_rows",
    "score_columns",
    "score_rows",
    "significance_columns",
    "significance_rows",
    "undefined_reason",
]

_log = logging.getLogger(__name__)


def undefined_reason(g: GroupSimilarities, layer: int) -> str:
    """Why layer ``layer`` of group ``g`` cannot be scored, or "" when it can.

    It cannot when its image matrix has NaN or infinite entries; the culprits named are
    the concepts whose self-correlation is undefined (constant activations), else those
    with any undefined correlation.
    """
    m = g.similarity[layer]
    if np.isfinite(m).all():
        return ""
    bad = np.flatnonzero(~np.isfinite(np.diag(m)))
    what = "constant activations"
    if bad.size == 0:
        bad = np.flatnonzero(~np.isfinite(m).all(axis=1))
        what = "non-finite correlations"

    def name(c: int) -> str:
        wnid = g.wnids[c] if c < len(g.wnids) else f"concept #{c}"
        word = g.concepts[c] if c < len(g.concepts) else ""
        return f"{wnid} ({word})" if word and word != wnid else wnid

    names = ", ".join(name(int(c)) for c in bad[:5])
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    return f"{what} for concept(s) {names}{more}: correlation undefined"


def _warn_undefined(g: GroupSimilarities, what: str) -> list[str]:
    """Each layer's :func:`undefined_reason`, with a warning logged for the undefined ones."""
    reasons = [undefined_reason(g, j) for j in range(len(g.layers))]
    for layer, reason in zip(g.layers, reasons, strict=True):
        if reason:
            _log.warning("%s, group %s, layer %s: %s; %s", g.network, g.group, layer, reason,
                         what)
    return reasons


def _warn_ties(g: GroupSimilarities, ties: NDArray[np.float64], n_pairs: int) -> None:
    tied = ", ".join(f"{lay} ({int(t)})" for lay, t in zip(g.layers, ties, strict=True) if t > 0)
    if tied:
        _log.warning("%s, group %s: ties in the 2 vs 2 test (pairs whose two sums are "
                     "exactly equal; they count as fails) in layer(s) %s, of %d pairs; two "
                     "concepts with identical word vectors or identical images tie",
                     g.network, g.group, tied, n_pairs)


_META = ["network", "model", "word_model", "group", "layer", "layer_index", "module"]


def score_columns(measures: MeasureSpec) -> list[str]:
    """The columns of ``scores.tsv``: ``ties`` (the 2 vs 2 pairs whose two sums are equal,
    counted as fails: :meth:`~emergence.stats.two_vs_two.TwoVsTwo.ties`), one per measure
    (:data:`~emergence.stats.measures.MEASURES` order), RSA's method and mutual kNN's k when
    they are scored, and ``reason``."""
    return [*_META, "n_features", "k", "n_pairs", "ties", *measures.names,
            *(["rsa_method"] if "rsa" in measures.names else []),
            *(["mutual_knn_k"] if "mutual_knn" in measures.names else []), "reason"]


SCORE_COLUMNS = score_columns(MeasureSpec())
"""The columns with the default measures (2 vs 2 and RSA)."""


def score_rows(word_model: str, w_mat: NDArray[np.float64], groups: Sequence[GroupSimilarities],
               measures: MeasureSpec | None = None, *,
               word_gram: NDArray[np.float64] | None = None) -> list[dict[str, Any]]:
    """Every measure for every layer of every group (NaN, with the reason, for a layer that
    cannot be scored: see :func:`undefined_reason`). CKA needs ``word_gram`` and the groups'
    ``gram`` (:func:`~emergence.formats.activations.load_groups` with ``gram=True``)."""
    spec = measures or MeasureSpec()
    k = w_mat.shape[0]
    engine = TwoVsTwo(w_mat)
    rows = []
    for g in groups:
        values = spec.observed(w_mat, g.similarity, word_gram=word_gram, image_grams=g.gram)
        reasons = _warn_undefined(g, "every measure is nan")
        ties = engine.ties(g.similarity)
        _warn_ties(g, ties, k * (k - 1) // 2)
        for j, layer in enumerate(g.layers):
            rows.append({
                "network": g.network, "model": g.model, "word_model": word_model,
                "group": g.group, "layer": layer, "layer_index": j, "module": g.modules[j],
                "n_features": g.n_features[j], "k": k, "n_pairs": k * (k - 1) // 2,
                "ties": int(ties[j]) if np.isfinite(ties[j]) else float("nan"),
                **{m: float(values[m][j]) for m in spec.names},
                "rsa_method": spec.rsa_method, "mutual_knn_k": spec.knn_k,
                "reason": reasons[j],
            })
    return rows


def _resampled_shard(path: str | os.PathLike[str], kind: str, word_model: str,
                     w_mat: NDArray[np.float64], groups: Sequence[GroupSimilarities],
                     draw: Callable[[GroupSimilarities], dict[str, NDArray[np.float64]]], *,
                     seed: int, start: int, stop: int, batch_size: int, spec: MeasureSpec,
                     wnids: Sequence[str]) -> None:
    """One shard file of ``kind`` (permutation or bootstrap): ``draw(group)`` gives the
    samples ``start .. stop-1`` of every measure and layer of that group."""

    def values() -> Iterator[tuple[str, dict[str, NDArray[np.float64]]]]:
        for g in groups:
            _warn_undefined(g, f"its {kind} values are nan")
            yield g.group, draw(g)

    first = groups[0]
    write_null_shard(path, network=first.network, model=first.model, word_model=word_model,
                     seed=seed, start=start, stop=stop, batch_size=batch_size,
                     rsa_method=spec.rsa_method, layer_names=first.layers, k=w_mat.shape[0],
                     nulls=values(), measures=spec.names, kind=kind, concepts=wnids,
                     knn_k=spec.knn_k)


def null_shard(path: str | os.PathLike[str], word_model: str, w_mat: NDArray[np.float64],
               groups: Sequence[GroupSimilarities], *, seed: int, start: int, stop: int,
               batch_size: int, measures: MeasureSpec | None = None, device: str,
               word_gram: NDArray[np.float64] | None = None, progress: bool = True) -> None:
    """Permutations ``start .. stop-1`` of every measure for every group and layer, stored
    in one shard file (:mod:`emergence.formats.nulls`)."""
    spec = measures or MeasureSpec()
    spec.check_k(w_mat.shape[0])

    def draw(g: GroupSimilarities) -> dict[str, NDArray[np.float64]]:
        return permutation_null(
            w_mat, list(g.similarity), seed=seed, start=start, stop=stop,
            batch_size=batch_size, rsa_method=spec.rsa_method, device=device,
            progress=progress, measures=spec.names, word_gram=word_gram,
            image_grams=None if g.gram is None else list(g.gram), knn_k=spec.knn_k)

    _resampled_shard(path, "permutation", word_model, w_mat, groups, draw, seed=seed,
                     start=start, stop=stop, batch_size=batch_size, spec=spec,
                     wnids=groups[0].wnids)


def bootstrap_shard(path: str | os.PathLike[str], word_model: str, w_mat: NDArray[np.float64],
                    groups: Sequence[GroupSimilarities], *, seed: int, start: int, stop: int,
                    batch_size: int, measures: MeasureSpec | None = None, device: str,
                    word_gram: NDArray[np.float64] | None = None,
                    progress: bool = True) -> None:
    """Bootstrap samples ``start .. stop-1`` (concepts resampled; sample ``i`` depends only
    on the seed, ``i`` and k, so every group, layer, network and word model with the same
    concepts shares it) of every measure, group and layer, in one shard file."""
    from emergence.stats.bootstrap import bootstrap_distribution

    spec = measures or MeasureSpec()
    spec.check_k(w_mat.shape[0])

    def draw(g: GroupSimilarities) -> dict[str, NDArray[np.float64]]:
        return bootstrap_distribution(
            w_mat, list(g.similarity), seed=seed, start=start, stop=stop,
            batch_size=batch_size, measures=spec.names, rsa_method=spec.rsa_method,
            word_gram=word_gram, image_grams=None if g.gram is None else list(g.gram),
            knn_k=spec.knn_k, device=device, progress=progress)

    _resampled_shard(path, "bootstrap", word_model, w_mat, groups, draw, seed=seed,
                     start=start, stop=stop, batch_size=batch_size, spec=spec,
                     wnids=groups[0].wnids)


_PER_MEASURE = ["p_value", "p_value_fwe", "null_mean", "null_sd", "null_low", "null_high",
                "ci_low", "ci_high"]


def significance_columns(measures: Sequence[str] = ("two_vs_two", "rsa")) -> list[str]:
    """The columns of ``significance.tsv``: per measure its value and ``<prefix>p_value``,
    ``p_value_fwe``, ``null_mean``, ``null_sd``, ``null_low``, ``null_high``, ``ci_low``,
    ``ci_high`` (prefix: :func:`~emergence.stats.measures.column_prefix`); then the counts,
    the 2 vs 2 decision and the reason."""
    cols = [*_META, "k"]
    for m in (m for m in MEASURES if m in measures):
        cols += [m, *(column_prefix(m) + c for c in _PER_MEASURE)]
    return [*cols, "n_permutations", "n_bootstrap", "confidence", "significant", "reason"]


SIGNIFICANCE_COLUMNS = significance_columns()
"""The columns with the default measures (2 vs 2 and RSA)."""


def percentile_band(samples: NDArray[np.float64], confidence: float
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per column of ``samples`` (n, L): the central ``confidence`` percentile interval of
    its finite values (numpy's linear quantiles, as
    :func:`emergence.stats.comparisons.confidence_interval`); NaN for a column without
    finite values."""
    lo, hi = (1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0
    out = np.full((2, samples.shape[1]), np.nan)
    for j in range(samples.shape[1]):
        col = samples[:, j][np.isfinite(samples[:, j])]
        if col.size:
            out[:, j] = np.quantile(col, [lo, hi])
    return out[0], out[1]


def significance_rows(score_table: Sequence[Mapping[str, str]],
                      nulls: Samples | Mapping[str, Mapping[str, NDArray[np.float64]]],
                      alpha: float, *,
                      boots: Samples | Mapping[str, Mapping[str, NDArray[np.float64]]]
                      | None = None, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per-group and mean-over-groups values of every measure with permutation p-values,
    the null's band and the bootstrap interval.

    Per measure: ``p_value`` per layer, +1-corrected; ``p_value_fwe`` max over layers
    (family-wise); ``null_low``/``null_high`` the null's central ``confidence`` band (chance
    for this k), ``ci_low``/``ci_high`` the bootstrap percentile interval. The ``mean`` rows
    compare the mean over groups to the mean of the groups' nulls under the same
    permutation index, and take the interval of the mean over groups of the same bootstrap
    sample. ``significant`` is the 2 vs 2 decision (``p_value < alpha``).

    ``nulls`` and ``boots`` are the shards (:class:`~emergence.formats.nulls.Shards`, read
    block by block: :mod:`emergence.summaries`) or arrays in memory ({group: {measure:
    (n, L)}}); the numbers are the same bit for bit.

    A layer that cannot be scored (NaN: its score row's ``reason``) has NaN p-values,
    bands and intervals, is not significant and carries the reason; the ``mean`` row of a
    layer is NaN when any group is (its reason names the groups). The family-wise maximum
    runs over the layers that can be scored. Without permutations (or bootstrap samples)
    those columns are NaN.
    """
    groups = list(dict.fromkeys(r["group"] for r in score_table))
    layers = list(dict.fromkeys(r["layer"] for r in score_table))
    first = score_table[0]
    measures = [m for m in MEASURES if m in first]
    meta = {r["layer"]: r for r in score_table if r["group"] == groups[0]}
    cell = {(r["group"], r["layer"]): r for r in score_table}
    why = {g: [cell[g, lay].get("reason", "") or "" for lay in layers] for g in groups}
    why["mean"] = ["; ".join(f"group {g}: {why[g][j]}" for g in groups if why[g][j])
                   for j in range(len(layers))]
    null_src, boot_src = samples_of(nulls), samples_of(boots)
    n_perm = null_src.n if null_src is not None else 0
    n_boot = boot_src.n if boot_src is not None else 0
    nan = np.full(len(layers), np.nan)

    observed: dict[str, dict[str, NDArray[np.float64]]] = {
        g: {m: np.array([float(cell[g, lay][m]) for lay in layers]) for m in measures}
        for g in groups}
    observed["mean"] = {m: np.mean([observed[g][m] for g in groups], axis=0)
                        for m in measures}
    null = (null_summary(null_src, observed, groups, measures, confidence)
            if n_perm and null_src is not None else None)
    boot = (bootstrap_band(boot_src, groups, measures, len(layers), confidence)
            if n_boot and boot_src is not None else None)
    columns: dict[str, dict[str, NDArray[np.float64]]] = {g: {} for g in [*groups, "mean"]}
    for m in measures:
        prefix = column_prefix(m)
        for g in [*groups, "mean"]:
            obs, col = observed[g][m], columns[g]
            col[m] = obs
            if null is not None:
                for c, values in null.items():
                    col[prefix + c] = values[g][m]
            if boot is not None:
                lo, hi = boot[0][g][m], boot[1][g][m]
                col[prefix + "ci_low"] = np.where(np.isnan(obs), np.nan, lo)
                col[prefix + "ci_high"] = np.where(np.isnan(obs), np.nan, hi)
    rows = []
    for g in [*groups, "mean"]:
        col = columns[g]
        for j, lay in enumerate(layers):
            row: dict[str, Any] = {
                "network": first["network"], "model": first["model"],
                "word_model": first["word_model"], "group": g, "layer": lay, "layer_index": j,
                "module": meta[lay]["module"], "k": first["k"]}
            for m in measures:
                row[m] = float(col[m][j])
                for c in _PER_MEASURE:
                    row[column_prefix(m) + c] = float(col.get(column_prefix(m) + c, nan)[j])
            row.update({"n_permutations": n_perm, "n_bootstrap": n_boot,
                        "confidence": confidence,
                        "significant": significant(row["p_value"], alpha),
                        "reason": why[g][j]})
            rows.append(row)
    return rows


ONE_VS_TWO_COLUMNS = ["network", "model", "word_model", "group", "layer", "layer_index",
                      "module", "k", "n_correct", "n_tests", "n_skipped", "min_reference",
                      "n_passed", "accuracy", "binomial_p", "permutation_p", "n_permutations",
                      "reason"]
ONE_VS_TWO_TEST_COLUMNS = ["network", "word_model", "group", "layer", "layer_index", "image",
                           "true_wnid", "predicted_wnid", "n_reference", "r_true",
                           "r_predicted", "passed", "reason"]


def _no_test_reason(n_skipped: int, reasons: Sequence[str]) -> str:
    """Why a 1 vs 2 row has no counted test."""
    if not n_skipped:
        return "no image misclassified into another concept of the set"
    return f"no test counted: {n_skipped} skipped ({'; '.join(sorted(set(reasons)))})"


def one_vs_two_rows(word_model: str, w_mat: NDArray[np.float64], wnids: Sequence[str],
                    groups: Sequence[GroupSimilarities], *, n_permutations: int, seed: int,
                    batch_size: int = 64) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """1 vs 2 summary rows (per group and layer, plus the 'all' group pooled by
    :func:`emergence.stats.one_vs_two.pool`) and test rows.

    Skipped tests (reference set under ``MIN_REFERENCE`` concepts, undefined correlation,
    or a layer that cannot be scored) are listed in the test rows with ``passed`` false
    and their ``reason``, and counted in ``n_skipped``, not in ``n_tests``; a row without
    counted tests has NaN accuracy and p-values and says why in ``reason``.
    ``n_permutations = 0``: ``permutation_p`` is NaN (not tested). When a group's images
    have no predicted concept (``GroupSimilarities.no_prediction``: averaged rows, no
    predictions, labels that are not concept ids) the whole test is skipped: no test rows,
    and summary rows with NaN results and the reason.
    """
    k = len(wnids)
    why = next((f"1 vs 2 test skipped: {g.no_prediction}" for g in groups if g.no_prediction),
               "")
    if why:
        _log.warning("%s: %s", groups[0].network, why)
        return [{"network": g.network, "model": g.model, "word_model": word_model,
                 "group": name, "layer": g.layers[j], "layer_index": j,
                 "module": g.modules[j], "k": k, "n_correct": 0, "n_tests": 0,
                 "n_skipped": 0, "min_reference": MIN_REFERENCE, "n_passed": 0,
                 "accuracy": float("nan"), "binomial_p": float("nan"),
                 "permutation_p": float("nan"), "n_permutations": n_permutations,
                 "reason": why}
                for j in range(len(groups[0].layers))
                for g, name in [*((g, g.group) for g in groups), (groups[0], "all")]], []
    summary: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    n_correct = [int((g.predicted == np.arange(k)).sum()) for g in groups]
    layer_reasons = [_warn_undefined(g, "its 1 vs 2 tests are skipped") for g in groups]
    for j in range(len(groups[0].layers)):
        results: list[OneVsTwo] = []
        pooled_why: list[str] = []
        for g, g_correct, g_reasons in zip(groups, n_correct, layer_reasons, strict=True):
            res = one_vs_two(w_mat, g.similarity[j], g.predicted,
                             n_permutations=n_permutations, seed=seed, batch_size=batch_size)
            results.append(res)
            undefined = g_reasons[j]
            test_reasons = [undefined if r and undefined else r for r in res.reason] \
                or [""] * res.image.size
            reason = ""
            if not res.n_tests:
                reason = undefined or _no_test_reason(res.n_skipped, test_reasons)
                pooled_why.append(f"group {g.group}: {reason}")
            summary.append({
                "network": g.network, "model": g.model, "word_model": word_model,
                "group": g.group, "layer": g.layers[j], "layer_index": j,
                "module": g.modules[j], "k": k, "n_correct": g_correct,
                "n_tests": res.n_tests, "n_skipped": res.n_skipped,
                "min_reference": MIN_REFERENCE, "n_passed": res.n_passed,
                "accuracy": res.accuracy, "binomial_p": res.binomial_p,
                "permutation_p": res.permutation_p, "n_permutations": n_permutations,
                "reason": reason,
            })
            for t in range(res.image.size):
                tests.append({
                    "network": g.network, "word_model": word_model, "group": g.group,
                    "layer": g.layers[j], "layer_index": j,
                    "image": g.image_path[res.image[t]], "true_wnid": wnids[res.image[t]],
                    "predicted_wnid": wnids[res.predicted[t]],
                    "n_reference": int(res.n_reference[t]), "r_true": float(res.r_true[t]),
                    "r_predicted": float(res.r_predicted[t]), "passed": bool(res.passed[t]),
                    "reason": test_reasons[t],
                })
        g0, pooled = groups[0], pool(results, n_permutations)
        summary.append({
            "network": g0.network, "model": g0.model, "word_model": word_model, "group": "all",
            "layer": g0.layers[j], "layer_index": j, "module": g0.modules[j], "k": k,
            "n_correct": sum(n_correct), "n_tests": pooled.n_tests,
            "n_skipped": pooled.n_skipped, "min_reference": MIN_REFERENCE,
            "n_passed": pooled.n_passed, "accuracy": pooled.accuracy,
            "binomial_p": pooled.binomial_p, "permutation_p": pooled.permutation_p,
            "n_permutations": n_permutations,
            "reason": "" if pooled.n_tests else "; ".join(pooled_why),
        })
    return summary, tests

