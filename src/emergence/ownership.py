"""Which process owns a file, and the lock that keeps two runs out of one results folder.

Owners
------
A temporary file (:mod:`emergence.io`) and the results lock name the process that made
them: its host (:data:`HOST`) and PID. Whether that process still runs can only be told on
its own host (:func:`process_alive`, which also sees through PID reuse: a process that
started after the file was last written cannot be its owner). On another host (SLURM nodes
share the file system) nothing can be told, so such a file is presumed live.

The results lock
----------------
Two working directories whose configs name the same ``results:`` folder are two runs that
Snakemake's own lock (per working directory) does not keep apart: a job of one would sweep
the other's temporaries and both would write the same files. So the main Snakemake
process of a run takes ``<results>/.emergence.lock`` before its first job
(:func:`lock_results`, from ``workflow/rules/common.smk``'s ``onstart``) and removes it
when the run ends (:func:`unlock_results`, ``onsuccess``/``onerror`` and ``atexit``). The
file is one JSON line: host, PID, working directory, start time, command and a random run
id; the holder renews its time every :data:`HEARTBEAT_S` (a daemon thread). A second run
stops with one line naming the holder. A lock whose process is gone from this host (killed,
the machine restarted) is taken over with a note; so is one held on another host (a
Snakemake run inside a batch job, ended by its time limit) once it has not been renewed for
:data:`LEASE_S`, as that host's process cannot be looked up from here.

The run's jobs learn its id from the environment (:data:`RUN_ENV`, inherited by local jobs
and by SLURM jobs, which the executor submits with ``--export=ALL``):
:func:`holds_results_lock` tells a job that its run holds the lock, so nothing else can be
writing its outputs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_S", "HOST", "LEASE_S", "LOCK_NAME", "RUN_ENV", "START_SLACK_S",
           "ResultsLocked",
           "holds_results_lock", "lock_results", "process_alive", "unlock_results"]

HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"
"""This machine's name as it appears in file names (letters, digits, '.', '-')."""

LOCK_NAME = ".emergence.lock"
"""The results lock's file name, in the results folder."""

RUN_ENV = "EMERGENCE_RUN"
"""Environment variable ``<run id>:<lock path>`` that a locking run passes to its jobs."""

HEARTBEAT_S = 60.0
"""How often the run holding the results lock renews the lock file's time."""

LEASE_S = 900.0
"""A lock held on another host and not renewed for this long is stale (15 heartbeats)."""

START_SLACK_S = 300.0
"""A process that started more than this after a file's last change is not its owner (a
reused PID). Generous: file times may come from a file server's clock."""


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """The state letter and start time (seconds since the epoch) of ``pid`` from Linux's
    ``/proc``; None where there is no ``/proc`` (macOS) or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)", which may hold spaces
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def process_alive(pid: int, changed: float | None = None) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not) and, given
    ``changed`` (a file's last change, ``time.time()`` scale), could have made that file:
    it started no later than ``changed`` + :data:`START_SLACK_S`."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    stat = _proc_stat(pid)
    if stat is None:  # no /proc: the signal says it exists
        return True
    state, started = stat
    return state != "Z" and (changed is None or started <= changed + START_SLACK_S)


class ResultsLocked(RuntimeError):
    """Another run holds the results folder (one line naming it)."""


def _read(lock: Path) -> dict[str, Any] | None:
    """The lock's JSON, or None when it cannot be read as one (being written, or garbage)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _changed(path: Path) -> float | None:
    with contextlib.suppress(OSError):
        st = path.stat()
        return min(st.st_mtime, st.st_ctime)
    return None


def _describe(holder: dict[str, Any]) -> str:
    return (f"PID {holder.get('pid')} on host {holder.get('host')}, working directory "
            f"{holder.get('workdir')}, started {holder.get('started')}")


def _stale(holder: dict[str, Any] | None, lock: Path) -> bool:
    """Whether the lock's holder is gone: its process is not alive on this host, or, on
    another host, it has not renewed the lock for :data:`LEASE_S`. An unreadable lock
    younger than a minute is a run writing it right now."""
    changed = _changed(lock)
    if holder is None:
        return changed is not None and time.time() - changed > 60
    if holder.get("host") != HOST:
        try:
            return time.time() - lock.stat().st_mtime > LEASE_S
        except OSError:
            return True
    try:
        return not process_alive(int(holder.get("pid", -1)), changed)
    except (TypeError, ValueError):
        return True


def lock_results(results: str | os.PathLike[str], *, workdir: str | os.PathLike[str],
                 command: str = "") -> str:
    """Take ``<results>/.emergence.lock`` for this process, or raise :class:`ResultsLocked`
    (one line naming the holder). Returns a note when a stale lock was taken over, else "".

    Sets :data:`RUN_ENV` for the jobs, and removes the lock at exit (:func:`unlock_results`
    removes it earlier). Taking it twice in one process is a no-op.
    """
    folder = Path(results).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    if holds_results_lock(lock) and (_read(lock) or {}).get("pid") == os.getpid():
        return ""
    note = ""
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if not _stale(holder, lock):
                if holder is None:  # being written: look again
                    time.sleep(0.1)
                    continue
                hint = ("" if holder.get("host") == HOST else
                        f" (if it is no longer running there, delete {lock}; it is taken "
                        f"over once not renewed for {LEASE_S / 60:.0f} min)")
                raise ResultsLocked(
                    f"results folder {folder} is in use by another run: "
                    f"{_describe(holder)}; wait for it to finish or set another "
                    f"'results:' folder{hint}") from None
            # Stale: set it aside, and remove it only if it is still the lock judged stale
            # (a run starting at the same moment may have replaced it).
            aside = lock.with_name(f"{LOCK_NAME}.stale-{HOST}-{os.getpid()}")
            try:
                os.replace(lock, aside)
            except FileNotFoundError:
                continue
            if _read(aside) != holder:
                with contextlib.suppress(OSError):
                    os.link(aside, lock)
            else:
                note = (f"took over the lock of results folder {folder} from a run that is "
                        f"no longer running ({_describe(holder or {})})")
            aside.unlink(missing_ok=True)
            continue
        run = uuid.uuid4().hex
        record = {"host": HOST, "pid": os.getpid(), "workdir": str(Path(workdir).absolute()),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
                  "run": run}
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record) + "\n")
        os.environ[RUN_ENV] = f"{run}:{lock}"
        atexit.register(unlock_results, folder)
        threading.Thread(target=_renew, args=(lock, run), name="results-lock", daemon=True
                         ).start()
        return note
    raise ResultsLocked(f"results folder {folder}: could not take {lock} (other runs keep "
                        "replacing it)")


def _renew(lock: Path, run: str) -> None:
    """Touch the lock every :data:`HEARTBEAT_S` while it is this run's."""
    while True:
        time.sleep(HEARTBEAT_S)
        holder = _read(lock)
        if holder is None or holder.get("run") != run:
            return
        with contextlib.suppress(OSError):
            os.utime(lock)


def unlock_results(results: str | os.PathLike[str]) -> None:
    """Remove the results lock if this process's run holds it (else leave it alone)."""
    lock = Path(results).absolute() / LOCK_NAME
    if holds_results_lock(lock):
        lock.unlink(missing_ok=True)
        os.environ.pop(RUN_ENV, None)


def holds_results_lock(lock: str | os.PathLike[str] | None = None) -> bool:
    """Whether the run this process belongs to (:data:`RUN_ENV`) holds the results lock
    (``lock``, or the one named in :data:`RUN_ENV`)."""
    run, _, path = os.environ.get(RUN_ENV, "").partition(":")
    if not run or not path or (lock is not None and Path(lock).absolute() != Path(path)):
        return False
    holder = _read(Path(path))
    return holder is not None and holder.get("run") == run
