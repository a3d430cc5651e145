"""Which jobs use CUDA, how many GPU jobs a local run allows, and which device each takes.

No GPU here: the CUDA side is tested through the decision functions' inputs (what is
visible, what SLURM allocated, what the job was granted) and the device claim through its
locks; nothing here measures a GPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emergence.device import (
    claim_slot,
    cuda_available,
    gpu_slots,
    job_device,
    uses_cuda,
    visible_cuda_devices,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cuda", False, True),  # asked for: the job requests a GPU even if this host has none
    ("cuda", True, True),
    ("auto", True, True),
    ("auto", False, False),
    ("cpu", True, False),
    ("cpu", False, False),
])
def test_uses_cuda(device: str, available: bool, expected: bool) -> None:
    assert uses_cuda(device, available=available) is expected


def test_uses_cuda_auto_is_decided_here() -> None:
    assert uses_cuda("auto") is cuda_available()
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, not 'gpu'"):
        uses_cuda("gpu")


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, True),  # no SLURM job: what is visible
    ({"SLURM_JOB_ID": "7"}, False),  # a SLURM job that was allocated no GPU
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "0"}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "1"}, True),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "3"}, True),
])
def test_cuda_available_inside_slurm_only_with_allocated_gpus(environ: dict[str, str],
                                                              expected: bool) -> None:
    assert cuda_available(environ, present=True) is expected
    assert cuda_available(environ, present=False) is False


def test_gpu_slots() -> None:
    assert gpu_slots({}, local=True, devices=3) == 3
    assert gpu_slots({}, local=True, devices=0) == 0
    assert gpu_slots({}, local=True) == visible_cuda_devices()
    assert gpu_slots({"gpu": 1}, local=True, devices=3) is None  # --resources gpu=1 stands
    assert gpu_slots({}, local=False, devices=3) is None  # a cluster's GPUs are not ours


@pytest.mark.parametrize("gpus", [0, None])
def test_a_job_without_a_gpu_never_touches_one(gpus: int | None) -> None:
    assert job_device("auto", gpus) == "cpu"
    assert job_device("cpu", 1) == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_device_is_one_line() -> None:
    with pytest.raises(RuntimeError, match=r"^device 'cuda' is configured, but no CUDA device "
                                           r"is available to this job$"):
        job_device("cuda", 0)
    with pytest.raises(RuntimeError, match="^the job was granted a gpu, but no CUDA device"):
        job_device("auto", 1)


CLAIM = """
import sys
from emergence.device import claim_slot
print(claim_slot(["a", "b"], sys.argv[1], poll_s=0.05), flush=True)
if len(sys.argv) > 2:
    sys.stdin.read()  # hold the claim until the parent closes stdin
"""


def claim_elsewhere(lock_dir: Path, hold: bool = False) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", CLAIM, str(lock_dir), *(["hold"] if hold else [])]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_claim_slot_gives_each_process_its_own_device(tmp_path: Path) -> None:
    assert claim_slot(["a", "b"], tmp_path) == 0
    assert claim_slot(["a", "b"], tmp_path) == 0  # the same process keeps its slot
    holder = claim_elsewhere(tmp_path, hold=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
    # both held: a third process waits until the holder ends (the kernel drops its lock)
    waiter = claim_elsewhere(tmp_path)
    with pytest.raises(subprocess.TimeoutExpired):
        waiter.wait(timeout=1.0)
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0
    out, _ = waiter.communicate(timeout=30)
    assert out.strip() == "1"


def test_claim_slot_needs_a_slot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no slots"):
        claim_slot([], tmp_path)
