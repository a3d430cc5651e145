"""The jackknife over concepts: every measure with none, one or two concepts deleted, for
calibrated confidence intervals and paired comparisons (:mod:`emergence.stats.intervals`).

Samples
-------
For k concepts and ``n_pairs`` = P, the samples are, in this order (:func:`jackknife_deletions`):

* sample 0: nothing deleted (the measure itself, recomputed by the same kernel);
* samples 1..k: concept ``i - 1`` deleted (the delete-one jackknife);
* samples k+1..k+P: a pair of concepts deleted. The pairs are P distinct pairs drawn
  without replacement from ``default_rng([seed, JACKKNIFE_STREAM, k])`` (every pair, in
  row-major order, when P >= k (k - 1) / 2), sorted.

A sample depends on nothing but the seed, k and P, so every layer, group, network and word
model with the same concepts shares it: differences are paired sample by sample, and the
mean over groups is one sample. Work is cut on the absolute grid of
:func:`~emergence.stats.permutation.batch_ranges`; each sample is computed by one thread in
a fixed order, so outputs are bit-identical for any sharding, batch size or thread count.

Measures on the kept concepts
-----------------------------
A deletion is a subset of the concepts; each measure is the measure of that subset, as if
the study had those concepts only (the similarity matrices restricted to them; the Gram
matrices re-centred over them). The 2 vs 2, RSA (Pearson) and CKA have O(k²) / O(k)
deletion kernels (:mod:`._jackknife_kernels`); RSA with Spearman or Kendall and mutual kNN
use the bootstrap's weighted kernels with 0/1 weights (:mod:`emergence.stats.bootstrap`).

Two companions (:data:`COMPANIONS`) are stored beside two measures whose deletion values
change in jumps (a pair's pass/fail, a neighbour list), for the variance correction
(:mod:`emergence.stats.intervals`): ``two_vs_two_margin``, the mean over the tested pairs
of the margin ``(r11 + r22) - (r12 + r21)`` (the smooth quantity the 2 vs 2 thresholds);
``mutual_knn_fixed``, mutual kNN with every concept's neighbour lists fixed to those among
all k concepts (a U-statistic of the shared-neighbour indicators).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.permutation import batch_ranges

if TYPE_CHECKING:
    import torch

__all__ = ["COMPANIONS", "DEFAULT_PAIRS", "JACKKNIFE_STREAM", "jackknife_deletions",
           "jackknife_distribution", "jackknife_pairs", "jackknife_size", "n_pairs_used"]

JACKKNIFE_STREAM = 0x6A61636B
"""Second entry of the pair-drawing seed sequence ("jack")."""

DEFAULT_PAIRS = 1000
"""Pairs deleted by default (``intervals.pairs``): enough that the pair interactions' mean
is known to a few per cent."""

COMPANIONS = {"two_vs_two": "two_vs_two_margin", "mutual_knn": "mutual_knn_fixed"}
"""The companion statistic stored beside a measure (module doc)."""

MIN_KEPT = {"two_vs_two": 5, "rsa": 4, "cka": 4, "cka_debiased": 5, "mutual_knn": 3}
"""Fewest concepts a measure needs after deleting two (2 vs 2: its MIN_CONCEPTS; debiased
CKA: n > 3; mutual kNN: knn_k + 1, checked separately)."""


def n_pairs_used(k: int, n_pairs: int) -> int:
    """How many pairs are deleted: ``n_pairs``, at most every pair of the k concepts."""
    return max(0, min(int(n_pairs), k * (k - 1) // 2))


def jackknife_size(k: int, n_pairs: int) -> int:
    """Samples per layer: 1 + k + the pairs used."""
    return 1 + k + n_pairs_used(k, n_pairs)


def jackknife_pairs(seed: int, k: int, n_pairs: int) -> NDArray[np.int64]:
    """The deleted pairs (P, 2), ``a < b``, sorted (module doc)."""
    p = n_pairs_used(k, n_pairs)
    total = k * (k - 1) // 2
    a, b = np.triu_indices(k, k=1)
    if p < total:
        pick = np.sort(np.random.default_rng([int(seed), JACKKNIFE_STREAM, int(k)]).choice(
            total, size=p, replace=False))
        a, b = a[pick], b[pick]
    return np.stack([a, b], axis=1).astype(np.int64)


def jackknife_deletions(seed: int, k: int, n_pairs: int, start: int = 0,
                        stop: int | None = None) -> NDArray[np.int64]:
    """Samples ``start .. stop-1`` as rows of deleted concepts (-1: none), (n, 2)."""
    pairs = jackknife_pairs(seed, k, n_pairs)
    rows = np.full((1 + k + len(pairs), 2), -1, dtype=np.int64)
    rows[1:k + 1, 0] = np.arange(k)
    rows[k + 1:] = pairs
    return rows[start:stop]


def _counts(deleted: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """0/1 weights of the kept concepts, (n, k)."""
    out = np.ones((len(deleted), k), dtype=np.int64)
    for col in range(2):
        rows = np.flatnonzero(deleted[:, col] >= 0)
        out[rows, deleted[rows, col]] = 0
    return out


def _knn_fixed(w: NDArray[np.float64], mats: NDArray[np.float64],
               scored: NDArray[np.bool_], deleted: NDArray[np.int64],
               knn_k: int) -> NDArray[np.float64]:
    """``mutual_knn_fixed`` per sample and layer: (k - 1) / knn_k times the mean over
    ordered pairs (a, b) of kept concepts of s_ab = [b is among a's knn_k nearest in both
    spaces, among all k concepts]. Equals mutual kNN with nothing deleted."""
    from emergence.stats.knn import nearest_neighbours

    k = w.shape[0]
    rows = np.arange(k)[:, None]
    in_w = np.zeros((k, k), dtype=bool)
    in_w[rows, nearest_neighbours(w, knn_k)] = True
    out = np.full((len(deleted), len(mats)), np.nan)
    for j, m in enumerate(mats):
        if not scored[j]:
            continue
        in_i = np.zeros((k, k), dtype=bool)
        in_i[rows, nearest_neighbours(m, knn_k)] = True
        s = (in_w & in_i).astype(np.int64)
        total = int(s.sum())
        line = s.sum(axis=0) + s.sum(axis=1)  # what concept c takes away: row c and column c
        for r, (d1, d2) in enumerate(deleted):
            kept, left = k, total
            if d1 >= 0:
                kept, left = kept - 1, left - int(line[d1])
            if d2 >= 0:
                kept, left = kept - 1, left - int(line[d2])
            if d1 >= 0 and d2 >= 0:
                left += int(s[d1, d2] + s[d2, d1])
            out[r, j] = (k - 1) / knn_k * left / (kept * (kept - 1))
    return out


def jackknife_distribution(
    word_similarity: ArrayLike,
    image_similarities: ArrayLike | Sequence[ArrayLike],
    *,
    seed: int,
    n_pairs: int,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 64,
    measures: Sequence[str] = ("two_vs_two", "rsa"),
    rsa_method: str = "pearson",
    word_gram: ArrayLike | None = None,
    image_grams: ArrayLike | Sequence[ArrayLike] | None = None,
    knn_k: int = 10,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, NDArray[np.float64]]:
    """Jackknife samples ``start .. stop-1`` (default: all, :func:`jackknife_size`) of each
    measure and companion: {name: (n, L), "index": arange(start, stop)}, bit-identical for
    any sharding of the range. ``device``: CUDA is accepted and ignored (every deletion
    kernel is O(k²) or less on the CPU)."""
    from emergence.stats import _jackknife_kernels as jk
    from emergence.stats.bootstrap import CKA_NEGLIGIBLE, _prepare
    from emergence.stats.two_vs_two import TIE_TOLERANCE

    prep = _prepare(word_similarity, image_similarities, measures, rsa_method, word_gram,
                    image_grams, knn_k, "cpu")
    k = prep.w.shape[0]
    total = jackknife_size(k, n_pairs)
    stop = total if stop is None else min(stop, total)
    if not 0 <= start <= stop:
        raise ValueError(f"jackknife samples {start}..{stop} outside 0..{total}")
    need = max(MIN_KEPT[m] for m in measures) + 2
    if "mutual_knn" in measures:
        need = max(need, knn_k + 3)
    if k < need:
        raise ValueError(f"the jackknife of {list(measures)} needs at least {need} concepts "
                         f"(two deleted, {need - 2} kept), got k={k}")
    deleted_all = jackknife_deletions(seed, k, n_pairs, start, stop)
    names = [*measures, *(COMPANIONS[m] for m in measures if m in COMPANIONS)]
    out = {m: np.empty((stop - start, len(prep.mats))) for m in names}
    generic = [m for m in measures if m == "mutual_knn" or (m == "rsa"
                                                             and rsa_method != "pearson")]
    prep_generic = (_prepare(prep.w, prep.mats, generic, rsa_method, None, image_grams, knn_k,
                             "cpu")
                    if generic else None)
    layer_2v2 = []
    if "two_vs_two" in measures:
        wst = jk.row_stats(prep.w)
        layer_2v2 = [(wst, jk.row_stats(m), jk.cross_full(prep.w, m)) if ok else None
                     for m, ok in zip(prep.mats, prep.scored, strict=True)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stop - start, desc="jackknife", unit="sample", mininterval=2.0)
    for lo, hi in batch_ranges(start, stop, batch_size):
        deleted = deleted_all[lo - start:hi - start]
        rows = slice(lo - start, hi - start)
        for m in measures:
            if m == "two_vs_two":
                for j, pre in enumerate(layer_2v2):
                    if pre is None:
                        out[m][rows, j] = out["two_vs_two_margin"][rows, j] = np.nan
                        continue
                    acc, margin = jk.two_vs_two_deleted(prep.w, prep.mats[j], *pre, deleted,
                                                        TIE_TOLERANCE)
                    out[m][rows, j], out["two_vs_two_margin"][rows, j] = acc, margin
            elif m == "rsa" and rsa_method == "pearson":
                out[m][rows] = jk.rsa_pearson_deleted(prep.w, prep.mats, prep.scored, deleted)
            elif m in ("cka", "cka_debiased"):
                out[m][rows] = jk.cka_deleted(prep.kw, prep.kis, prep.scored, deleted,
                                              m == "cka_debiased", CKA_NEGLIGIBLE)
        if prep_generic is not None:
            values = prep_generic.evaluate(_counts(deleted, k))
            for m in generic:
                out[m][rows] = values[m]
        if "mutual_knn" in measures:
            out["mutual_knn_fixed"][rows] = _knn_fixed(prep.w, prep.mats, prep.scored,
                                                       deleted, knn_k)
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return {**out, "index": np.arange(start, stop)}

