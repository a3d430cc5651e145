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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.activations import GroupSimilarities
from emergence.formats.nulls import write_null_shard
from emergence.significance import (  # the significance table lives there; names kept here
    SIGNIFICANCE_COLUMNS,
    percentile_band,
    significance_columns,
    significance_rows,
)
from emergence.stats.measures import MeasureSpec
from emergence.stats.one_vs_two import MIN_REFERENCE, OneVsTwo, one_vs_two, pool
from emergence.stats.permutation import permutation_null
from emergence.stats.two_vs_two import TwoVsTwo

__all__ = [
    "ONE_VS_TWO_COLUMNS",
    "ONE_VS_TWO_TEST_COLUMNS",
    "SCORE_COLUMNS",
    "SIGNIFICANCE_COLUMNS",
    "jackknife_shard",
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
                     wnids: Sequence[str], names: Sequence[str] | None = None,
                     n_pairs: int | None = None) -> None:
    """One shard file of ``kind`` (permutation or jackknife): ``draw(group)`` gives the
    samples ``start .. stop-1`` of every measure (``names``: and companion) and layer of
    that group."""

    def values() -> Iterator[tuple[str, dict[str, NDArray[np.float64]]]]:
        for g in groups:
            _warn_undefined(g, f"its {kind} values are nan")
            yield g.group, draw(g)

    first = groups[0]
    write_null_shard(path, network=first.network, model=first.model, word_model=word_model,
                     seed=seed, start=start, stop=stop, batch_size=batch_size,
                     rsa_method=spec.rsa_method, layer_names=first.layers, k=w_mat.shape[0],
                     nulls=values(), measures=names or spec.names, kind=kind, concepts=wnids,
                     knn_k=spec.knn_k, n_pairs=n_pairs)


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


def jackknife_shard(path: str | os.PathLike[str], word_model: str, w_mat: NDArray[np.float64],
                    groups: Sequence[GroupSimilarities], *, seed: int, n_pairs: int,
                    shards: int, shard: int, batch_size: int,
                    measures: MeasureSpec | None = None,
                    word_gram: NDArray[np.float64] | None = None,
                    progress: bool = True) -> tuple[int, int]:
    """Shard ``shard`` of ``shards`` of the jackknife samples (nothing, each concept, then
    ``n_pairs`` pairs of concepts deleted: :mod:`emergence.stats.jackknife`; the samples
    depend on the seed, k and ``n_pairs`` only, so every group, layer, network and word
    model with the same concepts shares them) of every measure that gets an interval and
    its companion, for every group and layer, in one file. Returns the sample range."""
    from emergence.stats.jackknife import jackknife_distribution, jackknife_size
    from emergence.stats.permutation import shard_range
    from emergence.uncertainty import WITHHELD, jackknife_names

    spec = measures or MeasureSpec()
    k = w_mat.shape[0]
    spec.check_k(k)
    names = tuple(m for m in spec.names if m not in WITHHELD)
    start, stop = shard_range(jackknife_size(k, n_pairs), shards, shard, batch_size)

    def draw(g: GroupSimilarities) -> dict[str, NDArray[np.float64]]:
        return jackknife_distribution(
            w_mat, list(g.similarity), seed=seed, n_pairs=n_pairs, start=start, stop=stop,
            batch_size=batch_size, measures=names, rsa_method=spec.rsa_method,
            word_gram=word_gram, image_grams=None if g.gram is None else list(g.gram),
            knn_k=spec.knn_k, progress=progress)

    stored = jackknife_names(spec.names)
    _resampled_shard(path, "jackknife", word_model, w_mat, groups, draw, seed=seed,
                     start=start, stop=stop, batch_size=batch_size, spec=spec,
                     wnids=groups[0].wnids, names=stored, n_pairs=n_pairs)
    return start, stop


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

