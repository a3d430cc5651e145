"""Atomic, self-describing output files: TSV tables and HDF5 containers.

Temporary files
---------------
Every writer of a pipeline output writes to a temporary beside the target and renames
it into place, so a failed job never leaves a partial output behind. All temporaries
follow one naming scheme, keyed by the target's file name::

    .<name>.tmp-<pid>        the output being written (:func:`atomic_path`)
    .<name>.spill-<random>/  scratch directory of a large job (:func:`scratch_dir`;
                             extraction spills activations there)

A job that dies without cleaning up (``kill -9``, out of memory, node lost) leaves them
behind; :func:`remove_stale_temporaries`, run by :func:`emergence.runner.start` when a
rule's job starts, deletes those of the job's own outputs. Snakemake never runs two
jobs for the same output at once, so any it finds are stale.

Reading intermediates
---------------------
:func:`open_h5` opens a pipeline's HDF5 intermediate for reading; a missing,
truncated or corrupt file is one line naming it and saying to delete it and rerun.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["TMP_TAG", "SPILL_TAG", "atomic_h5", "atomic_path", "open_h5", "read_tsv",
           "remove_stale_temporaries", "scratch_dir", "str_dataset", "temporaries_of",
           "write_tsv"]

TMP_TAG = ".tmp-"  # .<name>.tmp-<pid>: an output being written
SPILL_TAG = ".spill-"  # .<name>.spill-<random>/: a job's scratch directory


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary is ``.<name>.tmp-<pid>`` (see the module docstring); it is removed
    if the body raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_TAG}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh directory ``.<name>.spill-<random>`` beside ``path``, removed on exit."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f".{target.name}{SPILL_TAG}", dir=target.parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def temporaries_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temporaries of ``path`` that exist now (``.<name>.tmp-*``, ``.<name>.spill-*``)."""
    target = Path(path)
    prefixes = (f".{target.name}{TMP_TAG}", f".{target.name}{SPILL_TAG}")
    try:
        entries = list(os.scandir(target.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if e.name.startswith(prefixes))


def remove_stale_temporaries(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete the temporaries left beside ``paths`` by a job that died; return them.

    Call it only where no other process can be writing these outputs (a Snakemake
    job's own outputs when it starts).
    """
    removed = []
    for path in paths:
        for stale in temporaries_of(path):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            removed.append(stale)
    return removed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


@contextlib.contextmanager
def open_h5(path: str | os.PathLike[str], what: str) -> Iterator[h5py.File]:
    """Open the pipeline intermediate ``path`` (an HDF5 file holding ``what``) for reading.

    A missing, truncated or corrupt file, or one that lacks an expected dataset or
    attribute (``OSError``/``KeyError`` raised inside the block), raises one line
    (``FileNotFoundError``, ``OSError`` or ``ValueError``) naming the file and saying
    to delete it and rerun: Snakemake then recreates it.
    """
    p = Path(path)
    hint = "delete it and rerun (Snakemake will recreate it)"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found; rerun the workflow to create it")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise OSError(f"{p}: cannot read {what} ({_first_line(exc)}); {hint}") from exc
    try:
        with f:
            yield f
    except KeyError as exc:  # a dataset or attribute that is not there
        detail = _first_line(Exception(*exc.args[:1])) if exc.args else "KeyError"
        raise ValueError(f"{p}: {what} is incomplete or from another version ({detail}); "
                         f"{hint}") from exc
    except OSError as exc:
        raise OSError(f"{p}: cannot read {what} ({_first_line(exc)}); {hint}") from exc


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
