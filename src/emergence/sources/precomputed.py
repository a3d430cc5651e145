"""Precomputed representations: a matrix whose rows are keyed by id, read and validated.

A user brings a representation computed elsewhere: a concept x dimensions embedding, a
k x k similarity or dissimilarity matrix (human judgements, a brain RDM), or per-layer image
features (:mod:`emergence.sources.models.features`). :func:`read_keyed_matrix` reads

``.npy``
    the matrix, with its row ids in a text file (``ids``: one id per line, in row order;
    a similarity matrix's columns are the rows' ids in the same order);
``.csv`` / ``.tsv``
    one row per id: the id in the first column, then the values. An embedding's header
    line is optional (a first line whose values are not all numbers is a header); a
    similarity matrix needs one: a corner cell, then the column ids, which may come in
    another order than the rows (they are reordered);
``.h5`` / ``.hdf5``
    the 2-D dataset ``dataset`` (default ``data``) and the dataset ``ids`` (strings) beside
    it in the same group.

Ids are compared in Unicode NFC (:func:`emergence.sources.common.nfc`). Every problem is one line
(:class:`~emergence.errors.InputFileError`) naming the file and the ids, the first few and
how many: duplicate ids, non-finite values (nan, inf), a matrix whose shape does not match
its ids, a "similarity" that is not square or not symmetric, ids that are missing
(:meth:`KeyedMatrix.rows_of`). A similarity matrix's diagonal is never read by any measure
(no concept is compared with itself): a non-finite diagonal, as RDMs often have, is set
to 0. Ids in another order than the concept table are fine: rows
are looked up by id.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from emergence.errors import InputFileError
from emergence.sources.common import nfc

__all__ = ["SUFFIXES", "SYMMETRY_TOLERANCE", "KeyedMatrix", "file_sha256", "read_ids",
           "read_keyed_matrix", "shown"]

SUFFIXES = (".npy", ".csv", ".tsv", ".h5", ".hdf5")
#: A similarity matrix is symmetric when ``|S - Sᵀ| <= SYMMETRY_TOLERANCE * max |S|``
#: everywhere (float32 rounding of a symmetric computation passes); it is then used as
#: ``(S + Sᵀ) / 2`` (exactly ``S`` when it is bitwise symmetric).
SYMMETRY_TOLERANCE = 1e-6
Shape = Literal["embedding", "square"]


def shown(ids: Sequence[str], limit: int = 5) -> str:
    """``'a', 'b', 'c'`` or ``'a', 'b', ... (+7 more)``: the first ids and how many more."""
    head = ", ".join(repr(i) for i in ids[:limit])
    return head + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content (recorded with the vectors made from it)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass(frozen=True)
class KeyedMatrix:
    """A validated matrix: row ``i`` belongs to ``ids[i]``; ``source`` is the file."""

    ids: list[str]
    values: NDArray[np.float64]
    source: str

    def rows_of(self, wanted: Sequence[str], *, missing_ok: bool = False,
                what: str = "concept") -> dict[str, int]:
        """Row index by id for each of ``wanted`` found (any order); an id not in the file
        is an error naming the file and the ids, unless ``missing_ok``."""
        row = {i: r for r, i in enumerate(self.ids)}
        absent = [w for w in wanted if nfc(w) not in row]
        if absent and not missing_ok:
            raise InputFileError(f"{self.source}: no row for {len(absent)} of {len(wanted)} "
                                 f"{what}(s): {shown(absent)}; add them to the file")
        return {w: row[nfc(w)] for w in wanted if nfc(w) in row}


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """Ids from a text file, one per line (a trailing empty line is fine, an empty line
    between ids is not)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read the ids ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [str(n + 1) for n, line in enumerate(lines) if not line.strip()]
    if blank:
        raise InputFileError(f"{path}: empty id on line(s) {', '.join(blank[:5])}")
    return [nfc(line.strip()) for line in lines]


def read_keyed_matrix(path: str | os.PathLike[str], *, ids: str | os.PathLike[str] | None = None,
                      dataset: str = "data", shape: Shape = "embedding") -> KeyedMatrix:
    """Read and validate a keyed matrix (module doc); ``shape="square"``: a similarity
    matrix, square, columns keyed like the rows, symmetric."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputFileError(f"{p}: unknown file type {p.suffix!r}; use one of "
                             f"{', '.join(SUFFIXES)}")
    if not p.is_file():
        raise InputFileError(f"{p}: no such file")
    columns: list[str] | None = None
    if suffix == ".npy":
        if ids is None:
            raise InputFileError(f"{p}: a .npy matrix needs its row ids in a text file (ids)")
        try:
            values = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{p}: not a readable .npy array ({exc})") from None
        row_ids = read_ids(ids)
    elif suffix in (".csv", ".tsv"):
        row_ids, values, columns = _read_delimited(p, "," if suffix == ".csv" else "\t",
                                                   header=shape == "square")
    else:
        row_ids, values = _read_h5(p, dataset)
    return _validated(p, row_ids, values, columns, shape)


def _read_delimited(path: Path, delimiter: str, *, header: bool,
                    ) -> tuple[list[str], NDArray[np.float64], list[str] | None]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh, delimiter=delimiter) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(f"{path}: cannot read it ({exc})") from None
    if not rows:
        raise InputFileError(f"{path}: empty")
    columns = None
    if header or not _numbers(rows[0][1:]):
        columns = [nfc(c.strip()) for c in rows[0][1:]]
        rows = rows[1:]
    values = []
    for line, row in enumerate(rows, start=2 if columns is not None else 1):
        parsed = _numbers(row[1:])
        if parsed is None:
            raise InputFileError(f"{path}: line {line} (id {row[0]!r}) has a value that is "
                                 "not a number")
        values.append(parsed)
    widths = Counter(len(v) for v in values)
    if len(widths) > 1:
        width = widths.most_common(1)[0][0]
        odd = [rows[i][0] for i, v in enumerate(values) if len(v) != width]
        raise InputFileError(f"{path}: rows of {width} values, but {len(odd)} row(s) differ: "
                             f"{shown(odd)}")
    return ([nfc(r[0].strip()) for r in rows], np.array(values, dtype=np.float64).reshape(
        len(values), -1), columns if header else None)


def _numbers(fields: Sequence[str]) -> list[float] | None:
    try:
        return [float(f) for f in fields] if fields else None
    except ValueError:
        return None


def _read_h5(path: Path, dataset: str) -> tuple[list[str], NDArray[np.float64]]:
    import h5py

    where = dataset.rsplit("/", 1)[0] if "/" in dataset else ""
    ids_name = f"{where}/ids" if where else "ids"
    try:
        with h5py.File(path, "r") as f:
            for name in (dataset, ids_name):
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise InputFileError(f"{path}: no dataset {name!r} (datasets: "
                                         f"{', '.join(_datasets(f)) or 'none'})")
            raw = f[ids_name][()]
            values = f[dataset][()]
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    ids = [nfc((v.decode() if isinstance(v, bytes) else str(v)).strip())
           for v in np.asarray(raw).reshape(-1)]
    return ids, values


def _datasets(f: object) -> list[str]:
    import h5py

    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name)  # type: ignore[attr-defined]
                 if isinstance(obj, h5py.Dataset) else None)
    return found


def _validated(path: Path, ids: list[str], values: np.ndarray, columns: list[str] | None,
               shape: Shape) -> KeyedMatrix:
    if values.dtype.kind not in "biuf":
        raise InputFileError(f"{path}: values of type {values.dtype}, expected numbers")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(ids):
        raise InputFileError(f"{path}: a matrix of shape {values.shape} for {len(ids)} ids; "
                             "expected one row per id")
    twice = [i for i, n in Counter(ids).items() if n > 1]
    if twice:
        raise InputFileError(f"{path}: {len(twice)} id(s) on more than one row: {shown(twice)}")
    if shape == "square":
        values = _square(path, ids, values, columns)
        # No measure reads a concept's similarity with itself; RDMs often leave it empty.
        diagonal = np.diagonal(values).copy()
        np.fill_diagonal(values, np.where(np.isfinite(diagonal), diagonal, 0.0))
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        named = [ids[i] for i in np.flatnonzero(bad)]
        raise InputFileError(f"{path}: non-finite values (nan or inf) in the row(s) of "
                             f"{len(named)} id(s): {shown(named)}")
    return KeyedMatrix(ids, values, str(path))


def _square(path: Path, ids: list[str], values: NDArray[np.float64],
            columns: list[str] | None) -> NDArray[np.float64]:
    """The columns in row order, checked square and symmetric."""
    if values.shape[1] != len(ids):
        raise InputFileError(f"{path}: a similarity matrix must be square, got "
                             f"{values.shape[0]} rows x {values.shape[1]} columns")
    if columns is not None:
        if len(set(columns)) != len(columns):
            twice = [c for c, n in Counter(columns).items() if n > 1]
            raise InputFileError(f"{path}: {len(twice)} column id(s) twice: {shown(twice)}")
        if set(columns) != set(ids):
            only_rows = [i for i in ids if i not in set(columns)]
            only_cols = [c for c in columns if c not in set(ids)]
            raise InputFileError(f"{path}: the column ids are not the row ids (rows only: "
                                 f"{shown(only_rows) or 'none'}; columns only: "
                                 f"{shown(only_cols) or 'none'})")
        position = {c: j for j, c in enumerate(columns)}
        values = values[:, [position[i] for i in ids]]
    finite = np.isfinite(values)
    scale = float(np.max(np.abs(values[finite]), initial=0.0))
    gap = np.where(finite & finite.T, np.abs(values - values.T), 0.0)
    uneven = np.argwhere(np.triu(gap > SYMMETRY_TOLERANCE * scale, 1))
    if len(uneven):
        pairs = [f"{ids[a]}/{ids[b]}" for a, b in uneven]
        raise InputFileError(
            f"{path}: not symmetric: S[a, b] != S[b, a] for {len(pairs)} pair(s): "
            f"{shown(pairs)} (largest difference {gap.max():.3g}); a similarity or "
            "dissimilarity matrix must be symmetric")
    return (values + values.T) / 2
