"""Tests for emergence.extraction.rowstore (RowStores: device, RAM and disk row stores) and
emergence.extraction.moments, without a network: rows written batch by batch must come
back as written and give the streamed Pearson statistics of the whole matrix."""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import emergence.extraction.rowstore as rowstore
from emergence.extraction.moments import device_moments
from emergence.extraction.rowstore import RowStores
from emergence.stats._gram import KC
from emergence.stats.similarity import PearsonAccumulator

N = 11
BATCH = 4  # 11 rows: batches of 4, 4 and 3
#: Layer name -> features: several disk column blocks (chunk_features=1 -> KC columns),
#: a narrow layer, a width that is no multiple of the block; in "network order".
WIDTHS = {"conv": 2 * KC + 7, "pool": 3, "fc": KC + 500, "logits": 300}


def matrices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal((N, width)) * 3 + 50).astype(np.float32)
            for name, width in WIDTHS.items()}


def fill(stores: RowStores, mats: dict[str, np.ndarray]) -> None:
    for start in range(0, N, BATCH):
        rows = slice(start, min(start + BATCH, N))
        for name, m in mats.items():
            stores.write(name, rows, torch.from_numpy(m[rows]))
    stores.flush()


def reference(m: np.ndarray) -> PearsonAccumulator:
    acc = PearsonAccumulator(N)
    acc.update(m)
    return acc


def nbytes(name: str) -> int:
    return N * WIDTHS[name] * 4


@pytest.mark.parametrize("kind", ["ram", "disk-direct", "disk-buffered", "device"])
def test_rows_and_moments_come_back_from_every_kind_of_store(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rowstore, "_USE_O_DIRECT", kind != "disk-buffered")
    mats = matrices()
    out = tmp_path / "stats.h5"
    budgets = {"ram": (0, 1 << 30), "device": (1 << 30, 0)}.get(kind, (0, 0))
    with RowStores(out, N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=budgets[0],
                        ram_budget_bytes=budgets[1])
        on_disk = kind.startswith("disk")
        assert stores.spilled == (list(WIDTHS) if on_disk else [])
        assert stores.on_device == (list(WIDTHS) if kind == "device" else [])
        spill_dirs = [p for p in tmp_path.iterdir() if p.name.startswith(".stats.h5.spill-")]
        assert len(spill_dirs) == on_disk
        if on_disk:
            assert sorted(p.name for p in spill_dirs[0].iterdir()) == ["0.f32", "1.f32", "2.f32",
                                                                       "3.f32"]
        fill(stores, mats)
        for name, m in mats.items():
            assert stores.features(name) == WIDTHS[name]
            assert np.array_equal(stores.rows(name), m), name
            got, expected = stores.moments(name), reference(m)
            assert got.n_features == WIDTHS[name]
            np.testing.assert_allclose(got.correlation(), np.corrcoef(m.astype(np.float64)),
                                       rtol=0, atol=1e-10, err_msg=name)
            for stat in ("sums", "gram", "shift"):
                a, b = getattr(got, stat), getattr(expected, stat)
                if kind == "device":  # torch's summation order: equal to float64 rounding
                    scale = np.abs(expected.gram).max()
                    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * scale, err_msg=name)
                else:  # the same float32 numbers in the same blocks: the same bits
                    assert np.array_equal(a, b), (kind, name, stat)
            stores.release(name)
    assert list(tmp_path.iterdir()) == []  # no spill directory left


def test_smallest_stores_go_to_the_device_then_ram_then_disk(tmp_path: Path) -> None:
    by_size = sorted(WIDTHS, key=WIDTHS.get)  # type: ignore[arg-type]  # pool, logits, fc, conv
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=nbytes(by_size[0]),
                        ram_budget_bytes=nbytes(by_size[1]) + nbytes(by_size[2]) - 1)
        assert stores.on_device == [by_size[0]]
        # the RAM budget takes the next smallest while it fits, the rest spill in
        # allocation order
        assert stores.spilled == [name for name in WIDTHS if name not in by_size[:2]]
        mats = matrices()
        fill(stores, mats)
        for name, m in mats.items():
            assert np.array_equal(stores.rows(name), m)
    assert list(tmp_path.iterdir()) == []


def test_disk_stores_use_o_direct_where_the_file_system_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags: list[bool] = []
    real_open = rowstore._Spill.open

    def recording_open(self: rowstore._Spill, name: str) -> int:
        fd = real_open(self, name)
        flags.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)))
        return fd

    monkeypatch.setattr(rowstore._Spill, "open", recording_open)
    for direct in (False, True):
        monkeypatch.setattr(rowstore, "_USE_O_DIRECT", direct)
        flags.clear()
        with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
            stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0,
                            ram_budget_bytes=0)
        assert len(flags) == len(WIDTHS)
        if not direct:
            assert not any(flags)
        elif sys.platform == "linux" and probe_o_direct(tmp_path):
            assert all(flags)


def probe_o_direct(directory: Path) -> bool:
    try:
        fd = os.open(directory / ".probe", os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    os.close(fd)
    (directory / ".probe").unlink()
    return True


def test_released_files_are_deleted_and_nothing_is_left(tmp_path: Path) -> None:
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0, ram_budget_bytes=0)
        fill(stores, matrices())
        (spill,) = tmp_path.iterdir()
        stores.moments("conv")
        stores.release("conv")
        stores.release("conv")  # once only
    assert list(tmp_path.iterdir()) == []
    assert not spill.exists()
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


def test_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    too_many = torch.zeros((BATCH + 1, WIDTHS["conv"]))
    with RowStores(tmp_path / "stats.h5", N, 1, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0, ram_budget_bytes=0)
        with pytest.raises(ValueError, match="5 rows exceed the spill buffers' size"):
            stores.write("conv", slice(0, BATCH + 1), too_many)

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rowstore.os, "pwrite", full)
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0, ram_budget_bytes=0)
        with pytest.raises(OSError, match=r"^\[Errno 28\] spilling activations to .*/\.stats\.h5"
                                          r"\.spill-.*/0\.f32: No space left on device; free disk "
                                          r"space there or raise extraction\.ram_budget_mb"):
            fill(stores, matrices())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chunk_features", [1, 100, 10**6])
def test_device_moments_match_the_accumulator(chunk_features: int) -> None:
    m = matrices()["conv"]
    got, expected = device_moments(torch.from_numpy(m), chunk_features), reference(m)
    assert got.n_features == m.shape[1]
    # float64 sums in another order: equal to float64 rounding (relative to the diagonal)
    scale = np.abs(expected.gram).max()
    np.testing.assert_allclose(got.shift, expected.shift, rtol=1e-14)
    np.testing.assert_allclose(got.sums, expected.sums, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(got.gram, expected.gram, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(got.correlation(), expected.correlation(), rtol=0, atol=1e-12)


def test_disk_stores_stage_every_layout_and_dtype_the_same(tmp_path: Path) -> None:
    """Float32 host batches are staged by numpy, the others (another dtype) by torch: any
    layout, either path and numpy input give the same rows and the same statistics' bits."""
    m = matrices()["conv"]
    wide = np.concatenate([m, m], axis=1)

    def contiguous(rows: slice) -> torch.Tensor:
        return torch.from_numpy(m[rows].copy())

    def column_slice(rows: slice) -> torch.Tensor:  # row stride 2 F: not contiguous
        return torch.from_numpy(wide[rows])[:, WIDTHS["conv"]:]

    def fortran(rows: slice) -> torch.Tensor:
        return torch.from_numpy(np.asfortranarray(m[rows]))

    def inference(rows: slice) -> torch.Tensor:
        with torch.inference_mode():
            return torch.from_numpy(m[rows]) * 1.0

    def float64(rows: slice) -> torch.Tensor:  # torch's copy converts
        return torch.from_numpy(m[rows].astype(np.float64))

    def array(rows: slice) -> np.ndarray:
        return m[rows]

    results = []
    for source in (contiguous, column_slice, fortran, inference, float64, array):
        with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
            stores.allocate({"conv": WIDTHS["conv"]}, torch.device("cpu"),
                            device_budget_bytes=0, ram_budget_bytes=0)
            assert stores.spilled == ["conv"]
            for start in range(0, N, BATCH):
                rows = slice(start, min(start + BATCH, N))
                stores.write("conv", rows, source(rows))  # type: ignore[arg-type]
            stores.flush()
            assert np.array_equal(stores.rows("conv"), m), source.__name__
            acc = stores.moments("conv")
            results.append((source.__name__, acc.gram, acc.sums))
    for name, gram, sums in results[1:]:
        assert np.array_equal(gram, results[0][1]) and np.array_equal(sums, results[0][2]), name


def test_the_kernel_loads_in_the_background_and_its_errors_come_from_moments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host stores start loading the statistics kernel on a thread at allocation (device
    stores need none); a failure there is not swallowed: the statistics raise it."""
    import emergence.stats._gram as gram

    real_load = rowstore._load_kernel
    loads: list[str] = []
    monkeypatch.setattr(rowstore, "_load_kernel",
                        lambda: loads.append(threading.current_thread().name))
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=1 << 30,
                        ram_budget_bytes=0)
        assert stores.on_device == list(WIDTHS)
    assert loads == []
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0, ram_budget_bytes=0)
        fill(stores, matrices())
        stores.moments("conv")
    assert loads == ["load-kernel"]

    def broken(*args: object) -> None:
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(rowstore, "_load_kernel", real_load)
    monkeypatch.setattr(gram, "_accumulate", broken)
    with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
        stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=0, ram_budget_bytes=0)
        fill(stores, matrices())
        with pytest.raises(RuntimeError, match="kernel failed"):
            stores.moments("conv")


@pytest.mark.parametrize("threads", [1, 2])
def test_statistics_come_in_order_with_the_bits_of_one_store_at_a_time(
    threads: int, tmp_path: Path
) -> None:
    """RowStores.statistics reduces host stores two at a time on two threads or more (one at
    a time on one): the same bits as moments() one store after the other, in the order
    asked for, device, RAM and disk stores alike; closing it early stops it cleanly."""
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("numba has fewer threads")
    by_size = sorted(WIDTHS, key=WIDTHS.get)  # type: ignore[arg-type]
    mats = matrices()
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with RowStores(tmp_path / "stats.h5", N, BATCH, chunk_features=1) as stores:
            stores.allocate(WIDTHS, torch.device("cpu"), device_budget_bytes=nbytes(by_size[0]),
                            ram_budget_bytes=nbytes(by_size[1]))
            assert stores.on_device and stores.spilled
            fill(stores, mats)
            names = list(reversed(WIDTHS))
            expected = [stores.moments(name) for name in names]
            got = list(stores.statistics(names))
            assert rowstore._statistics_lanes(threads) == threads
            for name, a, b in zip(names, got, expected, strict=True):
                assert a.n_features == b.n_features == WIDTHS[name]
                for stat in ("sums", "gram", "shift"):
                    assert np.array_equal(getattr(a, stat), getattr(b, stat)), (name, stat)
            statistics = stores.statistics(names)
            next(statistics)
            statistics.close()
            assert not [t for t in threading.enumerate() if t.name.startswith("statistics")]
    finally:
        numba.set_num_threads(saved)
