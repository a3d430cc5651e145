"""Helpers for the workflow's thin rule scripts: logging, thread setup, stale temporaries."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from emergence.io import remove_stale_temporaries

__all__ = ["start"]


def start(smk: Any) -> logging.Logger:
    """Set up a rule's job; every rule script calls it first.

    * Sends the job's stderr (progress bars, warnings, the traceback) to its log file;
      an error that ends the job is also one line on the job's own stderr, which
      Snakemake shows above its "Error in rule" block (see :func:`_report_to`), and so is
      each warning of the returned logger (``<rule>: <message>``).
    * Pins thread counts to the job's ``threads``.
    * Deletes the temporaries a killed earlier run of this job left beside its outputs
      (``.<name>.tmp-<host>-<pid>``, ``.<name>.spill-*``: see :mod:`emergence.io`), but
      none that a live process may own (another run on the same results folder). Each
      deleted or kept one is logged.
    """
    job_stderr = None
    if getattr(smk, "log", None):
        job_stderr = os.fdopen(os.dup(2), "w", buffering=1)  # Snakemake's (or SLURM's)
        fh = open(smk.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = fh
        os.dup2(fh.fileno(), 2)
        sys.excepthook = _report_to(job_stderr, smk)
    threads = max(int(getattr(smk, "threads", 1) or 1), 1)
    torch = sys.modules.get("torch")  # not imported here: most jobs never need it (~2 s)
    if torch is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)
    else:  # torch takes its thread count from here if a later import loads it
        os.environ["OMP_NUM_THREADS"] = str(threads)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger(f"emergence.{getattr(smk, 'rule', 'job')}")
    if job_stderr is not None:  # warnings: also one line each on the console
        console = logging.StreamHandler(job_stderr)
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter(f"{getattr(smk, 'rule', 'job')}: %(message)s"))
        log.addHandler(console)
    log.info("rule %s, wildcards %s", getattr(smk, "rule", "?"), dict(smk.wildcards.items())
             if hasattr(smk, "wildcards") else {})
    kept: list[tuple[Path, str]] = []
    for stale in remove_stale_temporaries(getattr(smk, "output", None) or [], kept=kept):
        log.info("removed %s, left by an earlier run of this job that did not finish", stale)
    for temp, why in kept:
        log.warning("kept %s: %s", temp, why)
    return log


def _report_to(stream: TextIO, smk: Any) -> Callable[..., None]:
    """An excepthook: the traceback to ``sys.stderr`` (the job's log), and one line
    ``<rule> (<wildcards>): <Error>: <message> (traceback: <log>)`` to ``stream``."""

    def hook(exc_type: type[BaseException], exc: BaseException,
             tb: TracebackType | None) -> None:
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        sys.stderr.flush()
        wildcards = ", ".join(f"{k}={v}" for k, v in dict(smk.wildcards.items()).items()) \
            if hasattr(smk, "wildcards") else ""
        where = f"{getattr(smk, 'rule', 'job')}" + (f" ({wildcards})" if wildcards else "")
        message = " ".join(f"{exc_type.__name__}: {exc}".split())
        print(f"{where}: {message} (traceback: {smk.log[0]})", file=stream, flush=True)

    return hook
