"""Precomputed word-side representations: ``type: embedding`` and ``type: similarity``.

``embedding`` (:class:`EmbeddingSpec`)
    a concept x dimensions table keyed by concept id (THINGS' 49 SPoSE dimensions, vectors
    made elsewhere), read by :func:`~emergence.sources.precomputed.read_keyed_matrix`. It is
    a word model like any other: ``W`` is the Pearson correlation of its rows, the Gram
    matrix of CKA their centred linear kernel.
``similarity`` (:class:`SimilaritySpec`)
    a k x k similarity (``measure: similarity``: human similarity judgements) or
    dissimilarity (``measure: dissimilarity``: a brain RDM) matrix keyed by concept id.
    It *is* the concept x concept matrix: ``W = S`` over the kept concepts, or ``W = -D``
    for a dissimilarity (the same 2 vs 2, RSA and mutual kNN as ``1 - D`` or any other
    decreasing affine map: Pearson correlations of rows and of the upper triangle, and
    nearest neighbours, do not change under it). What each measure needs:

    * the 2 vs 2 test (the paper's method) compares rows of ``W`` with rows of ``I``: it
      needs only the concept x concept matrix;
    * RSA correlates the upper triangles, mutual kNN takes each concept's nearest
      neighbours by similarity: the matrix is enough for both, and their nulls and
      jackknife permute and delete its rows and columns as they do ``W``'s;
    * CKA needs a Gram matrix of features (a kernel); a similarity matrix is one only when
      positive semi-definite, a dissimilarity never. Both are refused with ``cka`` and
      ``cka_debiased`` in ``measures.names`` (:meth:`SimilaritySpec.check_study`): give
      the features as ``type: embedding`` instead.

Concept ids come in any order (rows are looked up by id) and may include concepts that are
not in the study. A candidate concept the file lacks is an error (``missing: error``, the
default) or is not covered by the word model (``missing: drop``: then dropped as a concept a
vector file lacks, :mod:`emergence.concepts`). The file's SHA-256 is recorded with the vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from emergence.sources.precomputed import KeyedMatrix, file_sha256, read_keyed_matrix
from emergence.sources.words.lexicon import IMAGENET, Lexicon
from emergence.sources.words.spec import Concepts, CoverageResult, WordModelSpec, _record

__all__ = ["EmbeddingSpec", "Measure", "Missing", "SimilaritySpec"]

Missing = Literal["error", "drop"]
Measure = Literal["similarity", "dissimilarity"]
#: The measures that need features (a kernel), not a concept x concept matrix.
_NEED_FEATURES = ("cka", "cka_debiased")


@dataclass(frozen=True, kw_only=True)
class _KeyedFileSpec(WordModelSpec):
    """A keyed matrix file (:func:`~emergence.sources.precomputed.read_keyed_matrix`)."""

    _SHAPE: ClassVar[Literal["embedding", "square"]] = "embedding"
    path: str
    ids: str | None = None
    dataset: str = "data"
    missing: Missing = "error"

    def __post_init__(self) -> None:
        if self.missing not in get_args(Missing):
            raise ValueError(f"missing {self.missing!r}: use one of {get_args(Missing)}")
        if Path(self.path).suffix.lower() == ".npy" and not self.ids:
            raise ValueError(f"path {self.path}: a .npy matrix needs `ids`, a text file with "
                             "its concept ids, one per line in row order")

    @property
    def source(self) -> str:
        return self.path

    def input_files(self) -> dict[str, str]:
        return {"data_file": self.path, **({"ids_file": self.ids} if self.ids else {})}

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        from emergence.errors import ConfigError

        for key in ("path", "ids"):
            value = getattr(self, key)
            if value and not (Path(base) / value).is_file():
                raise ConfigError(f"config key 'word_models.{self.name}.{key}': {value} does "
                                  "not exist")

    def _read(self) -> KeyedMatrix:
        return read_keyed_matrix(self.path, ids=self.ids, dataset=self.dataset,
                                 shape=self._SHAPE)

    def _covered(self, matrix: KeyedMatrix, concepts: Concepts,
                 ) -> tuple[list[int], list[str], list[dict[str, Any]]]:
        """Rows of the covered concepts (candidate order), their ids, a record per concept."""
        found = matrix.rows_of([w for w, _ in concepts], missing_ok=self.missing == "drop")
        records = [_record(w, c, c, w, "by id") if w in found
                   else _record(w, c, reason=f"no row in {self.path}") for w, c in concepts]
        wnids = [w for w, _ in concepts if w in found]
        return [found[w] for w in wnids], wnids, records

    def _attrs(self) -> dict[str, Any]:
        attrs = {"file": self.path, "file_sha256": file_sha256(self.path)}
        if self.ids:
            attrs["ids_sha256"] = file_sha256(self.ids)
        return attrs


@dataclass(frozen=True, kw_only=True)
class EmbeddingSpec(_KeyedFileSpec):
    """A concept x dimensions table keyed by concept id (module doc)."""

    type: ClassVar[str] = "embedding"
    _KEYS: ClassVar[dict[str, str]] = {"path": "path", "ids": "ids", "dataset": "dataset",
                                       "missing": "missing"}

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        matrix = self._read()
        rows, wnids, records = self._covered(matrix, concepts)
        return CoverageResult(vectors=matrix.values[rows], wnids=wnids, records=records,
                              attrs=self._attrs())


@dataclass(frozen=True, kw_only=True)
class SimilaritySpec(_KeyedFileSpec):
    """A k x k similarity or dissimilarity matrix keyed by concept id (module doc). Its
    ``vectors.h5`` holds the matrix over the covered concepts (rows and columns in
    candidate order)."""

    type: ClassVar[str] = "similarity"
    _KEYS: ClassVar[dict[str, str]] = {"path": "path", "ids": "ids", "dataset": "dataset",
                                       "measure": "measure", "missing": "missing"}
    _SHAPE: ClassVar[Literal["embedding", "square"]] = "square"
    measure: Measure = "similarity"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.measure not in get_args(Measure):
            raise ValueError(f"measure {self.measure!r}: use one of {get_args(Measure)}")

    def check_study(self, names: Sequence[str]) -> None:
        from emergence.errors import ConfigError

        refused = [m for m in names if m in _NEED_FEATURES]
        if refused:
            raise ConfigError(
                f"config key 'measures.names': {', '.join(refused)} need(s) features, and "
                f"word model {self.name} is a {self.measure} matrix (the 2 vs 2, rsa and "
                "mutual_knn work from it): remove them, or give the features as "
                "type: embedding")

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        matrix = self._read()
        rows, wnids, records = self._covered(matrix, concepts)
        return CoverageResult(vectors=matrix.values[np.ix_(rows, rows)], wnids=wnids,
                              records=records, attrs={**self._attrs(), "measure": self.measure,
                                                      "representation": "similarity matrix"})

    def word_matrices(self, word_model: str, vector_wnids: Sequence[str],
                      vectors: NDArray[np.float64], kept: Sequence[tuple[str, str]],
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``W``: the matrix itself over the kept concepts (negated for a dissimilarity),
        and its double-centred form in the Gram slot (no measure reads it: CKA is refused,
        :meth:`check_study`)."""
        from emergence.concepts import kept_rows

        rows = kept_rows(word_model, vector_wnids, kept, what="row")
        sign = -1.0 if self.measure == "dissimilarity" else 1.0
        w_mat = sign * np.asarray(vectors, dtype=np.float64)[np.ix_(rows, rows)]
        centred = w_mat - w_mat.mean(axis=0) - w_mat.mean(axis=1)[:, None] + w_mat.mean()
        return w_mat, centred
