"""Tests for what extraction overlaps or reuses to keep up with a bare forward pass (issue
21): images read one batch ahead on a background thread
(:func:`emergence.extraction.preprocess._read_ahead`) and the disk stores' read-back
buffers taken from the staging ring's memory (:class:`emergence.extraction.rowstore._Spill`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import emergence.extraction.rowstore as rowstore
from emergence.extraction.preprocess import _read_ahead, image_loader
from emergence.extraction.rowstore import RowStores
from emergence.stats._gram import KC
from emergence.stats.similarity import PearsonAccumulator


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "image-reader"]


def _images(tmp_path: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255 - 0.5


def test_batches_read_ahead_equal_the_loaders_in_order(tmp_path: Path) -> None:
    paths = _images(tmp_path, 7)
    inline = list(image_loader(paths, _to_tensor, batch_size=3, num_workers=0,
                               pin_memory=False).loader)
    batches = image_loader(paths, _to_tensor, batch_size=3, num_workers=0, pin_memory=False)
    ahead = list(batches)
    assert [b.shape[0] for b in ahead] == [3, 3, 1]
    for (want, _), got in zip(inline, ahead, strict=True):
        assert torch.equal(want, got)
    assert batches.exif_orientation.tolist() == [0] * 7
    assert not _reader_threads()


def test_the_reader_thread_runs_torch_on_one_thread_and_leaves_the_callers_alone() -> None:
    seen: list[int] = []

    def items():
        for i in range(3):
            seen.append(torch.get_num_threads())
            yield i

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert list(_read_ahead(items())) == [0, 1, 2]
        assert seen == [1, 1, 1]
        assert torch.get_num_threads() == 2
        fresh: list[int] = []  # a thread started afterwards gets the caller's setting
        t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert fresh == [2]
    finally:
        torch.set_num_threads(threads)


def test_an_error_on_the_reader_thread_is_raised_at_its_batch(tmp_path: Path) -> None:
    paths = _images(tmp_path, 5)
    Path(paths[3]).write_bytes(b"not an image")
    got = []
    with pytest.raises(OSError, match=r"3\.png: not an image file PIL can read"):
        for batch in image_loader(paths, _to_tensor, batch_size=2, num_workers=0,
                                  pin_memory=False):
            got.append(batch.shape[0])
    assert got == [2]  # the first batch came; the second held the bad file
    assert not _reader_threads()


def test_closing_early_stops_the_reader_thread() -> None:
    produced: list[int] = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    it = _read_ahead(items())
    assert next(it) == 0
    it.close()
    assert not _reader_threads()
    assert len(produced) <= 4  # one being read, one waiting, not all 1,000


def _fill(stores: RowStores, mats: dict[str, np.ndarray], batch: int) -> None:
    n = next(iter(mats.values())).shape[0]
    for start in range(0, n, batch):
        rows = slice(start, min(start + batch, n))
        for name, m in mats.items():
            stores.write(name, rows, torch.from_numpy(m[rows]))
    stores.flush()


def test_read_buffers_reuse_the_staging_ring_and_statistics_keep_their_bits(
        tmp_path: Path) -> None:
    n, batch = 13, 4
    rng = np.random.default_rng(1)
    mats = {"a": rng.standard_normal((n, 3 * KC + 5)).astype(np.float32),
            "b": (rng.standard_normal((n, KC + 9)) + 40).astype(np.float32)}
    with RowStores(tmp_path / "out.h5", n, batch, 1) as stores:
        stores.allocate({k: m.shape[1] for k, m in mats.items()}, torch.device("cpu"),
                        device_budget_bytes=None, ram_budget_bytes=0)
        _fill(stores, mats, batch)
        spill = stores._spill
        assert spill is not None
        accs = list(stores.statistics(list(mats)))
        # the read buffers of the thread(s) that reduced the stores lie in the ring
        assert spill._retired and spill._arena_used > 0
        with pytest.raises(RuntimeError, match="being read back: no more writes"):
            stores.write("a", slice(0, 1), torch.from_numpy(mats["a"][:1]))
        for name, acc in zip(mats, accs, strict=True):
            ref = PearsonAccumulator(n)
            ref.update(mats[name])
            assert np.array_equal(acc.gram, ref.gram)
            assert np.array_equal(acc.sums, ref.sums)
            assert np.array_equal(stores.rows(name), mats[name])


def test_read_buffers_larger_than_the_ring_are_allocated(tmp_path: Path) -> None:
    spill = rowstore._Spill(str(tmp_path), 4096, ring_bytes=2 * 4096)
    try:
        small = spill.read_buffers(4096)
        assert all(np.shares_memory(b, spill._arena) for b in small)
        assert spill.read_buffers(4096) is small  # kept for this thread
        big = spill.read_buffers(3 * 4096)
        assert not any(np.shares_memory(b, spill._arena) for b in big)
        assert all(len(b) >= 3 * 4096 and b.ctypes.data % 4096 == 0 for b in big)
    finally:
        spill.close()
