"""Where the arithmetic runs: ``"auto"`` means CUDA when available, else CPU.

The workflow's GPU bookkeeping lives here too, so the rules stay thin:

* :func:`uses_cuda` -- whether a job with a given ``device`` setting runs on CUDA, decided
  where the DAG is built; the rules request ``gpu=1`` exactly for those jobs.
* :func:`gpu_slots` -- the workflow-wide ``gpu`` resource of a local run: the number of
  visible devices, so that at most one job runs on each.
* :func:`job_device` -- the device a job script uses: CUDA only when the config says
  ``cuda`` or the job was granted a ``gpu``; the job then claims one visible device for itself
  (:func:`claim_slot`), so that two GPU jobs never share one and each may size its device
  memory from the whole device's free memory.

torch is imported by the functions that need it, not with this module: building the DAG
and the jobs that compute no tensors stay free of it. On a machine with no GPU driver
(:func:`_no_gpu_driver`), CUDA is known to be unavailable without asking torch.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "claim_slot",
    "cuda_available",
    "gpu_slots",
    "job_device",
    "resolve_device",
    "uses_cuda",
    "visible_cuda_devices",
]

DEVICES = ("auto", "cpu", "cuda")
# Set by SLURM in a job that was allocated GPUs (the job's devices are then the visible ones).
_SLURM_GPU_VARS = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
# Traces of a GPU driver a CUDA (or ROCm) build of torch talks to: NVIDIA's kernel module and
# device files (also what a container granted GPUs sees), Jetson's, WSL's and AMD's.
_GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0",
                     "/dev/nvhost-ctrl-gpu", "/dev/dxg", "/dev/kfd")


def _no_gpu_driver() -> bool:
    """True when no GPU driver is installed: no driver file, and no CUDA driver library
    (``libcuda``, which torch's CUDA needs) on the loader's path. ``torch.cuda.is_available()``
    is then False, and answering it without importing torch saves every job ~2 s."""
    if any(os.path.exists(f) for f in _GPU_DRIVER_FILES):
        return False
    import ctypes.util

    return ctypes.util.find_library("cuda") is None


def _cuda_present() -> bool:
    """``torch.cuda.is_available()``, importing torch only where a GPU driver is present."""
    if _no_gpu_driver():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else via ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_available(environ: Mapping[str, str] | None = None, *,
                   present: bool | None = None) -> bool:
    """Whether this process may use CUDA: a device is visible (``present``, default
    ``torch.cuda.is_available()``) and, inside a SLURM job (``environ``, default
    ``os.environ``), the job was allocated GPUs: a node's devices may be visible to jobs that
    did not ask for them."""
    env = os.environ if environ is None else environ
    if not (_cuda_present() if present is None else present):
        return False
    if env.get("SLURM_JOB_ID"):
        return any(env.get(v, "").strip() not in ("", "0") for v in _SLURM_GPU_VARS)
    return True


def visible_cuda_devices() -> int:
    """CUDA devices this process may use (0 without CUDA)."""
    if not cuda_available():
        return 0
    import torch

    return torch.cuda.device_count()


def _check(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")


def uses_cuda(device: str, *, available: bool | None = None) -> bool:
    """Whether a job configured with ``device`` runs on CUDA: ``"cuda"``, or ``"auto"`` where
    CUDA is available (``available``, default :func:`cuda_available` here, i.e. where the
    DAG is built). The rules request ``gpu=1`` for exactly these jobs."""
    _check(device)
    if device == "auto":
        return cuda_available() if available is None else available
    return device == "cuda"


def gpu_slots(user_resources: Mapping[str, Any], *, local: bool,
              devices: int | None = None) -> int | None:
    """The workflow-wide ``gpu`` resource to declare, or None to leave it alone.

    Local runs get the number of visible devices (``devices``, default
    :func:`visible_cuda_devices`): with ``gpu=1`` per CUDA job, at most one job per device.
    Not when the user gave ``--resources gpu=N`` (theirs stands), and not for cluster runs
    (the scheduler, not this machine, owns the GPUs there).
    """
    if "gpu" in user_resources or not local:
        return None
    return visible_cuda_devices() if devices is None else devices


def _lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"emergence-gpu-{os.getuid()}"


_HELD: dict[str, int] = {}  # lock file -> descriptor, held for the life of the process


def claim_slot(keys: Sequence[str], lock_dir: str | os.PathLike[str] | None = None, *,
               poll_s: float = 1.0) -> int:
    """Index of the first of ``keys`` no other process holds, now held by this one.

    An exclusive ``flock`` on ``<lock_dir>/<key>.lock``: released by the kernel when the
    process ends, however it ends. When every key is held (another workflow on the same
    machine), waits for one. A process that claims again gets the slot it already holds.
    """
    if not keys:
        raise ValueError("no slots to claim")
    folder = Path(lock_dir) if lock_dir is not None else _lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", k) + ".lock")) for k in keys]
    for i, path in enumerate(paths):
        if path in _HELD:
            return i
    while True:
        for i, path in enumerate(paths):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _HELD[path] = fd
            return i
        time.sleep(poll_s)


def _device_keys() -> list[str]:
    """A name per visible device that is the same in every process on this machine."""
    import torch

    n = torch.cuda.device_count()
    keys = []
    for i in range(n):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        keys.append(f"uuid-{uuid}" if uuid else "")
    if all(keys):
        return keys
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    if len(visible) == n and all(visible):
        return [f"visible-{v}" for v in visible]
    return [f"index-{i}" for i in range(n)]


def job_device(device: str, gpus: int | None) -> str:
    """The device a job script runs on, given the config's ``device`` and the ``gpu``
    resource the job was granted (``snakemake.resources.gpu``).

    ``cpu``, and ``auto`` without a granted GPU, give ``"cpu"``: a job that declared no GPU
    never touches one. ``cuda``, and ``auto`` with a GPU, claim one visible device for this
    job (see :func:`claim_slot`) and give ``"cuda:<index>"``.
    """
    _check(device)
    if device == "cpu" or (device == "auto" and not gpus):
        return "cpu"
    import torch  # the job computes on CUDA: torch decides

    if not torch.cuda.is_available():
        why = "device 'cuda' is configured" if device == "cuda" else "the job was granted a gpu"
        raise RuntimeError(f"{why}, but no CUDA device is available to this job")
    return f"cuda:{claim_slot(_device_keys())}"
