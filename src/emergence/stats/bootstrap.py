"""Bootstrap over concepts: the sampling distribution of every measure, for confidence
intervals and paired comparisons.

Sampling
--------
Sample ``i`` draws the k concepts with replacement: counts ``m`` (k,) int64,
``m = bincount(default_rng([seed, BOOTSTRAP_STREAM, i]).integers(0, k, size=k))``
(:func:`bootstrap_counts`). It depends on nothing but the seed, its index and k, so the
same samples serve every layer, group, network and word model (what makes comparisons
between them paired, and the mean over groups one sample). Work is cut on the absolute
grid of :func:`~emergence.stats.permutation.batch_ranges`, and each sample is computed
alone by one thread in a fixed order: outputs are bit-identical for any sharding, batch
size or thread count.

The duplicate rule: a copy is the concept itself
------------------------------------------------
The sample is materialised in concept order, ``idx = repeat(arange(k), m)`` (k positions,
copies adjacent), and every measure is computed on ``W[idx][:, idx]`` and
``I[idx][:, idx]`` with copies of one concept treated as that concept:

* **2 vs 2**: every pair of positions ``s < t`` whose concepts differ is tested; for the
  pair, every column that is a copy of either held-out concept is removed from the rows
  (as the held-out columns themselves are in the paper's test), and the pair passes as in
  the paper (strict, ties within ``TIE_TOLERANCE`` fail). A correlation over a constant
  (or empty) row is undefined and the pair fails. Accuracy = passes / tested pairs (NaN
  when no pair can be tested: one concept drawn k times). Pairs of copies of one concept
  are not tested (they are the same concept; cf. rsatoolbox dropping identical patterns).
* **RSA**: the entries ``(s < t)`` whose concepts differ are correlated (Pearson; Spearman
  with average ranks of those entries; Kendall's tau-a of those entries); NaN when either
  side is constant.
* **CKA**: ``K_b = H K[idx][:, idx] H`` (re-centred over the k positions), likewise the word
  Gram; biased CKA as :func:`~emergence.stats.cka.cka_from_gram`. Debiased: additionally
  every entry between two copies of one concept is zeroed (as the diagonal is) before the
  unbiased HSIC with n = k. NaN when a side has no variance left (:data:`CKA_NEGLIGIBLE`).
* **mutual kNN**: a position's candidates are the positions of other concepts (copies
  excluded like the concept itself), ties to the lower position; the mean over the k
  positions of the fraction of shared neighbours. NaN when some position has fewer than
  ``knn_k`` candidates.

Computation
-----------
Nothing is materialised: each measure is the weighted form of the rule on the drawn
concepts ``g`` (about 63 % of k) with integer weights (:mod:`._bootstrap_kernels`,
:mod:`._bootstrap_measures`). For the
2 vs 2, pair ``(a, b)`` of distinct drawn concepts stands for its ``m_a m_b`` position
pairs, which all have the same rows; the Pearson correlations come from weighted
sufficient statistics with ``C = W_g diag(m_g) I_gᵀ`` (one float64 matmul of the drawn
concepts, in a fixed order), the removed columns subtracted with their weights. With
exactly four drawn concepts every correlation is over two points, exactly +-1, and the
pairs are decided exactly. RSA entries ``(a < b)`` weigh ``m_a m_b``; Kendall's numerator
is an exact integer (a weighted Fenwick-tree count). All measures are checked against a
literal implementation that materialises ``idx`` (tests/literal.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.device import resolve_device
from emergence.stats.permutation import batch_ranges
from emergence.stats.two_vs_two import MIN_CONCEPTS, TIE_TOLERANCE

if TYPE_CHECKING:
    import torch

__all__ = [
    "BOOTSTRAP_MEASURES",
    "BOOTSTRAP_STREAM",
    "bootstrap_counts",
    "bootstrap_distribution",
    "bootstrap_samples",
    "bootstrap_statistics",
]

BOOTSTRAP_STREAM = 0x626F6F74
"""Second entry of every bootstrap seed sequence ("boot"): keeps the samples apart from the
permutations, ``default_rng([seed, i])``."""

BOOTSTRAP_MEASURES = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")
RSA_METHODS = ("pearson", "spearman", "kendall")

CKA_NEGLIGIBLE = 1e-10
"""A side whose (unbiased) HSIC with itself is at most this times the scale of its
materialised Gram (sum of squared entries; debiased: those between different concepts, over
n (n - 3)) has no variance left in the sample (e.g. two concepts drawn, or concepts with
identical features): its CKA is NaN, not a ratio of rounding noise."""


def bootstrap_counts(seed: int, index: int, k: int) -> NDArray[np.int64]:
    """Sample ``index`` under ``seed``: how often each of the k concepts is drawn (k,)."""
    draws = np.random.default_rng([int(seed), BOOTSTRAP_STREAM, int(index)]).integers(
        0, k, size=k)
    return np.bincount(draws, minlength=k).astype(np.int64, copy=False)


def bootstrap_samples(seed: int, start: int, stop: int, k: int) -> NDArray[np.int64]:
    """Samples ``start .. stop-1`` stacked: (stop - start, k) counts."""
    out = np.empty((max(stop - start, 0), k), dtype=np.int64)
    for i in range(start, stop):
        out[i - start] = bootstrap_counts(seed, i, k)
    return out


def _upper(m: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64],
                                             NDArray[np.bool_]]:
    """Upper-triangle entries, their stable sort order and where runs of equal values start."""
    v = m[np.triu_indices(m.shape[0], k=1)]
    order = np.argsort(v, kind="stable")
    s = v[order]
    new = np.ones(len(v), dtype=bool)
    new[1:] = s[1:] != s[:-1]
    return v, order.astype(np.int64), new


def _neighbour_order(s: NDArray[np.float64]) -> NDArray[np.int64]:
    """Each concept's other concepts, most similar first, ties to the lower index (k, k-1)."""
    t = np.array(s, dtype=np.float64)
    np.fill_diagonal(t, -np.inf)
    return np.argsort(-t, axis=1, kind="stable")[:, :-1].astype(np.int64)


class _Prepared:
    """What the kernels need from the fixed inputs, computed once per call."""

    def __init__(self, w: NDArray[np.float64], mats: NDArray[np.float64],
                 kw: NDArray[np.float64] | None, kis: NDArray[np.float64] | None,
                 scored: NDArray[np.bool_], measures: Sequence[str], rsa_method: str,
                 knn_k: int, device: torch.device | None) -> None:
        self.w, self.mats, self.kw, self.kis, self.scored = w, mats, kw, kis, scored
        self.device = device  # None: the CPU (torch is not imported)
        self.measures, self.rsa_method, self.knn_k = tuple(measures), rsa_method, knn_k
        k = w.shape[0]
        self.symmetric = np.array([np.array_equal(m.view(np.int64), m.view(np.int64).T)
                                   for m in mats], dtype=bool)
        if "rsa" in measures:
            ea, eb = np.triu_indices(k, k=1)
            self.ea, self.eb = ea.astype(np.int64), eb.astype(np.int64)
            self.xw, self.ow, self.gw = _upper(w)
            ups = [_upper(m if ok else np.zeros((k, k))) for m, ok in zip(mats, scored,
                                                                         strict=True)]
            self.yl = np.stack([u[0] for u in ups]) if ups else np.zeros((0, len(ea)))
            self.ol = np.stack([u[1] for u in ups]) if ups else np.zeros((0, len(ea)), np.int64)
            self.gl = np.stack([u[2] for u in ups]) if ups else np.zeros((0, len(ea)), bool)
            if rsa_method == "kendall":
                ranks = [np.unique(y, return_inverse=True) for y in self.yl]
                self.yr = (np.stack([r[1] for r in ranks]).astype(np.int64) if ranks
                           else np.zeros((0, len(ea)), np.int64))
                self.n_ranks = np.array([len(r[0]) for r in ranks], dtype=np.int64)
        if "mutual_knn" in measures:
            self.ow_knn = _neighbour_order(w)
            self.ol_knn = [_neighbour_order(m) if ok else None for m, ok in zip(mats, scored,
                                                                             strict=True)]

    def evaluate(self, counts: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
        from emergence.stats import _bootstrap_kernels as bk
        from emergence.stats import _bootstrap_measures as bm

        out: dict[str, NDArray[np.float64]] = {}
        n_l = len(self.mats)
        for measure in self.measures:
            if measure == "two_vs_two" and self.device is not None \
                    and self.device.type != "cpu":
                from emergence.stats._bootstrap_torch import two_vs_two_torch

                out[measure] = two_vs_two_torch(self.w, self.mats, self.scored, counts,
                                                TIE_TOLERANCE, self.device)
            elif measure == "two_vs_two":
                out[measure] = bk.two_vs_two_batch(self.w, self.mats, self.scored,
                                                   self.symmetric, counts, TIE_TOLERANCE)
            elif measure == "rsa" and self.rsa_method == "kendall":
                out[measure] = bm.kendall_batch(self.xw, self.ow, self.gw, self.yr,
                                                self.n_ranks, self.ea, self.eb, counts,
                                                self.scored)
            elif measure == "rsa":
                out[measure] = bm.rank_pearson_batch(
                    self.xw, self.ow, self.gw, self.yl, self.ol, self.gl, self.ea, self.eb,
                    counts, self.scored, self.rsa_method == "spearman")
            elif measure in ("cka", "cka_debiased"):
                out[measure] = bm.cka_batch(self.kw, self.kis, self.scored, counts,
                                            measure == "cka_debiased", CKA_NEGLIGIBLE)
            else:  # mutual_knn
                res = np.full((len(counts), n_l), np.nan)
                for j, order in enumerate(self.ol_knn):
                    if order is not None:
                        res[:, j] = bm.mutual_knn_batch(self.ow_knn, order, counts,
                                                        self.knn_k)
                out[measure] = res
        return out


def _prepare(word_similarity: ArrayLike, image_similarities: ArrayLike | Sequence[ArrayLike],
             measures: Sequence[str], rsa_method: str, word_gram: ArrayLike | None,
             image_grams: ArrayLike | Sequence[ArrayLike] | None, knn_k: int,
             device: str | torch.device) -> _Prepared:
    """Check the inputs (one-line ValueErrors) and precompute what does not vary by sample."""
    unknown = [m for m in measures if m not in BOOTSTRAP_MEASURES]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; choose from {BOOTSTRAP_MEASURES}")
    if rsa_method not in RSA_METHODS:
        raise ValueError(f"unknown RSA method {rsa_method!r}; use one of {RSA_METHODS}")
    w = np.ascontiguousarray(word_similarity, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"word similarity W must be a square k x k matrix, got {w.shape}")
    k = w.shape[0]
    need = MIN_CONCEPTS if "two_vs_two" in measures else 4
    if k < need:
        raise ValueError(f"the bootstrap of {list(measures)} needs at least {need} concepts, "
                         f"got k={k}")
    if not np.isfinite(w).all():
        raise ValueError("word similarity W has non-finite entries (a constant embedding row?)")
    mats = np.ascontiguousarray(np.asarray(image_similarities, dtype=np.float64).reshape(
        -1, k, k)) if len(image_similarities) else np.zeros((0, k, k))
    scored = np.isfinite(mats).all(axis=(1, 2))
    kw = kis = None
    if {"cka", "cka_debiased"} & set(measures):
        if word_gram is None or image_grams is None:
            raise ValueError("cka and cka_debiased need word_gram and image_grams (centred "
                             "linear Gram matrices, k x k and one per layer)")
        kw = np.ascontiguousarray(word_gram, dtype=np.float64)
        kis = np.ascontiguousarray(np.asarray(image_grams, dtype=np.float64).reshape(-1, k, k))
        if kw.shape != (k, k) or len(kis) != len(mats):
            raise ValueError(f"word_gram must be {k} x {k} and image_grams one {k} x {k} per "
                             f"layer ({len(mats)}); got {kw.shape} and {kis.shape}")
        if not np.isfinite(kw).all():
            raise ValueError("word_gram has non-finite entries")
        scored &= np.isfinite(kis).all(axis=(1, 2))
    elif image_grams is not None:
        kis = np.asarray(image_grams, dtype=np.float64).reshape(-1, k, k)
        if len(kis) == len(mats):
            scored &= np.isfinite(kis).all(axis=(1, 2))
    if "mutual_knn" in measures and not 1 <= knn_k <= k - 1:
        raise ValueError(f"knn_k = {knn_k}: choose 1 <= knn_k <= {k - 1} (concepts - 1)")
    return _Prepared(w, mats, kw, kis, scored, measures, rsa_method, knn_k,
                     None if device == "cpu" else resolve_device(device))


def bootstrap_statistics(
    word_similarity: ArrayLike,
    image_similarities: ArrayLike | Sequence[ArrayLike],
    counts: ArrayLike,
    *,
    measures: Sequence[str] = ("two_vs_two", "rsa"),
    rsa_method: str = "pearson",
    word_gram: ArrayLike | None = None,
    image_grams: ArrayLike | Sequence[ArrayLike] | None = None,
    knn_k: int = 10,
    device: str | torch.device = "cpu",
) -> dict[str, NDArray[np.float64]]:
    """Each measure for the given samples (``counts``, B x k: draws per concept) under the
    duplicate rule (module doc): {measure: (B, L)}. A layer that cannot be scored
    (non-finite I or Gram) is NaN in every measure. ``device``: as
    :func:`bootstrap_distribution`."""
    prep = _prepare(word_similarity, image_similarities, measures, rsa_method, word_gram,
                    image_grams, knn_k, device)
    c = np.ascontiguousarray(counts, dtype=np.int64)
    k = prep.w.shape[0]
    if c.ndim != 2 or c.shape[1] != k or (c < 0).any() or (c.sum(axis=1) != k).any():
        raise ValueError(f"counts must be (B, {k}) non-negative integers summing to {k} "
                         f"per row; got shape {c.shape}")
    return prep.evaluate(c)


def bootstrap_distribution(
    word_similarity: ArrayLike,
    image_similarities: ArrayLike | Sequence[ArrayLike],
    *,
    seed: int,
    start: int,
    stop: int,
    batch_size: int = 8,
    measures: Sequence[str] = ("two_vs_two", "rsa"),
    rsa_method: str = "pearson",
    word_gram: ArrayLike | None = None,
    image_grams: ArrayLike | Sequence[ArrayLike] | None = None,
    knn_k: int = 10,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, NDArray[np.float64]]:
    """Bootstrap samples ``start .. stop-1`` of each measure: {measure: (stop - start, L),
    "index": arange(start, stop)}, bit-identical for any sharding of the range.

    ``device``: on CUDA the 2 vs 2 test (the costly measure: a D x D x D matmul per sample
    and layer) runs in torch float64 (:mod:`._bootstrap_torch`); the other measures, O(k^2)
    per sample, always run on the CPU kernels.
    """
    prep = _prepare(word_similarity, image_similarities, measures, rsa_method, word_gram,
                    image_grams, knn_k, device)
    k = prep.w.shape[0]
    n = max(stop - start, 0)
    out = {m: np.empty((n, len(prep.mats))) for m in measures}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="bootstrap", unit="sample", mininterval=2.0)
    for lo, hi in batch_ranges(start, stop, batch_size):
        values = prep.evaluate(bootstrap_samples(seed, lo, hi, k))
        for m in measures:
            out[m][lo - start:hi - start] = values[m]
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return {**out, "index": np.arange(start, stop)}
