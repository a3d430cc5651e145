"""``words/<word_model>/vectors.h5``: the vectors of the candidate concepts a word model covers.

Layout (written by the ``word_vectors`` rule, read by ``word_matrix``):

* attrs ``what``, ``word_model``, ``spec`` (``repr`` of the rule's params),
  ``dimension``, and what else identifies the vectors (``CoverageResult.attrs``: a
  language model's ``revision``, ``weights_sha256``, ``layer``, ``pooling``, ``template``;
  a precomputed file's ``file_sha256``);
* ``wnid``: UTF-8 strings, one per row, in candidate order;
* ``vectors``: ``n x dimension`` float64 (a ``similarity`` word model: the ``n x n``
  matrix itself, columns in row order; attr ``representation``).
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
                       vectors: np.ndarray, extra: Mapping[str, Any] | None = None) -> None:
    """Write the vectors (rows: ``wnids``) of ``word_model`` atomically, with ``extra``
    attributes (they may not replace the four above)."""
    attrs = {**(extra or {}), "what": "word vectors of the candidate concepts",
             "word_model": word_model, "spec": repr(dict(params)),
             "dimension": int(vectors.shape[1])}
    with atomic_h5(path, attrs) as f:
        str_dataset(f, "wnid", wnids)
        f.create_dataset("vectors", data=vectors)


def read_word_vectors(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """(wnids, vectors) from a word-vectors file (the ``word_vectors`` rule's output)."""
    with open_h5(path, "word-vectors file") as f:
        return list(f["wnid"].asstr()[()]), f["vectors"][()]
