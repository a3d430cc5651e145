"""emergence: similarity encoding between CNN layers and word vectors.

Reproduces and extends Dharmaretnam & Fyshe (2018), *The Emergence of Semantics in
Neural Network Representations of Visual Information*.

Public statistics API (all float64, rows aligned by concept):

* :func:`similarity_matrix` -- k x k Pearson correlation between rows of an embedding.
* :func:`two_vs_two` / :func:`two_vs_two_from_similarity` -- the 2 vs 2 accuracy.
* :func:`rsa` / :func:`rsa_from_similarity` -- representational similarity analysis.
* :func:`permutation_null`, :func:`p_values`, :func:`family_wise_p_values` -- significance.
* :func:`one_vs_two` -- the 1 vs 2 test for misclassified images.
* :func:`cka` (linear, biased or debiased), :func:`mutual_knn` -- alignment measures beside
  2 vs 2 and RSA (``rsa(..., method="kendall")`` for Kendall's tau-a); :func:`linear_gram`
  -- the centred Gram matrix CKA compares.
* :func:`interval` -- a measure between two embeddings with its calibrated 95 % interval
  over concepts (the pipeline's jackknife), ``(estimate, low, high)``;
  :func:`jackknife_distribution` -- the samples it is made from.
* :func:`bootstrap_distribution`, :func:`bootstrap_counts` -- the bootstrap over concepts
  (every measure; a copy of a concept counts as the concept itself).
* :func:`confidence_interval`, :func:`bootstrap_p`, :func:`depth_trend` -- intervals, paired
  bootstrap p-values, the depth-trend statistic.

The names load on first use (PEP 562): ``import emergence`` and its leaf modules
(``emergence.config``, ``emergence.errors``, ...) stay cheap, and a job imports torch,
scipy or numba only through the modules it calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emergence.stats.bootstrap import bootstrap_counts, bootstrap_distribution
    from emergence.stats.cka import cka, linear_gram
    from emergence.stats.comparisons import bootstrap_p, confidence_interval, depth_trend
    from emergence.stats.jackknife import jackknife_distribution
    from emergence.stats.knn import mutual_knn
    from emergence.stats.one_vs_two import OneVsTwo, one_vs_two
    from emergence.stats.permutation import (
        family_wise_p_values,
        p_values,
        permutation,
        permutation_null,
    )
    from emergence.stats.rsa import rsa, rsa_from_similarity
    from emergence.stats.similarity import PearsonAccumulator, similarity_matrix
    from emergence.stats.two_vs_two import TwoVsTwo, two_vs_two, two_vs_two_from_similarity
    from emergence.uncertainty import measure_interval as interval

__version__ = "0.1.0"

# public name -> the module that defines it (the TYPE_CHECKING imports above, for type checkers)
_HOME = {
    "bootstrap_counts": "emergence.stats.bootstrap",
    "bootstrap_distribution": "emergence.stats.bootstrap",
    "cka": "emergence.stats.cka",
    "linear_gram": "emergence.stats.cka",
    "bootstrap_p": "emergence.stats.comparisons",
    "confidence_interval": "emergence.stats.comparisons",
    "depth_trend": "emergence.stats.comparisons",
    "jackknife_distribution": "emergence.stats.jackknife",
    "mutual_knn": "emergence.stats.knn",
    "OneVsTwo": "emergence.stats.one_vs_two",
    "one_vs_two": "emergence.stats.one_vs_two",
    "family_wise_p_values": "emergence.stats.permutation",
    "p_values": "emergence.stats.permutation",
    "permutation": "emergence.stats.permutation",
    "permutation_null": "emergence.stats.permutation",
    "rsa": "emergence.stats.rsa",
    "rsa_from_similarity": "emergence.stats.rsa",
    "PearsonAccumulator": "emergence.stats.similarity",
    "similarity_matrix": "emergence.stats.similarity",
    "TwoVsTwo": "emergence.stats.two_vs_two",
    "two_vs_two": "emergence.stats.two_vs_two",
    "two_vs_two_from_similarity": "emergence.stats.two_vs_two",
    "interval": "emergence.uncertainty",
}

_ALIAS = {"interval": "measure_interval"}
"""A public name that its module defines under another name."""

__all__ = [
    "OneVsTwo",
    "PearsonAccumulator",
    "TwoVsTwo",
    "__version__",
    "bootstrap_counts",
    "bootstrap_distribution",
    "bootstrap_p",
    "cka",
    "confidence_interval",
    "depth_trend",
    "family_wise_p_values",
    "interval",
    "jackknife_distribution",
    "linear_gram",
    "mutual_knn",
    "one_vs_two",
    "p_values",
    "permutation",
    "permutation_null",
    "rsa",
    "rsa_from_similarity",
    "similarity_matrix",
    "two_vs_two",
    "two_vs_two_from_similarity",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'emergence' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), _ALIAS.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
