"""Row stores: each layer's ``N x F`` float32 activations, from the forward pass to statistics.

:class:`RowStores` is the one entry point. After the one-image probe,
:meth:`RowStores.allocate` places each layer's store, smallest layers first: on a
GPU, a tensor in device memory while the stores fit ``device_budget_bytes``; then an
in-memory array while they fit ``ram_budget_bytes``; otherwise a file in a scratch
directory ``.<out name>.spill-<host>-<pid>-<random>/`` beside the output
(:func:`emergence.io.scratch_dir`). The forward hooks :meth:`~RowStores.write` each
batch's rows; after the last batch :meth:`~RowStores.moments` reduces a store to its
:class:`~emergence.stats.similarity.PearsonAccumulator` statistics (device stores in
torch on the device, the others with the fused numba kernel), :meth:`~RowStores.rows`
reads a store whole, and :meth:`~RowStores.release` frees it.

Disk stores are written column-block by column-block from a small ring of page-aligned
staging buffers by background threads (``O_DIRECT`` where the file system allows it,
so the spilled gigabytes never pass through the page cache) and read back one block
ahead, in threads. Statistics blocks are ``chunk_features`` rounded up to the kernel's
cache block, so RAM and disk stores give bit-identical statistics.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch
from numpy.typing import NDArray

from emergence.extraction.moments import device_moments
from emergence.io import scratch_dir
from emergence.stats.similarity import CHUNK_COLUMNS as KC
from emergence.stats.similarity import PearsonAccumulator

__all__ = ["RowStores"]

_ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and buffer addresses
_USE_O_DIRECT = True  # tests switch it off to cover the buffered fallback
_READERS = 4  # concurrent reads per disk-store block
#: Threads writing the staging buffers out: one 8 MB ``O_DIRECT`` write at a time gave
#: 1.3-1.5 GB/s on this project's VM, four at a time 1.9-2.4 GB/s, so the ring drains
#: faster after the large early layers of a batch and the hooks wait less for a buffer.
_WRITERS = 4


def _block_columns(chunk_features: int) -> int:
    """Columns per statistics block: ``chunk_features`` rounded up to a multiple of the
    kernel's cache block (so RAM and disk stores give bit-identical statistics)."""
    return -(-chunk_features // KC) * KC


def _aligned_buffer(nbytes: int) -> NDArray[np.uint8]:
    """A byte array whose address and length are multiples of 4 KiB (usable for
    ``O_DIRECT``), at least one page: an anonymous memory map of its own, so that it
    lives outside the malloc heap, which the forward pass keeps for its activations
    (:func:`emergence.extraction.forward.reused_heap`): a long-lived block there would
    split the heap, and the next batch's activations would not fit the holes."""
    nbytes = max(-(-nbytes // _ALIGN) * _ALIGN, _ALIGN)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)


class _Spill:
    """Background writer for the disk row stores, through a small ring of page-aligned
    staging buffers, and the directory their files live in.

    The forward hooks copy each batch into a free staging buffer (reused: no page
    faults) and go on; :data:`_WRITERS` threads write the buffers out while the network
    computes.
    Files are opened with ``O_DIRECT`` where the file system allows it: the pages then
    never enter the page cache (so they cost neither page faults nor writeback, and do
    not count towards the process's memory); otherwise plain buffered I/O.

    The ring is one allocation, which the read-back buffers of the statistics reuse once
    every write is done (:meth:`read_buffers`): on this project's VM the first touch of
    fresh memory costs about 3 s per GiB (the host backs guest pages lazily), so 174 MB
    of separate read buffers per call (two reading threads x two 43 MB blocks at 166
    images) cost about half a second.
    """

    def __init__(self, directory: str, slot_bytes: int, ring_bytes: int = 256 << 20) -> None:
        self.directory = directory
        self.slot_bytes = -(-slot_bytes // _ALIGN) * _ALIGN
        slots = max(2, min(64, ring_bytes // self.slot_bytes))
        self._arena = _aligned_buffer(slots * self.slot_bytes)
        self._arena_used = 0  # bytes of the arena handed out as read buffers
        self._arena_lock = threading.Lock()
        self._retired = False  # the ring is read buffers now: no more writes
        self._free: queue.Queue[NDArray[np.uint8]] = queue.Queue()
        self._buffers = [self._arena[i * self.slot_bytes : (i + 1) * self.slot_bytes]
                         for i in range(slots)]
        for buf in self._buffers:
            self._free.put(buf)
        self._jobs: queue.Queue[tuple[int, NDArray[np.uint8] | None, int, int, str] | None] = (
            queue.Queue())
        self._error: BaseException | None = None
        self._read = threading.local()  # each reading thread's two buffers
        self._threads = [threading.Thread(target=self._write_loop, name="spill-writer",
                                          daemon=True) for _ in range(_WRITERS)]
        for thread in self._threads:
            thread.start()
        #: The second thread staging a batch (numpy's copy runs on one thread and releases
        #: the GIL): the forward pass waits for the copy, with a core idle otherwise.
        self.stager: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="spill-stager")

    def open(self, name: str) -> int:
        path = os.path.join(self.directory, name)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        direct = getattr(os, "O_DIRECT", 0) if _USE_O_DIRECT else 0
        if direct:
            try:
                return os.open(path, flags | direct, 0o600)
            except OSError as err:  # e.g. tmpfs: EINVAL
                if err.errno != errno.EINVAL:
                    raise
        return os.open(path, flags, 0o600)

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fd, buf, nbytes, offset, path = job
            if buf is None:  # a finished store: free its disk space (see release)
                with contextlib.suppress(OSError):
                    os.close(fd)
                    os.unlink(path)
                continue
            try:
                if self._error is None:
                    view = memoryview(buf)[:nbytes]  # type: ignore[arg-type]
                    while view:
                        written = os.pwrite(fd, view, offset)
                        view, offset = view[written:], offset + written
            except OSError as err:
                self._error = OSError(err.errno, f"spilling activations to {path}: "
                                                 f"{err.strerror}; free disk space there "
                                                 "or raise extraction.ram_budget_mb in the "
                                                 "config (ram_budget_bytes)")
            finally:
                self._free.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def acquire(self) -> NDArray[np.uint8]:
        self._check()
        if self._retired:
            raise RuntimeError("the disk stores are being read back: no more writes")
        return self._free.get()

    def give_back(self, buf: NDArray[np.uint8]) -> None:
        """Return a buffer taken by :meth:`acquire` that was not submitted."""
        self._free.put(buf)

    def submit(self, fd: int, buf: NDArray[np.uint8], nbytes: int, offset: int, path: str) -> None:
        self._jobs.put((fd, buf, nbytes, offset, path))

    def flush(self) -> None:
        """Wait until every submitted write is on disk (or failed: raise its error)."""
        with self._arena_lock:
            if not self._retired:
                for buf in self._await_writes():
                    self._free.put(buf)
        self._check()

    def _await_writes(self) -> list[NDArray[np.uint8]]:
        """Every staging buffer, taken from the free queue once the writers have given it
        back: all submitted writes are done (callers hold ``_arena_lock``)."""
        return [self._free.get() for _ in self._buffers]

    def release(self, fd: int, path: str) -> None:
        """Close and delete a store's file in the background. Freeing gigabytes on ext4
        takes seconds of waiting (almost no CPU), which this overlaps with the statistics
        of the following layers."""
        self._jobs.put((fd, None, 0, 0, path))

    def read_buffers(self, nbytes: int) -> list[NDArray[np.uint8]]:
        """Two aligned buffers of at least ``nbytes`` for reading back, one pair per
        reading thread (shared by the stores that thread reads one after the other) and
        kept. Taken from the staging ring's memory while it lasts (the first call waits for
        every pending write and ends writing), else freshly allocated."""
        buffers: list[NDArray[np.uint8]] = getattr(self._read, "buffers", [])
        if not buffers or len(buffers[0]) < nbytes:
            size = max(-(-nbytes // _ALIGN) * _ALIGN, _ALIGN)
            with self._arena_lock:
                if not self._retired:  # wait for every write: the ring is free then
                    self._await_writes()
                    self._retired = True
                    self._check()
                start = self._arena_used
                fits = start + 2 * size <= len(self._arena)
                if fits:
                    self._arena_used += 2 * size
            if fits:
                buffers = [self._arena[start : start + size],
                           self._arena[start + size : start + 2 * size]]
            else:
                buffers = [_aligned_buffer(nbytes), _aligned_buffer(nbytes)]
            self._read.buffers = buffers
        return buffers

    def close(self) -> None:
        if self.stager is not None:
            self.stager.shutdown(wait=True)
            self.stager = None
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._buffers.clear()
        self._arena = _aligned_buffer(0)
        self._read = threading.local()


class _DiskRows:
    """An ``n x f`` float32 matrix in a file, written by row batches and read back by
    column blocks.

    Layout: column blocks of ``block`` columns (the last one narrower), each holding
    all ``n`` rows one after the other, each row padded to a multiple of 1,024 floats
    (4 KiB, the ``O_DIRECT`` alignment). A batch of rows is one contiguous write per
    block; a block is one contiguous read. Reads run one block ahead in a thread.
    """

    def __init__(self, spill: _Spill, name: str, shape: tuple[int, int], block: int) -> None:
        self.shape = shape
        self.path = os.path.join(spill.directory, name)
        self._spill = spill
        self._fd = spill.open(name)
        n, f = shape
        self._starts = list(range(0, f, block))
        self._widths = [min(block, f - c) for c in self._starts]
        self._padded = [-(-w // (_ALIGN // 4)) * (_ALIGN // 4) for w in self._widths]
        self._offsets = [0]
        for padded in self._padded:
            self._offsets.append(self._offsets[-1] + n * padded * 4)
        os.ftruncate(self._fd, self._offsets[-1])

    def __setitem__(self, rows: slice, values: torch.Tensor | NDArray[np.float32]) -> None:
        """Rows ``rows`` of every column block, staged and handed to the writer thread.

        Float32 host tensors are staged by numpy, the first half of the column blocks on
        this thread and the second half on the spill's stager thread at the same time
        (numpy's copy releases the GIL): the forward pass waits for the staging, and with
        one copying thread a core sat idle meanwhile (VGG16 at 166 images: 2.5 s of
        waiting per group with one thread, 1.2-1.6 s with two; README, Performance). One
        torch copy per block instead would be one parallel region (and barrier) of the
        intra-op threads per 8 MB, which on a loaded machine costs several times the copy
        itself (the waiting threads spin). Other tensors (a device, another dtype) are
        staged by torch on this thread. Which thread stages a block changes no bit.
        """
        r0, r1, _ = rows.indices(self.shape[0])
        if (r1 - r0) * max(self._padded, default=0) * 4 > self._spill.slot_bytes:
            raise ValueError(f"{r1 - r0} rows exceed the spill buffers' size")
        if isinstance(values, torch.Tensor) and values.device.type == "cpu" \
                and values.dtype == torch.float32:
            values = values.detach().numpy()

        def stage(blocks: range) -> None:
            for c in blocks:
                c0, width, padded = self._starts[c], self._widths[c], self._padded[c]
                nbytes = (r1 - r0) * padded * 4
                buf = self._spill.acquire()
                try:
                    staged = np.frombuffer(buf, dtype=np.float32, count=(r1 - r0) * padded)
                    staged = staged.reshape(r1 - r0, padded)[:, :width]
                    if isinstance(values, np.ndarray):
                        np.copyto(staged, values[:, c0 : c0 + width])
                    else:
                        torch.from_numpy(staged).copy_(values[:, c0 : c0 + width])
                except BaseException:
                    self._spill.give_back(buf)  # the ring keeps its size: flush() can end
                    raise
                self._spill.submit(self._fd, buf, nbytes,
                                   self._offsets[c] + r0 * padded * 4, self.path)

        blocks = len(self._starts)
        if isinstance(values, np.ndarray) and blocks > 1 and self._spill.stager is not None:
            half = self._spill.stager.submit(stage, range(blocks // 2, blocks))
            try:
                stage(range(blocks // 2))
            finally:
                half.result()
        else:
            stage(range(blocks))

    def blocks(self) -> Iterator[NDArray[np.float32]]:
        """The column blocks in order, each an ``n x width`` view valid until the next.

        Block ``c + 1`` is read while the caller works on block ``c``, in
        ``_READERS`` concurrent pieces (a virtual disk reads faster with several
        requests in flight)."""
        n = self.shape[0]
        size = n * max(self._padded, default=0) * 4
        buffers = self._spill.read_buffers(size)

        def read_piece(c: int, lo: int, hi: int) -> None:
            view = memoryview(buffers[c % 2])  # type: ignore[arg-type]
            offset = self._offsets[c]
            while lo < hi:
                got = os.preadv(self._fd, [view[lo:hi]], offset + lo)
                if got <= 0:
                    raise OSError(f"{self.path}: short read at byte {offset + lo}")
                lo += got

        def read(pool: ThreadPoolExecutor, c: int) -> list[Future[None]]:
            nbytes = n * self._padded[c] * 4
            step = -(-nbytes // (_READERS * _ALIGN)) * _ALIGN
            return [pool.submit(read_piece, c, lo, min(lo + step, nbytes))
                    for lo in range(0, nbytes, step)]

        with ThreadPoolExecutor(_READERS, thread_name_prefix="spill-reader") as pool:
            pending = read(pool, 0) if self._starts else []
            for c in range(len(self._starts)):
                for piece in pending:
                    piece.result()
                pending = read(pool, c + 1) if c + 1 < len(self._starts) else []
                block = np.frombuffer(buffers[c % 2], dtype=np.float32,
                                      count=n * self._padded[c])
                yield block.reshape(n, self._padded[c])[:, : self._widths[c]]

    def __getitem__(self, key: tuple[slice, slice]) -> NDArray[np.float32]:
        """All of it (``store[:, :]``), for ``keep_raw_max_features``."""
        if key != (slice(None), slice(None)):
            raise IndexError("a disk store is read whole or block by block")
        return np.concatenate([b.copy() for b in self.blocks()], axis=1) if self._starts \
            else np.empty(self.shape, dtype=np.float32)

    def release(self) -> None:
        """Done with it: the file is closed and deleted by the spill's background threads."""
        if self._fd >= 0:
            self._spill.release(self._fd, self.path)
            self._fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _load_kernel() -> None:
    """Compile the statistics kernel, or load it from numba's cache (about 3 CPU-s of
    single-threaded Python per process, mostly numba's first set-up); an error is left
    for the real call to raise."""
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(1)  # this thread's own setting: no thread team for 2 x 2
        PearsonAccumulator(2).update(np.zeros((2, 2), dtype=np.float32))


def _statistics_lanes(threads: int) -> int:
    """Host stores reduced at the same time by :meth:`RowStores.statistics`: two when
    there are two threads or more and numba's threading layer allows parallel regions
    launched from several threads at once (``omp``, ``tbb``; not ``workqueue``)."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return 1
    return 2 if threads >= 2 and layer in ("omp", "tbb") else 1


def _device_budget(dev: torch.device, requested: int | None) -> int:
    """Bytes of row stores to keep on ``dev`` (see ``device_budget_bytes``)."""
    if requested is not None:
        return max(int(requested), 0)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(0.7 * free)
    return 0


def _plan_storage(sizes: Mapping[str, int], budget: int) -> set[str]:
    """Names whose stores fit a budget (device or RAM): smallest first while they fit."""
    chosen: set[str] = set()
    used = 0
    for name in sorted(sizes, key=lambda n: (sizes[n], n)):
        if used + sizes[name] > budget:
            break
        chosen.add(name)
        used += sizes[name]
    return chosen


#: A layer's store: on the device, in RAM, or in a file.
_Store = torch.Tensor | NDArray[np.float32] | _DiskRows


class RowStores:
    """The row stores of one extraction (see the module docstring).

    Parameters
    ----------
    out : path
        The output the stores serve: disk stores live in a scratch directory beside it.
    n_rows : int
        Rows of every store (the images).
    batch_rows : int
        The most rows one :meth:`write` gets (sizes the disk stores' staging buffers).
    chunk_features : int
        Columns per statistics block (see :func:`_block_columns`; the device path's
        float64 chunks).

    Use it as a context manager: on exit every store is closed, its file and the
    scratch directory deleted, also on an error.
    """

    def __init__(self, out: str | os.PathLike[str], n_rows: int, batch_rows: int,
                 chunk_features: int) -> None:
        self.out = Path(out)
        self.n_rows = n_rows
        self.batch_rows = batch_rows
        self.chunk_features = chunk_features
        self.block = _block_columns(chunk_features)
        #: Layers whose store (and statistics) stay in the device's memory, and those
        #: whose store is a file, in the order of :meth:`allocate`'s ``features``.
        self.on_device: list[str] = []
        self.spilled: list[str] = []
        self._stores: dict[str, _Store] = {}
        self._spill: _Spill | None = None
        self._scratch = contextlib.ExitStack()
        self._kernel: threading.Thread | None = None

    def __enter__(self) -> RowStores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allocate(self, features: Mapping[str, int], device: torch.device, *,
                 device_budget_bytes: int | None, ram_budget_bytes: int) -> None:
        """One store per layer (``features``: layer name -> number of features F).

        Smallest stores first: on ``device`` while they fit ``device_budget_bytes``
        (default: on CUDA, 70 % of the device memory free now; on the CPU, 0), then in
        RAM while they fit ``ram_budget_bytes``, the others on disk. When some store is
        not on the device, the statistics kernel is loaded on a background thread
        meanwhile (:meth:`moments` waits for it): the forward pass overlaps numba's
        single-threaded set-up instead of waiting for it afterwards.
        """
        sizes = {name: self.n_rows * width * 4 for name, width in features.items()}
        on_device = _plan_storage(sizes, _device_budget(device, device_budget_bytes))
        in_ram = _plan_storage(
            {k: v for k, v in sizes.items() if k not in on_device}, ram_budget_bytes)
        for name, width in features.items():
            shape = (self.n_rows, width)
            if name in on_device:
                self._stores[name] = torch.empty(shape, dtype=torch.float32, device=device)
                self.on_device.append(name)
            elif name in in_ram:
                self._stores[name] = np.empty(shape, dtype=np.float32)
            else:
                if self._spill is None:
                    directory = self._scratch.enter_context(scratch_dir(self.out))
                    self._spill = _Spill(str(directory), self.batch_rows * self.block * 4)
                self._stores[name] = _DiskRows(self._spill, f"{len(self.spilled)}.f32", shape,
                                               self.block)
                self.spilled.append(name)
        if len(self.on_device) < len(features) and self._kernel is None:
            self._kernel = threading.Thread(target=_load_kernel, name="load-kernel",
                                            daemon=True)
            self._kernel.start()

    def write(self, name: str, rows: slice, values: torch.Tensor) -> None:
        """Copy ``values`` (``rows`` x F, any device) into rows ``rows`` of the store."""
        store = self._stores[name]
        if isinstance(store, torch.Tensor):  # a device store: no copy to the host
            store[rows].copy_(values)
        elif isinstance(store, _DiskRows):
            store[rows] = values
        else:  # torch's copy runs on all intra-op threads (numpy's on one)
            torch.from_numpy(store[rows]).copy_(values)

    def flush(self) -> None:
        """Wait until every write is stored (a disk write's error is raised here)."""
        if self._spill is not None:
            self._spill.flush()

    def features(self, name: str) -> int:
        """F, the store's number of columns."""
        return int(self._stores[name].shape[1])

    def moments(self, name: str) -> PearsonAccumulator:
        """The store's row-by-row Pearson statistics (disk stores: read block by block)."""
        store = self._stores[name]
        if isinstance(store, torch.Tensor):
            return device_moments(store, self.chunk_features)
        if self._kernel is not None:
            self._kernel.join()
        acc = PearsonAccumulator(self.n_rows)
        if isinstance(store, _DiskRows):
            for chunk in store.blocks():
                acc.update(chunk)
        else:  # the kernel blocks the columns itself
            acc.update(store)
        return acc

    def statistics(self, names: Sequence[str]) -> Generator[PearsonAccumulator, None, None]:
        """:meth:`moments` of the stores ``names``, in that order.

        With two or more threads (numba's setting on the calling thread), host stores
        are reduced two at a time, each on its own thread with half of them: one store
        with all the threads is one parallel region per column block, whose barrier
        keeps a thread waiting (spinning) whenever the other is behind (on a loaded
        2-core machine, ~10 % of the statistics' CPU time for VGG16's layers). Two
        independent stores have no barrier. The bits do not change: the kernel gives
        the same at any thread count. Device stores are reduced on the calling thread.
        Close the iterator (``contextlib.closing``) to stop early: the stores being
        reduced are finished first.
        """
        if self._kernel is not None:
            self._kernel.join()
        threads = numba.get_num_threads()
        lanes = _statistics_lanes(threads)
        if lanes == 1:
            for name in names:
                yield self.moments(name)
            return
        pool = ThreadPoolExecutor(lanes, thread_name_prefix="statistics",
                                  initializer=numba.set_num_threads,
                                  initargs=(threads // lanes,))
        try:
            host = {name: pool.submit(self.moments, name) for name in names
                    if not isinstance(self._stores[name], torch.Tensor)}
            for name in names:
                yield host[name].result() if name in host else self.moments(name)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def rows(self, name: str) -> NDArray[np.float32]:
        """The whole store as a host array."""
        store = self._stores[name]
        return store.cpu().numpy() if isinstance(store, torch.Tensor) else store[:, :]

    def release(self, name: str) -> None:
        """Done with a store: a disk store's file is deleted in the background while the
        next layers compute."""
        store = self._stores[name]
        if isinstance(store, _DiskRows):
            store.release()

    def close(self) -> None:
        """Stop the spill thread, close every store, delete the scratch directory."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        for store in self._stores.values():
            if isinstance(store, _DiskRows):
                store.close()
        self._stores.clear()
        self._scratch.close()
