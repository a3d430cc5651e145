"""``words/<word_model>/similarity.h5``: the word-space similarity matrix ``W``.

Layout (written by the ``word_matrix`` rule, read by the 2 vs 2, permutation and 1 vs 2
rules):

* attrs ``what``, ``word_model``, ``spec`` (``repr`` of the rule's params), ``k`` (kept
  concepts), ``dimension`` (of the word vectors);
* ``wnid``, ``concept``: UTF-8 strings, the kept concepts in matrix order;
* ``similarity``: ``k x k`` float64, Pearson correlation of the word vectors;
* ``gram``: ``k x k`` float64, the Gram matrix of the word vectors centred over the kept
  concepts (``X_c X_cᵀ``: the word side of CKA).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emergence.io import atomic_h5, open_h5, str_dataset

__all__ = ["read_word_gram", "read_word_matrix", "write_word_matrix"]


def write_word_matrix(path: str | os.PathLike[str], word_model: str,
                      params: Mapping[str, Any], kept: Sequence[tuple[str, str]],
                      w_mat: np.ndarray, dimension: int, gram: np.ndarray) -> None:
    """Write ``W`` and the centred Gram matrix over the ``kept`` ``(wnid, concept)`` pairs
    atomically."""
    attrs = {"what": "W: Pearson correlation between the word vectors of the kept concepts",
             "word_model": word_model, "spec": repr(dict(params)), "k": len(kept),
             "dimension": int(dimension)}
    with atomic_h5(path, attrs) as f:
        str_dataset(f, "wnid", [w for w, _ in kept])
        str_dataset(f, "concept", [c for _, c in kept])
        f.create_dataset("similarity", data=w_mat)
        f.create_dataset("gram", data=gram)


def read_word_matrix(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(wnids, W, attrs) from a word-matrix file."""
    with open_h5(path, "word-matrix file") as f:
        return list(f["wnid"].asstr()[()]), f["similarity"][()], dict(f.attrs)


def read_word_gram(path: str | os.PathLike[str]) -> np.ndarray:
    """The centred Gram matrix of the word vectors (k x k, matrix order)."""
    with open_h5(path, "word-matrix file") as f:
        if "gram" not in f:
            raise ValueError(f"{path}: no 'gram' dataset (written before CKA was added); "
                             "delete the file so that the word_matrix rule writes it again")
        return f["gram"][()]
