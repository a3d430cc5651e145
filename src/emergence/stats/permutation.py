"""Permutation tests: the null distributions of 2 vs 2 accuracy, RSA, CKA and mutual kNN.

Significance follows the paper: shuffle the concepts of one space (here the image
space, ``I -> I[p][:, p]``) and rerun the full similarity-encoding analysis.

Reproducibility contract
------------------------
* Permutation ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: it
  depends on nothing but the seed, its index and k. The same permutations
  therefore serve every layer, group and network, which is what makes the
  family-wise (max over layers) correction and the mean over groups valid.
* Work is batched on a fixed grid of absolute indices (``[j*B, (j+1)*B)``), so a
  permutation's value never depends on how the range was cut into shards: the
  aggregate is bit-identical for any number of shards.
* p-values use the +1 correction: ``p = (1 + #{null >= observed}) / (1 + n)``
  (:func:`p_values`, :func:`p_value`, :func:`family_wise_p_values`: every p-value of the
  pipeline, the 1 vs 2 test's included), and a result is significant when
  ``p < alpha`` (:func:`significant`).

Measures
--------
:data:`MEASURES` can be asked for (``measures=``); every one is scored on the same
permutations (drawn once per batch and shared by every measure and layer), so the
family-wise correction and the mean over groups hold for each. The 2 vs 2 and RSA nulls
are those of the paper's analysis; RSA's method is Pearson, Spearman or Kendall's tau-a
(:class:`~emergence.stats.rsa.KendallNull`); CKA (biased, debiased) permutes the image
Gram matrix ``Ki -> Ki[p][:, p]`` (:class:`~emergence.stats.cka.CkaNull`), mutual kNN the
image similarity (:class:`~emergence.stats.knn.MutualKnnNull`). Each null entry is the
observed statistic of the permuted matrices (exactly, or to float64 rounding for CKA).

Undefined layers
----------------
An image matrix with NaN entries (a concept with constant activations in that layer)
cannot be scored: its null column is NaN, and so are its p-values. The family-wise
correction takes the maximum over the layers that can be scored only. When image Gram
matrices are given, a layer whose Gram matrix has a non-finite entry cannot be scored
either: a NaN column for every measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.device import resolve_device
from emergence.stats.cka import CkaNull, permuted_upper_dot
from emergence.stats.knn import MutualKnnNull
from emergence.stats.rsa import METHODS, KendallNull, centred_norm, rsa_matrix, upper_triangle
from emergence.stats.two_vs_two import TwoVsTwo

if TYPE_CHECKING:
    import torch

__all__ = [
    "MEASURES",
    "batch_ranges",
    "family_wise_p_values",
    "p_values",
    "permutation",
    "permutation_null",
    "p_value",
    "permutations",
    "plus_one_p",
    "shard_range",
    "significant",
]


MEASURES = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")
"""Every measure with a permutation null, in canonical order (the names of the outputs)."""


def permutation(seed: int, index: int, k: int) -> NDArray[np.int64]:
    """Permutation number ``index`` of ``k`` concepts under ``seed``."""
    return np.random.default_rng([int(seed), int(index)]).permutation(k).astype(np.int64)


def permutations(seed: int, start: int, stop: int, k: int) -> NDArray[np.int64]:
    """Permutations ``start .. stop-1`` stacked into a (stop - start) x k array."""
    return np.stack([permutation(seed, i, k) for i in range(start, stop)]) if stop > start \
        else np.empty((0, k), dtype=np.int64)


def batch_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """Cut ``[start, stop)`` on the absolute grid of multiples of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lo = start
    while lo < stop:
        hi = min(stop, (lo // batch_size + 1) * batch_size)
        yield lo, hi
        lo = hi


def shard_range(n_permutations: int, n_shards: int, shard: int, batch_size: int) -> tuple[int, int]:
    """The permutation indices ``[start, stop)`` of ``shard`` (0-based) out of ``n_shards``.

    Shards are whole batches, as even as possible; a shard may be empty when there
    are more shards than batches.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    n_batches = -(-n_permutations // batch_size)
    lo_b = shard * n_batches // n_shards
    hi_b = (shard + 1) * n_batches // n_shards
    return min(lo_b * batch_size, n_permutations), min(hi_b * batch_size, n_permutations)


def permutation_null(
    word_similarity: ArrayLike,
    image_similarities: Sequence[ArrayLike],
    *,
    seed: int,
    start: int,
    stop: int,
    batch_size: int = 64,
    rsa_method: str = "pearson",
    device: str | torch.device = "cpu",
    progress: bool = False,
    measures: Sequence[str] = ("two_vs_two", "rsa"),
    word_gram: ArrayLike | None = None,
    image_grams: Sequence[ArrayLike] | None = None,
    knn_k: int = 10,
) -> dict[str, NDArray[np.float64]]:
    """Null distributions of the ``measures`` for permutations ``start .. stop-1``.

    Parameters
    ----------
    word_similarity:
        ``W`` (k x k), held fixed.
    image_similarities:
        One ``I`` (k x k) per layer; each is permuted by the same permutations.
    measures:
        Any of :data:`MEASURES`. ``"cka"`` and ``"cka_debiased"`` need ``word_gram``
        (``Kw``, k x k) and ``image_grams`` (one ``Ki`` per layer, k x k: centred linear
        Gram matrices, :func:`~emergence.stats.cka.linear_gram`), permuted as ``I``.
    rsa_method:
        ``"pearson"``, ``"spearman"`` or ``"kendall"`` (tau-a).
    knn_k:
        Neighbours per concept of ``"mutual_knn"``.

    Returns
    -------
    dict with one array (stop - start) x n_layers per requested measure, and ``"index"``:
    the permutation indices. A layer whose ``I`` (or, when given, ``Ki``) has NaN or
    infinite entries (it cannot be scored) gets a NaN column in every measure.
    """
    wanted = tuple(dict.fromkeys(measures))
    unknown = [m for m in wanted if m not in MEASURES]
    if unknown or not wanted:
        raise ValueError(f"unknown measures {unknown}; choose among {', '.join(MEASURES)}")
    if rsa_method not in METHODS:
        raise ValueError(f"unknown RSA method {rsa_method!r}; use "
                         + " or ".join(repr(m) for m in METHODS))
    dev = resolve_device(device)
    w = np.asarray(word_similarity, dtype=np.float64)
    engine = TwoVsTwo(word_similarity, device=dev) if "two_vs_two" in wanted else None
    if w.ndim != 2 or w.shape[0] != w.shape[1] or not np.isfinite(w).all():
        raise ValueError(f"the word similarity must be a finite k x k matrix, got {w.shape}")
    k = w.shape[0]
    mats = [np.ascontiguousarray(m, dtype=np.float64) for m in image_similarities]
    for j, m in enumerate(mats):
        if m.shape != (k, k):
            raise ValueError(f"every image similarity must be {k} x {k}, got {m.shape}")
        if not np.array_equal(m, m.T, equal_nan=True):
            raise ValueError(f"image similarity matrices must be symmetric (layer {j} is not)")
    scored = [bool(np.isfinite(m).all()) for m in mats]
    grams = _image_grams(image_grams, len(mats), k, scored)
    nulls = _measure_nulls(wanted, w, mats, scored, rsa_method, dev, word_gram, grams, knn_k)

    n = max(stop - start, 0)
    out = {name: np.empty((n, len(mats)), dtype=np.float64) for name in wanted}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="permutations", unit="perm", mininterval=2.0)
    for lo, hi in batch_ranges(start, stop, batch_size):
        perms = permutations(seed, lo, hi, k)  # one draw per batch, shared by everything
        rows = slice(lo - start, hi - start)
        for j, m in enumerate(mats):
            if not scored[j]:  # undefined correlations: no null
                for name in wanted:
                    out[name][rows, j] = np.nan
                continue
            if engine is not None:
                out["two_vs_two"][rows, j] = engine.permuted_accuracy(m, perms)
            for layer_null in nulls[j]:
                for name, values in layer_null(perms).items():
                    out[name][rows, j] = values
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return {**out, "index": np.arange(start, stop)}


def _image_grams(image_grams: Sequence[ArrayLike] | None, n_layers: int, k: int,
                 scored: list[bool]) -> list[NDArray[np.float64]] | None:
    """The image Gram matrices as float64 (None when not given); a layer whose Gram matrix
    has a non-finite entry is marked as not scored (``scored`` is updated)."""
    if image_grams is None:
        return None
    grams = [np.ascontiguousarray(g, dtype=np.float64) for g in image_grams]
    if len(grams) != n_layers:
        raise ValueError(f"{len(grams)} image Gram matrices for {n_layers} layers")
    for j, g in enumerate(grams):
        if g.shape != (k, k):
            raise ValueError(f"every image Gram matrix must be {k} x {k}, got {g.shape}")
        scored[j] = scored[j] and bool(np.isfinite(g).all())
    return grams


def _measure_nulls(
    wanted: tuple[str, ...], w: NDArray[np.float64], mats: list[NDArray[np.float64]],
    scored: list[bool], rsa_method: str, dev: torch.device, word_gram: ArrayLike | None,
    grams: list[NDArray[np.float64]] | None, knn_k: int,
) -> list[list[Callable[[NDArray[np.int64]], dict[str, NDArray[np.float64]]]]]:
    """Per layer, the null functions of the requested measures other than 2 vs 2:
    ``perms`` (B, k) -> ``{measure: (B,)}`` (nothing for a layer that cannot be scored)."""
    per_layer: list[list[Callable]] = [[] for _ in mats]
    if "rsa" in wanted and rsa_method == "kendall":
        kendall = KendallNull(w)
        for j, m in enumerate(mats):
            if scored[j]:
                per_layer[j].append(_named("rsa", kendall.layer(m)))
    elif "rsa" in wanted:
        # RSA under permutation: the upper triangle of I[p][:, p] holds the same values as
        # I's (I is symmetric), so its mean and norm are invariant; only the dot product
        # with the centred word triangle changes.
        k = w.shape[0]
        iu = np.triu_indices(k, k=1)
        w_ut = upper_triangle(rsa_matrix(w, rsa_method))
        w_centred = np.zeros((k, k))
        w_centred[iu] = w_ut - w_ut.mean()
        w_norm = centred_norm(w_ut)[1]
        for j, m in enumerate(mats):
            if scored[j]:
                r = rsa_matrix(m, rsa_method)
                norm = centred_norm(upper_triangle(r))[1]
                per_layer[j].append(_named("rsa", lambda perms, r=r, norm=norm: _upper_dot(
                    w_centred, r, perms, dev) / (w_norm * norm)))
    biased, debiased = "cka" in wanted, "cka_debiased" in wanted
    if biased or debiased:
        if word_gram is None or grams is None:
            raise ValueError("the CKA nulls need word_gram and image_grams")
        cka = CkaNull(word_gram, biased=biased, debiased=debiased, device=dev)
        if cka.n != w.shape[0]:
            raise ValueError(f"the word Gram matrix is {cka.n} x {cka.n}, the word "
                             f"similarity {w.shape[0]} x {w.shape[0]}")
        for j, g in enumerate(grams):
            if scored[j]:
                per_layer[j].append(cka.layer(g))
    if "mutual_knn" in wanted:
        knn = MutualKnnNull(w, knn_k)
        for j, m in enumerate(mats):
            if scored[j]:
                per_layer[j].append(_named("mutual_knn", knn.layer(m)))
    return per_layer


def _named(name: str, fn: Callable[[NDArray[np.int64]], NDArray[np.float64]]
           ) -> Callable[[NDArray[np.int64]], dict[str, NDArray[np.float64]]]:
    return lambda perms: {name: fn(perms)}


def _upper_dot(w: NDArray[np.float64], m: NDArray[np.float64], perms: NDArray[np.int64],
               dev: torch.device) -> NDArray[np.float64]:
    """sum_{i<j} w[i, j] m[p_i, p_j] per permutation (w is zero on and below the diagonal)."""
    return permuted_upper_dot(w, m, perms, dev)


def _undefined(obs: NDArray[np.float64], nul: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Columns that cannot be tested: NaN observed value or a NaN in the null."""
    if obs.ndim != 1 or nul.ndim != 2 or nul.shape[1] != obs.shape[0]:
        raise ValueError(f"observed must be (L,) and null (n, L); got {obs.shape} and "
                         f"{nul.shape}")
    return np.isnan(obs) | np.isnan(nul).any(axis=0)


def plus_one_p(at_least: NDArray[np.int64], n: int) -> NDArray[np.float64]:
    """The +1-corrected p-value ``(1 + #{null >= observed}) / (1 + n)`` from the counts
    ``at_least`` of null values at or above the observed one, out of ``n``. The one place
    the formula is written (the aggregation counts shard by shard and calls it too)."""
    return (1.0 + at_least) / (1.0 + n)


def _plus_one(obs: NDArray[np.float64], nul: NDArray[np.float64]) -> NDArray[np.float64]:
    """The +1-corrected p-value per column (:func:`plus_one_p`); ``obs`` (L,), ``nul``
    (n, L) or (n, 1) (one null for every column)."""
    with np.errstate(invalid="ignore"):
        return plus_one_p((nul >= obs[None, :]).sum(axis=0), nul.shape[0])


def p_values(observed: ArrayLike, null: ArrayLike) -> NDArray[np.float64]:
    """One-sided permutation p-values with the +1 correction, per column.

    ``observed`` has shape (L,), ``null`` (n, L). A column whose observed value is NaN,
    or whose null holds a NaN, is not tested: its p-value is NaN.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nul = np.asarray(null, dtype=np.float64)
    undefined = _undefined(obs, nul)
    p = _plus_one(obs, nul)
    p[undefined] = np.nan
    return p


def p_value(observed: float, null: ArrayLike) -> float:
    """The +1-corrected permutation p-value of one statistic against its null (n,).

    NaN when ``observed`` is NaN or the null holds a NaN (as :func:`p_values`); with an
    empty null it is 1.0: callers without permutations report NaN themselves.
    """
    return float(p_values([observed], np.reshape(np.asarray(null, dtype=np.float64),
                                                 (-1, 1)))[0])


def family_wise_p_values(observed: ArrayLike, null: ArrayLike) -> NDArray[np.float64]:
    """Max-statistic p-values controlling the family-wise error over layers (columns).

    Each permutation contributes the maximum of its null values over all layers, which
    is valid because the same permutation was applied to every layer. Columns that
    cannot be tested (NaN observed value or NaN null, see :func:`p_values`) get NaN and
    are left out of the maximum: the family is the layers that can be scored.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nul = np.asarray(null, dtype=np.float64)
    undefined = _undefined(obs, nul)
    p = np.full(obs.shape, np.nan)
    if undefined.all():
        return p
    peak = nul[:, ~undefined].max(axis=1)
    p[~undefined] = _plus_one(obs[~undefined], peak[:, None])
    return p


def significant(p: float, alpha: float) -> bool:
    """The decision: ``p < alpha``. An untested (NaN) p-value is not significant."""
    return bool(p < alpha)
