"""Atomic, self-describing output files: TSV tables and HDF5 containers.

Temporary files
---------------
Every writer of a pipeline output writes to a temporary beside the target and renames
it into place, so a failed job never leaves a partial output behind. All temporaries
follow one naming scheme, keyed by the target's file name and naming their owner, the
process that writes them (its host and PID, :mod:`emergence.ownership`)::

    .<name>.tmp-<host>-<pid>                the output being written (:func:`atomic_path`)
    .<name>.spill-<host>-<pid>-<random>/    scratch directory of a large job
                                            (:func:`scratch_dir`; extraction spills
                                            activations there)

A job that dies without cleaning up (``kill -9``, out of memory, node lost) leaves them
behind; :func:`remove_stale_temporaries`, run by :func:`emergence.runner.start` when a
rule's job starts, deletes those of the job's own outputs that no live process owns
(:func:`stale_reason`): within one run Snakemake never runs two jobs for one output, but
another run may share the results folder (two working directories naming the same
``results:``) and must not lose its live files. A temporary is stale when

* the job's run holds the results lock (:func:`emergence.ownership.holds_results_lock`):
  then no other run can be writing there, so every leftover is stale, on any host;
* else, when its owner's host is this one and that process is gone (or its PID now
  belongs to a process started after the temporary was last changed);
* else (another host, where a process cannot be looked up, or the names of earlier
  versions, ``.<name>.tmp-<pid>`` and ``.<name>.spill-<random>``, that say no host) only
  when it was last changed more than :data:`FOREIGN_MAX_AGE_S` (7 days, longer than
  the wall-time limit of a cluster job) ago. An old-style name whose PID runs here is live.

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
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emergence.ownership import HOST, holds_results_lock, process_alive

__all__ = ["FOREIGN_MAX_AGE_S", "TMP_TAG", "SPILL_TAG", "atomic_h5", "atomic_path", "open_h5",
           "read_tsv", "remove_stale_temporaries", "scratch_dir", "stale_reason",
           "str_dataset", "temporaries_of", "write_tsv"]

TMP_TAG = ".tmp-"  # .<name>.tmp-<host>-<pid>: an output being written
SPILL_TAG = ".spill-"  # .<name>.spill-<host>-<pid>-<random>/: a job's scratch directory
FOREIGN_MAX_AGE_S = 7 * 24 * 3600.0
"""A temporary whose owner cannot be looked up (another host) is stale only after this."""


def _owner_tag() -> str:
    return f"{HOST}-{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary is ``.<name>.tmp-<host>-<pid>`` (see the module docstring); it is
    removed if the body raises. One that vanished before the rename is one line saying so.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_TAG}{_owner_tag()}")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{tmp}: this job's temporary output was deleted while it was written "
                f"(by another process; two runs on one results folder?); rerun") from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh directory ``.<name>.spill-<host>-<pid>-<random>`` beside ``path``, removed
    on exit."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f".{target.name}{SPILL_TAG}{_owner_tag()}-",
                                      dir=target.parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def temporaries_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temporaries of ``path`` that exist now (``.<name>.tmp-*``, ``.<name>.spill-*``,
    in every naming this module has used)."""
    target = Path(path)
    prefixes = (f".{target.name}{TMP_TAG}", f".{target.name}{SPILL_TAG}")
    try:
        entries = list(os.scandir(target.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if e.name.startswith(prefixes))


def _owner(temp: Path, target: str) -> tuple[str | None, int | None]:
    """The host and PID a temporary of output ``target`` names (None where it names none:
    the names of earlier versions, or a name this module did not make)."""
    for tag, parts in ((TMP_TAG, 2), (SPILL_TAG, 3)):
        prefix = f".{target}{tag}"
        if temp.name.startswith(prefix):
            rest = temp.name[len(prefix):].rsplit("-", parts - 1)
            if len(rest) == parts and rest[1].isdigit():  # host-pid(-random)
                return rest[0], int(rest[1])
            if tag == TMP_TAG and rest[0].isdigit():  # earlier versions: .<name>.tmp-<pid>
                return None, int(rest[0])
    return None, None


def _last_change(temp: Path) -> tuple[float, float]:
    """When ``temp`` was made at the latest (the earliest of its own times) and last
    written (the latest over it and, for a directory, its entries)."""
    st = temp.stat()
    made, latest = min(st.st_mtime, st.st_ctime), max(st.st_mtime, st.st_ctime)
    if temp.is_dir() and not temp.is_symlink():
        with contextlib.suppress(OSError), os.scandir(temp) as entries:
            for e in entries:
                est = e.stat(follow_symlinks=False)
                latest = max(latest, est.st_mtime, est.st_ctime)
    return made, latest


def stale_reason(temp: Path, target: str, *, exclusive: bool = False,
                 now: float | None = None) -> str:
    """Why temporary ``temp`` of the output named ``target`` may belong to a live process
    ("" when it is stale and may be deleted); the rules are in the module docstring.
    ``exclusive``: the caller's run holds the results lock."""
    if exclusive:
        return ""
    host, pid = _owner(temp, target)
    try:
        made, latest = _last_change(temp)
    except FileNotFoundError:
        return ""
    if (host == HOST or host is None) and pid is not None and process_alive(pid, made):
        return f"its process {pid} is running on this host"
    if host == HOST:
        return ""
    age = (time.time() if now is None else now) - latest
    if age > FOREIGN_MAX_AGE_S:
        return ""
    where = f"host {host}" if host else "a host it does not name"
    return (f"it was written by {where} {age / 60:.0f} min ago and may belong to a live job "
            f"there (removed once {FOREIGN_MAX_AGE_S / 86400:.0f} days old; delete it by "
            "hand if no run uses it)")


def remove_stale_temporaries(paths: Iterable[str | os.PathLike[str]], *,
                             exclusive: bool | None = None,
                             kept: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Delete the temporaries left beside ``paths`` by a process that is gone; return them.

    Those that may belong to a live process (:func:`stale_reason`) stay, and are appended
    to ``kept`` with the reason. ``exclusive`` (by default: whether this process's run
    holds the results lock) deletes every temporary; pass it only where no other
    process can be writing these outputs.
    """
    if exclusive is None:
        exclusive = holds_results_lock()
    removed = []
    for path in paths:
        for temp in temporaries_of(path):
            why = stale_reason(temp, Path(path).name, exclusive=exclusive)
            if why:
                if kept is not None:
                    kept.append((temp, why))
                continue
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
            removed.append(temp)
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
    bit-reproducible and lossless; the text is UTF-8 whatever the locale (a concept's
    name may be any Unicode word).
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            missing = [c for c in columns if c not in row]
            if missing:
                raise KeyError(f"row for {path} lacks columns {missing}")
            writer.writerow([_fmt(row[c]) for c in columns])


def read_tsv(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Read a TSV (UTF-8) with a header row; one-line error naming the file if columns are
    missing. The one reader of the tables :func:`write_tsv` writes (tests included)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: file not found")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{p}: missing column(s) {', '.join(missing)} "
                             f"(found: {', '.join(header) or 'none'})")
        return [dict(r) for r in reader]
