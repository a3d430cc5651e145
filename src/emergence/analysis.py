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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.activations import GroupSimilarities
from emergence.formats.nulls import write_null_shard
from emergence.stats.one_vs_two import MIN_REFERENCE, OneVsTwo, one_vs_two, pool
from emergence.stats.permutation import (
    family_wise_p_values,
    p_values,
    permutation_null,
    significant,
)
from emergence.stats.rsa import rsa_from_similarity
from emergence.stats.two_vs_two import TwoVsTwo

__all__ = [
    "ONE_VS_TWO_COLUMNS",
    "ONE_VS_TWO_TEST_COLUMNS",
    "SCORE_COLUMNS",
    "SIGNIFICANCE_COLUMNS",
    "null_shard",
    "one_vs_two_rows",
    "score_rows",
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


SCORE_COLUMNS = ["network", "model", "word_model", "group", "layer", "layer_index", "module",
                 "n_features", "k", "n_pairs", "two_vs_two", "rsa", "rsa_method", "reason"]


def score_rows(word_model: str, w_mat: NDArray[np.float64], groups: Sequence[GroupSimilarities],
               rsa_method: str = "pearson") -> list[dict[str, Any]]:
    """2 vs 2 accuracy and RSA for every layer of every group (NaN, with the reason, for a
    layer that cannot be scored: see :func:`undefined_reason`)."""
    engine = TwoVsTwo(w_mat)
    rows = []
    for g in groups:
        accuracy = engine.accuracy(g.similarity)
        reasons = _warn_undefined(g, "2 vs 2 and RSA are nan")
        for j, layer in enumerate(g.layers):
            rows.append({
                "network": g.network, "model": g.model, "word_model": word_model,
                "group": g.group, "layer": layer, "layer_index": j, "module": g.modules[j],
                "n_features": g.n_features[j], "k": engine.k, "n_pairs": engine.n_pairs,
                "two_vs_two": float(accuracy[j]),
                "rsa": rsa_from_similarity(w_mat, g.similarity[j], rsa_method),  # type: ignore[arg-type]
                "rsa_method": rsa_method, "reason": reasons[j],
            })
    return rows


def null_shard(path: str | os.PathLike[str], word_model: str, w_mat: NDArray[np.float64],
               groups: Sequence[GroupSimilarities], *, seed: int, start: int, stop: int,
               batch_size: int, rsa_method: str, device: str, progress: bool = True) -> None:
    """Permutations ``start .. stop-1`` for every group and layer, stored in one shard file
    (:mod:`emergence.formats.nulls`)."""

    def nulls() -> Iterator[tuple[str, dict[str, NDArray[np.float64]]]]:
        for g in groups:
            _warn_undefined(g, "its permutation null is nan")
            yield g.group, permutation_null(
                w_mat, list(g.similarity), seed=seed, start=start, stop=stop,
                batch_size=batch_size, rsa_method=rsa_method, device=device, progress=progress)

    first = groups[0]
    write_null_shard(path, network=first.network, model=first.model, word_model=word_model,
                     seed=seed, start=start, stop=stop, batch_size=batch_size,
                     rsa_method=rsa_method, layer_names=first.layers, k=w_mat.shape[0],
                     nulls=nulls())


SIGNIFICANCE_COLUMNS = [
    "network", "model", "word_model", "group", "layer", "layer_index", "module", "k",
    "two_vs_two", "p_value", "p_value_fwe", "null_mean", "null_sd", "rsa", "rsa_p_value",
    "n_permutations", "significant", "reason",
]


def significance_rows(score_table: Sequence[Mapping[str, str]],
                      nulls: Mapping[str, Mapping[str, NDArray[np.float64]]],
                      alpha: float) -> list[dict[str, Any]]:
    """Per-group and mean-over-groups accuracy with permutation p-values.

    ``p_value``: per layer, +1-corrected. ``p_value_fwe``: max over layers (family-wise).
    The ``mean`` rows compare the mean accuracy over groups to the mean of the groups'
    nulls under the same permutation index.

    A layer that cannot be scored (NaN accuracy: its score row's ``reason``) has NaN
    p-values, null mean and sd, is not significant and carries the reason; the ``mean``
    row of a layer is NaN when any group is (its reason names the groups). The
    family-wise maximum runs over the layers that can be scored.
    """
    groups = list(dict.fromkeys(r["group"] for r in score_table))
    layers = list(dict.fromkeys(r["layer"] for r in score_table))
    first = score_table[0]
    meta = {r["layer"]: r for r in score_table if r["group"] == groups[0]}
    cell = {(r["group"], r["layer"]): r for r in score_table}
    obs = {g: np.array([float(cell[g, lay]["two_vs_two"]) for lay in layers]) for g in groups}
    obs_rsa = {g: np.array([float(cell[g, lay]["rsa"]) for lay in layers]) for g in groups}
    why = {g: [cell[g, lay].get("reason", "") or "" for lay in layers] for g in groups}
    why["mean"] = ["; ".join(f"group {g}: {why[g][j]}" for g in groups if why[g][j])
                   for j in range(len(layers))]
    n_perm = min((nulls[g]["two_vs_two"].shape[0] for g in groups), default=0) if nulls else 0
    series: list[tuple[str, NDArray[np.float64], NDArray[np.float64],
                       NDArray[np.float64] | None, NDArray[np.float64] | None]] = []
    for g in groups:
        series.append((g, obs[g], obs_rsa[g], nulls[g]["two_vs_two"] if n_perm else None,
                       nulls[g]["rsa"] if n_perm else None))
    mean_null = (np.mean([nulls[g]["two_vs_two"] for g in groups], axis=0) if n_perm else None)
    mean_rsa_null = (np.mean([nulls[g]["rsa"] for g in groups], axis=0) if n_perm else None)
    series.append(("mean", np.mean([obs[g] for g in groups], axis=0),
                   np.mean([obs_rsa[g] for g in groups], axis=0), mean_null, mean_rsa_null))
    rows = []
    for g, acc, rsa_obs, null, rsa_null in series:
        if null is not None and rsa_null is not None:
            p, p_fwe = p_values(acc, null), family_wise_p_values(acc, null)
            rsa_p = p_values(rsa_obs, rsa_null)
            mu, sd = null.mean(axis=0), null.std(axis=0, ddof=1) if n_perm > 1 else null.std(axis=0)
        else:
            p = p_fwe = rsa_p = mu = sd = np.full(len(layers), np.nan)
        for j, lay in enumerate(layers):
            rows.append({
                "network": first["network"], "model": first["model"],
                "word_model": first["word_model"], "group": g, "layer": lay, "layer_index": j,
                "module": meta[lay]["module"], "k": first["k"], "two_vs_two": float(acc[j]),
                "p_value": float(p[j]), "p_value_fwe": float(p_fwe[j]),
                "null_mean": float(mu[j]), "null_sd": float(sd[j]), "rsa": float(rsa_obs[j]),
                "rsa_p_value": float(rsa_p[j]), "n_permutations": n_perm,
                "significant": significant(p[j], alpha), "reason": why[g][j],
            })
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

