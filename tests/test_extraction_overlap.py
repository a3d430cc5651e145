"""Tests for what extraction overlaps, reuses or skips to keep up with a bare forward pass
(issue 21): images read one batch ahead on a background thread
(:func:`emergence.extraction.preprocess._read_ahead`), the disk stores' read-back buffers
taken from the staging ring's memory (:class:`emergence.extraction.rowstore._Spill`), a
batch staged for the disk by two threads at once, and the shape probe run with fake tensors
(:func:`emergence.extraction.forward.probe`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

import emergence.extraction.rowstore as rowstore
from emergence.extraction.forward import Capture, probe
from emergence.extraction.preprocess import _read_ahead, image_loader
from emergence.extraction.rowstore import RowStores
from emergence.sources.models.layers import LayerSpec
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


def _disk_stores(tmp_path: Path, mats: dict[str, np.ndarray], batch: int,
                 stager: bool) -> tuple[list[PearsonAccumulator], list[np.ndarray], set[str]]:
    """Write ``mats`` to disk stores batch by batch (with or without the stager thread) and
    read them back: statistics, rows, and the names of the threads that staged blocks."""
    n = next(iter(mats.values())).shape[0]
    staged_by: set[str] = set()
    real_copyto = np.copyto

    def copyto(dst, src, *args, **kwargs):  # type: ignore[no-untyped-def]
        staged_by.add(threading.current_thread().name.split("_")[0])
        real_copyto(dst, src, *args, **kwargs)

    with RowStores(tmp_path / f"out-{stager}.h5", n, batch, KC) as stores:
        stores.allocate({k: v.shape[1] for k, v in mats.items()}, torch.device("cpu"),
                        device_budget_bytes=0, ram_budget_bytes=0)
        spill = stores._spill
        assert spill is not None
        if not stager:
            spill.stager.shutdown(wait=True)
            spill.stager = None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rowstore.np, "copyto", copyto)
            for r0 in range(0, n, batch):
                for name, mat in mats.items():
                    stores.write(name, slice(r0, min(r0 + batch, n)),
                                 torch.from_numpy(mat[r0 : r0 + batch]))
        stores.flush()
        accs = list(stores.statistics(list(mats)))
        rows = [stores.rows(name) for name in mats]
    return accs, rows, staged_by


def test_two_threads_stage_a_batch_with_the_bits_of_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 11
    mats = {"wide": rng.standard_normal((n, 5 * KC + 77)).astype(np.float32),
            "one-block": rng.standard_normal((n, KC - 5)).astype(np.float32)}
    two, rows_two, by_two = _disk_stores(tmp_path, mats, 4, stager=True)
    one, rows_one, by_one = _disk_stores(tmp_path, mats, 4, stager=False)
    assert by_two == {"MainThread", "spill-stager"} and by_one == {"MainThread"}
    for a, b, r2, r1, mat in zip(two, one, rows_two, rows_one, mats.values(), strict=True):
        assert np.array_equal(a.gram, b.gram) and np.array_equal(a.sums, b.sums)
        assert np.array_equal(r2, mat) and np.array_equal(r1, mat)
        ref = PearsonAccumulator(n)
        ref.update(mat)
        assert np.array_equal(a.gram, ref.gram)


def test_an_error_on_the_stager_thread_is_raised_at_the_write(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    real_copyto = np.copyto

    def copyto(dst, src, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread().name.startswith("spill-stager"):
            raise OSError("stager failed")
        real_copyto(dst, src, *args, **kwargs)

    with RowStores(tmp_path / "out.h5", 3, 3, KC) as stores:
        stores.allocate({"a": 3 * KC}, torch.device("cpu"), device_budget_bytes=0,
                        ram_budget_bytes=0)
        monkeypatch.setattr(rowstore.np, "copyto", copyto)
        with pytest.raises(OSError, match="stager failed"):
            stores.write("a", slice(0, 3), torch.zeros((3, 3 * KC)))
        spill = stores._spill
        assert spill is not None
        spill.flush()  # every buffer is back in the ring: no wait for a lost one
        assert spill._free.qsize() == len(spill._buffers)
    assert not [t for t in threading.enumerate() if t.name.startswith("spill-stager")]


class _Counted(nn.Module):
    """Counts the real (not fake) images it sees; optionally reads a value (which a fake
    pass cannot) or caches a tensor on itself."""

    def __init__(self, reads_value: bool = False, caches: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.reads_value, self.caches = reads_value, caches
        self.real_images = 0
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, FakeTensor):
            self.real_images += x.shape[0]
        y = torch.relu(self.conv(x))
        if self.reads_value and float(y.sum()) < 0:
            y = -y
        if self.caches:
            self.cache = y.detach()
        return self.fc(y.flatten(1))


_LAYERS = [LayerSpec("pixels", ""), LayerSpec("conv", "conv"), LayerSpec("fc", "fc")]


@pytest.mark.parametrize("kind", ["plain", "reads_value", "caches"])
def test_the_probe_is_fake_where_the_network_allows_and_real_where_it_does_not(
        kind: str) -> None:
    net = _Counted(reads_value=kind == "reads_value", caches=kind == "caches").eval()
    with Capture(net, _LAYERS, lambda *_: None) as capture, torch.inference_mode():
        probe(net, torch.zeros(1, 3, 8, 8), capture)
        capture.end_probe()
    assert capture.shapes == {"pixels": (3, 8, 8), "conv": (4, 6, 6), "fc": (5,)}
    assert net.real_images == (1 if kind == "reads_value" else 0)
    assert net.cache is None  # a fake tensor cached by the fake pass is not kept


def test_a_layer_error_comes_from_the_real_probe() -> None:
    layer = nn.Linear(4, 4)
    layers = [LayerSpec("twice", "0")]
    twice = nn.Sequential(layer, layer).eval()  # the same module runs twice per pass
    with Capture(twice, layers, lambda *_: None) as capture, torch.inference_mode(), \
            pytest.raises(RuntimeError, match="runs more than once per forward pass"):
        probe(twice, torch.zeros(1, 4), capture)
