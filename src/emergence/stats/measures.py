"""The alignment measures scored side by side, and the one place that names them.

Each measure compares the word space and the image space of one layer, rows aligned by
concept, and is a peer of the paper's 2 vs 2 score: a column of ``scores.tsv``, a null from
the same seeded permutations (:func:`emergence.stats.permutation.permutation_null`), a
jackknife from the same deleted concepts
(:func:`emergence.stats.jackknife.jackknife_distribution`), and p-values and intervals in
``significance.tsv``.

========================  ==========================================================
``two_vs_two``            the paper's 2 vs 2 accuracy (:mod:`~emergence.stats.two_vs_two`)
``rsa``                   RSA: the correlation between the similarity matrices' upper
                          triangles, Pearson, Spearman or Kendall's tau-a
                          (:mod:`~emergence.stats.rsa`)
``cka``                   linear CKA (Kornblith et al. 2019) from the centred Gram
                          matrices (:mod:`~emergence.stats.cka`)
``cka_debiased``          linear CKA with the unbiased HSIC (Song et al. 2012)
``mutual_knn``            mutual k-nearest-neighbour alignment (Huh et al. 2024)
                          (:mod:`~emergence.stats.knn`)
========================  ==========================================================

The 2 vs 2, RSA and mutual kNN read the Pearson similarity matrices (``W``, ``I``); CKA
reads the centred linear Gram matrices (the word vectors' and each layer's, exact from
the activations file's statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.errors import ConfigError

__all__ = ["GRAM_MEASURES", "MEASURES", "MeasureSpec", "column_prefix"]

MEASURES = ("two_vs_two", "rsa", "cka", "cka_debiased", "mutual_knn")
"""Every measure, in the order of the tables' columns."""

GRAM_MEASURES = frozenset({"cka", "cka_debiased"})
"""The measures that read Gram matrices instead of similarity matrices."""


def column_prefix(measure: str) -> str:
    """The prefix of a measure's columns in ``significance.tsv``: none for the 2 vs 2 (the
    paper's ``p_value``, ``p_value_fwe``, ...), ``<measure>_`` for the others."""
    return "" if measure == "two_vs_two" else f"{measure}_"


@dataclass(frozen=True)
class MeasureSpec:
    """Which measures a study scores (``measures.names``, in :data:`MEASURES` order), RSA's
    method (``two_vs_two.rsa_method``) and mutual kNN's neighbour count."""

    names: tuple[str, ...] = ("two_vs_two", "rsa")
    rsa_method: str = "pearson"
    knn_k: int = 10

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in MEASURES]
        if unknown:
            raise ConfigError(f"config key 'measures.names': unknown measure(s) {unknown} "
                              f"(measures: {', '.join(MEASURES)})")
        if "two_vs_two" not in self.names:
            raise ConfigError("config key 'measures.names': two_vs_two is required (the "
                              "paper's test: the figures, the significance decision and the "
                              "comparisons build on it); add it to the list")
        object.__setattr__(self, "names", tuple(m for m in MEASURES if m in self.names))

    def params(self) -> dict[str, Any]:
        """What the score, null and jackknife jobs depend on (their rule params)."""
        return {"names": list(self.names), "rsa_method": self.rsa_method,
                "mutual_knn_k": self.knn_k}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MeasureSpec:
        return cls(tuple(params["names"]), params["rsa_method"], int(params["mutual_knn_k"]))

    @property
    def needs_gram(self) -> bool:
        """Whether any measure reads Gram matrices (the jobs load them only then)."""
        return any(m in GRAM_MEASURES for m in self.names)

    def check_k(self, k: int) -> None:
        """One line when mutual kNN asks for more neighbours than the study has concepts."""
        if "mutual_knn" in self.names and self.knn_k > k - 1:
            raise ValueError(f"config key 'measures.mutual_knn_k' = {self.knn_k}: mutual kNN "
                             f"needs at most k - 1 = {k - 1} neighbours (this study keeps "
                             f"{k} concepts); lower it")

    def observed(self, word_similarity: NDArray[np.float64],
                 image_similarities: Sequence[NDArray[np.float64]] | NDArray[np.float64], *,
                 word_gram: NDArray[np.float64] | None = None,
                 image_grams: Sequence[NDArray[np.float64]] | NDArray[np.float64] | None = None,
                 ) -> dict[str, NDArray[np.float64]]:
        """Every measure for every layer: ``{measure: (L,)}``. A layer whose similarity
        (or Gram) matrix has non-finite entries cannot be scored: NaN for every measure (CKA
        included, although its Gram matrix is defined, so that a layer is scored by all
        measures or by none), as in the nulls and the jackknife."""
        from emergence.stats.cka import cka_from_gram
        from emergence.stats.knn import mutual_knn_from_similarity
        from emergence.stats.rsa import rsa_from_similarity
        from emergence.stats.two_vs_two import TwoVsTwo

        w = np.asarray(word_similarity, dtype=np.float64)
        mats = np.asarray(image_similarities, dtype=np.float64)
        self.check_k(w.shape[0])
        if self.needs_gram and (word_gram is None or image_grams is None):
            raise ValueError("CKA needs the word and image Gram matrices")
        out: dict[str, NDArray[np.float64]] = {}
        for m in self.names:
            if m == "two_vs_two":
                out[m] = np.asarray(TwoVsTwo(w).accuracy(mats), dtype=np.float64).reshape(-1)
            elif m == "rsa":
                out[m] = np.array([rsa_from_similarity(w, i, self.rsa_method) for i in mats])
            elif m == "mutual_knn":
                out[m] = np.array([mutual_knn_from_similarity(w, i, self.knn_k) for i in mats])
            else:
                out[m] = np.array([cka_from_gram(word_gram, g, m == "cka_debiased")
                                   for g in image_grams])  # type: ignore[union-attr]
        undefined = ~np.isfinite(mats.reshape(len(mats), -1)).all(axis=1)
        if image_grams is not None:  # as the nulls: a non-finite Gram is undefined too
            undefined |= ~np.isfinite(np.asarray(image_grams).reshape(len(mats), -1)).all(axis=1)
        for values in out.values():
            values[undefined] = np.nan
        return out
