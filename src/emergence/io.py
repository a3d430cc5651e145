"""Atomic, self-describing output files: TSV tables and HDF5 containers.

Every writer writes to a temporary file beside the target and renames it into place,
so a failed job never leaves a partial output behind.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["atomic_h5", "atomic_path", "read_tsv", "str_dataset", "write_tsv"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike[str], attrs: Mapping[str, Any] | None = None
              ) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing that appears at ``path`` only when complete."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        yield f


def str_dataset(group: h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    """Store a list of strings as a UTF-8 string dataset."""
    return group.create_dataset(name, data=np.array(list(values), dtype=h5py.string_dtype()))


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else repr(float(value))
    return str(value)


def write_tsv(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]],
              columns: Sequence[str]) -> None:
    """Write ``rows`` as a tab-separated table with a header, atomically.

    Floats are written with ``repr`` (shortest round-trip form), so files are
    bit-reproducible and lossless.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            missing = [c for c in columns if c not in row]
            if missing:
                raise KeyError(f"row for {path} lacks columns {missing}")
            writer.writerow([_fmt(row[c]) for c in columns])


def read_tsv(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Read a TSV with a header row; one-line error naming the file if columns are missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: file not found")
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{p}: missing column(s) {', '.join(missing)} "
                             f"(found: {', '.join(header) or 'none'})")
        return [dict(r) for r in reader]
