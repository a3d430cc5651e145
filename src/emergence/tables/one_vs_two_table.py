"""The rows of ``one_vs_two/<wm>.tsv`` and ``one_vs_two/<wm>_tests.tsv``: the 1 vs 2 test
(paper sec. 3.3) per group and layer, and pooled over the groups.

A layer that cannot be scored (:func:`~emergence.tables.score_table.undefined_reason`) has
its tests skipped, with the reason in each row and a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.activations import GroupSimilarities
from emergence.stats.one_vs_two import MIN_REFERENCE, OneVsTwo, one_vs_two, pool
from emergence.tables.score_table import warn_undefined

__all__ = ["ONE_VS_TWO_COLUMNS", "ONE_VS_TWO_TEST_COLUMNS", "one_vs_two_rows"]

_log = logging.getLogger(__name__)


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
    layer_reasons = [warn_undefined(g, "its 1 vs 2 tests are skipped") for g in groups]
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

