"""Helpers for the workflow's thin rule scripts: logging and thread setup."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["start"]


def start(smk: Any) -> logging.Logger:
    """Send this job's stderr (progress bars, warnings) to its log file; pin thread counts."""
    if getattr(smk, "log", None):
        fh = open(smk.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = fh
        os.dup2(fh.fileno(), 2)
    threads = max(int(getattr(smk, "threads", 1) or 1), 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger(f"emergence.{getattr(smk, 'rule', 'job')}")
    log.info("rule %s, wildcards %s", getattr(smk, "rule", "?"), dict(smk.wildcards.items())
             if hasattr(smk, "wildcards") else {})
    return log
