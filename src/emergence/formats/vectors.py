"""``words/<word_model>/vectors.h5``: the vectors of the candidate concepts a word model covers.

Layout (written by the ``word_vectors`` rule, read by ``word_matrix``):

* attrs ``what``, ``word_model``, ``spec`` (``repr`` of the rule's params),
  ``dimension``;
* ``wnid``: UTF-8 strings, one per row, in candidate order;
* ``vectors``: ``n x dimension`` float64.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emergence.io import atomic_h5, open_h5, str_dataset

__all__ = ["read_word_vectors", "write_word_vectors"]


def write_word_vectors(path: str | os.PathLike[str], word_model: str,
                       params: Mapping[str, Any], wnids: Sequence[str],
                       vectors: np.ndarray) -> None:
    """Write the vectors (rows: ``wnids``) of ``word_model`` atomically."""
    attrs = {"what": "word vectors of the candidate concepts", "word_model": word_model,
             "spec": repr(dict(params)), "dimension": int(vectors.shape[1])}
    with atomic_h5(path, attrs) as f:
        str_dataset(f, "wnid", wnids)
        f.create_dataset("vectors", data=vectors)


def read_word_vectors(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """(wnids, vectors) from a word-vectors file (the ``word_vectors`` rule's output)."""
    with open_h5(path, "word-vectors file") as f:
        return list(f["wnid"].asstr()[()]), f["vectors"][()]
