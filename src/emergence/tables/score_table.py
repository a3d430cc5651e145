"""The rows of ``scores.tsv`` (every measure) and the permutation and jackknife shards.

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
from emergence.stats.measures import MeasureSpec
from emergence.stats.permutation import permutation_null
from emergence.stats.two_vs_two import TwoVsTwo

__all__ = [
    "SCORE_COLUMNS",
    "jackknife_shard",
    "null_shard",
    "score_columns",
    "score_rows",
    "undefined_reason",
    "warn_undefined",
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


def warn_undefined(g: GroupSimilarities, what: str) -> list[str]:
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
        reasons = warn_undefined(g, "every measure is nan")
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
            warn_undefined(g, f"its {kind} values are nan")
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
