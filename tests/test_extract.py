"""Tests for emergence.extraction (extract_statistics end to end: preprocessing, hooks,
streamed correlations, row stores incl. the disk spill) and the activations file it writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

import emergence.extraction.extract as extract
import emergence.extraction.forward as forward
import emergence.extraction.rowstore as rowstore
import emergence.io
from emergence.device import resolve_device
from emergence.extraction.extract import extract_statistics
from emergence.extraction.preprocess import load_image, make_transform
from emergence.formats.activations import PEARSON_STATISTIC
from emergence.ownership import HOST
from emergence.runner import start
from emergence.sources.models.layers import LayerSpec, resolve_layers
from emergence.sources.models.loaded import LoadedModel
from emergence.sources.models.spec import NetworkSpec, load_model
from emergence.stats.similarity import correlation_from_moments
from tests.conftest import kill_when_ready

N_IMAGES = 7
SPEC = {"model": "test_efficientnet", "pretrained": False, "input_size": 64}


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(NetworkSpec.from_params(SPEC))


@pytest.fixture(scope="module")
def layers(loaded: LoadedModel) -> list[LayerSpec]:
    return resolve_layers(loaded)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Seven small images in assorted formats and modes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)

    def noise(h: int, w: int, c: int = 3) -> np.ndarray:
        return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)

    yy, xx = np.mgrid[0:90, 0:50]
    gradient = np.stack([xx * 5, yy * 2, (xx + yy) % 256], axis=-1).astype(np.uint8)
    rgba = noise(40, 60, 4)
    rgba[:10, :, 3] = 0
    files = {
        "rgb.png": Image.fromarray(noise(60, 80)),
        "gradient.jpg": Image.fromarray(gradient),
        "grey.jpg": Image.fromarray(noise(70, 70, 1)[..., 0], "L"),
        "cmyk.jpg": Image.fromarray(noise(48, 64)).convert("CMYK"),
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "palette.png": Image.fromarray(noise(50, 50)).convert("P"),
        "blocks.png": Image.fromarray(np.kron(noise(4, 4), np.ones((25, 25, 1), np.uint8))),
    }
    paths = []
    for name, img in files.items():
        img.save(root / name)
        paths.append(str(root / name))
    with Image.open(root / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    with Image.open(root / "grey.jpg") as check:
        assert check.mode == "L"
    return paths


def reference(
    loaded: LoadedModel, paths: list[str], layers: list[LayerSpec], batch_size: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Activations captured independently: plain hooks, explicit batching."""
    transform = make_transform(loaded.data_config, "timm")
    x = torch.stack([transform(load_image(p)) for p in paths])
    modules = dict(loaded.model.named_modules())
    acts: dict[str, list[torch.Tensor]] = {spec.name: [] for spec in layers}
    handles = [
        modules[spec.module].register_forward_hook(
            lambda _m, _a, out, name=spec.name: acts[name].append(
                out.reshape(out.shape[0], -1).clone()
            )
        )
        for spec in layers
        if spec.module
    ]
    try:
        with torch.inference_mode():
            logits = torch.cat(
                [loaded.model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]
            )
    finally:
        for handle in handles:
            handle.remove()
    out = {name: torch.cat(chunks).numpy() for name, chunks in acts.items() if chunks}
    out["pixels"] = x.reshape(len(x), -1).numpy()
    return out, logits.numpy()


def read_all(path: Path) -> dict[str, object]:
    """Every dataset and attribute of an HDF5 file, keyed by path."""
    content: dict[str, object] = {}
    with h5py.File(path) as h5:
        content["/attrs"] = dict(h5.attrs)

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                content[name] = obj[()]
            content[name + "/attrs"] = dict(obj.attrs)

        h5.visititems(visit)
    return content


def assert_identical(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("attrs"):
            assert a[key].keys() == b[key].keys(), key  # type: ignore[attr-defined]
            for name in a[key]:  # type: ignore[attr-defined]
                assert np.array_equal(a[key][name], b[key][name]), (key, name)  # type: ignore[index]
        else:
            assert np.array_equal(a[key], b[key], equal_nan=key.endswith("prob")), key  # type: ignore[arg-type]


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, N_IMAGES])
def test_correlations_match_corrcoef_in_ram_and_spilled(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    batch_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acts, _ = reference(loaded, images, layers, batch_size)
    sizes = {name: a.nbytes for name, a in acts.items()}
    small = sorted(sizes, key=sizes.get)[:3]  # type: ignore[arg-type]
    spill_dirs: list[str] = []
    real_mkdtemp = emergence.io.tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        path = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        spill_dirs.append(path)
        return path

    monkeypatch.setattr(emergence.io.tempfile, "mkdtemp", recording_mkdtemp)
    budgets = {"ram": 1 << 30, "mixed": sum(sizes[n] for n in small), "disk": 0}
    results = {}
    for label, budget in budgets.items():
        out = tmp_path / label / "stats.h5"
        summary = extract_statistics(
            loaded,
            images,
            layers,
            out,
            batch_size=batch_size,
            ram_budget_bytes=budget,
            chunk_features=5000,  # several chunks for the big layers
            progress=False,
        )
        expected_spill = {"ram": set(), "mixed": set(sizes) - set(small), "disk": set(sizes)}
        assert set(summary.spilled) == expected_spill[label]
        assert sorted(p.name for p in out.parent.iterdir()) == ["stats.h5"]  # spill dir gone
        results[label] = read_all(out)
        for name, a in acts.items():
            corr = results[label][f"layers/{name}/correlation"]
            assert corr.dtype == np.float64 and corr.shape == (N_IMAGES, N_IMAGES)
            np.testing.assert_allclose(
                corr, np.corrcoef(a.astype(np.float64)), rtol=0, atol=1e-10, err_msg=name
            )
    assert len(spill_dirs) == 2
    assert all(
        Path(d).parent == tmp_path / lbl and Path(d).name.startswith(".stats.h5.spill-")
        for d, lbl in zip(spill_dirs, ["mixed", "disk"], strict=True)
    )
    # RAM and disk stores hold the same float32 numbers: bit-identical statistics.
    for label in ("mixed", "disk"):
        for name in acts:
            for stat in ("correlation", "sums", "gram", "shift"):
                key = f"layers/{name}/{stat}"
                assert np.array_equal(results["ram"][key], results[label][key]), key
    assert no_hooks(loaded.model)


def test_device_stores_match_host_stores(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    """The device path (stores as torch tensors, statistics in torch float64) runs on the
    CPU when asked to; it must give the host path's statistics, alone or mixed with RAM
    and disk stores."""
    host = tmp_path / "host.h5"
    extract_statistics(loaded, images, layers, host, batch_size=3, chunk_features=5000,
                       progress=False)
    expected = read_all(host)
    acts, _ = reference(loaded, images, layers, 3)
    sizes = sorted(acts, key=lambda name: acts[name].nbytes)
    two_smallest = acts[sizes[0]].nbytes + acts[sizes[1]].nbytes
    for label, device_budget, ram_budget in (("all", 1 << 40, 0),
                                             ("mixed", two_smallest, acts[sizes[2]].nbytes)):
        out = tmp_path / f"{label}.h5"
        summary = extract_statistics(loaded, images, layers, out, batch_size=3,
                                     chunk_features=5000, device_budget_bytes=device_budget,
                                     ram_budget_bytes=ram_budget, progress=False)
        on_device = set(sizes) if label == "all" else set(sizes[:2])
        assert set(summary.on_device) == on_device
        assert set(summary.spilled) == set(sizes) - on_device - ({sizes[2]} if label == "mixed"
                                                                 else set())
        got = read_all(out)
        for name in acts:
            for stat in ("correlation", "sums", "gram", "shift"):
                key = f"layers/{name}/{stat}"
                np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12,
                                           err_msg=f"{label} {key}")
    assert no_hooks(loaded.model)


def test_batch_sizes_agree(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    """Across batch sizes, float32 conv kernels round differently (not batch-invariant on
    CPU/oneDNN); correlations agree to float32 rounding, and are equal for the pixels."""
    corr = {}
    for batch_size in (1, 3, N_IMAGES):
        out = tmp_path / f"b{batch_size}.h5"
        extract_statistics(loaded, images, layers, out, batch_size=batch_size, progress=False)
        with h5py.File(out) as h5:
            corr[batch_size] = {s.name: h5[f"layers/{s.name}/correlation"][()] for s in layers}
    for batch_size in (1, 3):
        for spec in layers:
            a, b = corr[batch_size][spec.name], corr[N_IMAGES][spec.name]
            if spec.name == "pixels":
                assert np.array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=spec.name)


def test_rerun_is_bit_identical(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    kwargs = {"batch_size": 3, "keep_raw_max_features": 10**9, "progress": False}
    extract_statistics(loaded, images, layers, tmp_path / "a.h5", **kwargs)  # type: ignore[arg-type]
    extract_statistics(loaded, images, layers, tmp_path / "b.h5", **kwargs)  # type: ignore[arg-type]
    assert_identical(read_all(tmp_path / "a.h5"), read_all(tmp_path / "b.h5"))


def test_the_reused_heap_changes_no_bit(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    """The same file with glibc's default allocation (every large block a fresh mmap)."""
    kwargs = {"batch_size": 3, "keep_raw_max_features": 10**9, "progress": False}
    extract_statistics(loaded, images, layers, tmp_path / "a.h5", **kwargs)  # type: ignore[arg-type]
    extract_statistics(loaded, images, layers, tmp_path / "b.h5", reuse_freed_memory=False,
                       **kwargs)  # type: ignore[arg-type]
    assert_identical(read_all(tmp_path / "a.h5"), read_all(tmp_path / "b.h5"))


_FAULTS = """
import json, resource, torch
from emergence.extraction.forward import reused_heap

def faults():  # 64 MB blocks' worth of minor page faults of 24 tensors made and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(24):
        block = torch.ones(16 << 20)  # 64 MB: above glibc's largest mmap threshold
        del block
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * 4096 / (64 << 20)

def rss():
    return next(int(line.split()[1]) << 10 for line in open("/proc/self/status")
                if line.startswith("VmRSS"))

outside = faults()
with reused_heap() as reused:
    inside = faults()
    kept = rss()
print(json.dumps({"reused": reused, "outside": outside, "inside": inside,
                  "released": (kept - rss()) / (64 << 20)}))
"""


@pytest.mark.skipif(forward._glibc() is None, reason="mallopt is glibc's")
def test_the_reused_heap_keeps_freed_blocks_and_gives_them_back_at_the_end() -> None:
    """In a fresh process, as an activations job is. glibc's heap does not reuse a freed
    block every time (an aligned request asks for a little more than the hole it left, and
    small blocks land between), but most of the time: 1-5 of 12 blocks faulted in 20
    processes, 1-6 of 24 in 40, against every block outside."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["reused"]
    assert got["outside"] > 22  # every block fresh memory
    assert got["inside"] < 12  # most blocks reuse a freed one's pages
    assert got["released"] > 0.5  # trimmed on exit: the kept block goes back to the system


def test_without_glibc_the_heap_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "_glibc", lambda: None)
    with forward.reused_heap() as reused:
        assert reused is False


def test_spilled_stores_direct_and_buffered(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Disk stores, O_DIRECT and buffered (the open flags: tests/test_rowstore.py), give the
    RAM stores' bytes, raw activations included, with several column blocks, several
    staging buffers in flight and a batch that does not divide the images."""
    kwargs = {"batch_size": 2, "keep_raw_max_features": 10**9, "chunk_features": 1,
              "progress": False}
    extract_statistics(loaded, images, layers, tmp_path / "ram.h5", **kwargs)  # type: ignore[arg-type]
    expected = read_all(tmp_path / "ram.h5")
    for label, use_direct in (("direct", True), ("buffered", False)):
        monkeypatch.setattr(rowstore, "_USE_O_DIRECT", use_direct)
        out = tmp_path / label / "stats.h5"
        summary = extract_statistics(loaded, images, layers, out, ram_budget_bytes=0,
                                     **kwargs)  # type: ignore[arg-type]
        assert len(summary.spilled) == len(layers)
        got = read_all(out)
        for key in expected:
            if key.startswith("layers/") and not key.endswith("attrs"):
                assert np.array_equal(got[key], expected[key]), (label, key)  # type: ignore[arg-type]
        assert sorted(p.name for p in out.parent.iterdir()) == ["stats.h5"]


def test_spill_files_released_layer_by_layer(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each disk store's file is handed to the background thread for deletion as soon as
    its layer's statistics are written, exactly once, layer after layer, after every read
    of it (the statistics of two layers may be read at the same time); at the end no file,
    directory or descriptor is left."""
    events: list[tuple[str, str]] = []
    real_release, real_blocks = rowstore._Spill.release, rowstore._DiskRows.blocks

    def release(self: rowstore._Spill, fd: int, path: str) -> None:
        assert os.path.exists(path)
        events.append(("release", path))
        real_release(self, fd, path)

    def blocks(self: rowstore._DiskRows):  # type: ignore[no-untyped-def]
        events.append(("read", self.path))
        yield from real_blocks(self)

    monkeypatch.setattr(rowstore._Spill, "release", release)
    monkeypatch.setattr(rowstore._DiskRows, "blocks", blocks)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    out = tmp_path / "stats.h5"
    summary = extract_statistics(loaded, images, layers, out, batch_size=2, chunk_features=1,
                                 ram_budget_bytes=0, keep_raw_max_features=10, progress=False)
    assert len(summary.spilled) == len(layers) > 1
    paths = [path for kind, path in events if kind == "read"]
    assert len(set(paths)) == len(layers)
    files = sorted(set(paths), key=lambda path: int(Path(path).stem))  # in layer order
    assert [path for kind, path in events if kind == "release"] == files
    for path in files:  # read (again for kept raw activations), then released
        last_read = max(i for i, event in enumerate(events) if event == ("read", path))
        assert events.index(("release", path)) > last_read
    assert all(not os.path.exists(path) for path in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.h5"]
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


def test_spill_write_failure_is_one_actionable_error(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rowstore.os, "pwrite", full)
    out = tmp_path / "stats.h5"
    with pytest.raises(OSError, match=r"spilling activations to .*/\.stats\.h5\.spill-.*No space "
                                      r"left on device; free disk space there or raise "
                                      r"extraction\.ram_budget_mb in the config "
                                      r"\(ram_budget_bytes\)$"):
        extract_statistics(loaded, images, layers, out, batch_size=2, ram_budget_bytes=0,
                           progress=False)
    assert list(tmp_path.iterdir()) == []  # no output, no tmp, no spill directory
    assert no_hooks(loaded.model)


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------


def test_hdf5_layout_and_attrs(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "nested" / "dir" / "stats.h5"
    pixels_features = 3 * 64 * 64
    summary = extract_statistics(
        loaded,
        images,
        layers,
        out,
        batch_size=4,
        keep_raw_max_features=pixels_features,
        attrs={"network": "tiny", "group": 2, "extra": None},
        image_meta={"wnid": [f"n{i:08d}" for i in range(N_IMAGES)], "row": range(N_IMAGES)},
        progress=False,
    )
    assert summary.path == out and summary.n_images == N_IMAGES
    assert list(summary.layers) == [s.name for s in layers]
    acts, logits = reference(loaded, images, layers, batch_size=4)
    with h5py.File(out) as h5:
        attrs = h5.attrs
        assert attrs["network"] == "tiny" and attrs["group"] == 2 and attrs["extra"] == "null"
        assert attrs["model"] == "test_efficientnet"
        assert attrs["weights"] == loaded.weights
        assert list(attrs["input_size"]) == [3, 64, 64]
        assert attrs["interpolation"] == loaded.data_config["interpolation"]
        assert tuple(attrs["mean"]) == pytest.approx(loaded.data_config["mean"])
        assert tuple(attrs["std"]) == pytest.approx(loaded.data_config["std"])
        assert attrs["preprocess"] == "timm" and attrs["device"] == "cpu"
        assert attrs["n_images"] == N_IMAGES
        assert list(attrs["layer_names"]) == [s.name for s in layers]
        for key in ("emergence_version", "torch_version", "timm_version"):
            assert isinstance(attrs[key], str) and attrs[key]
        assert h5["images/path"].asstr()[()].tolist() == images
        assert h5["images/wnid"].asstr()[()].tolist() == [f"n{i:08d}" for i in range(N_IMAGES)]
        assert h5["images/row"][()].tolist() == list(range(N_IMAGES))

        index = h5["predictions/top5_index"][()]
        prob = h5["predictions/top5_prob"][()]
        wnid = h5["predictions/top5_wnid"].asstr()[()]
        assert index.shape == prob.shape == wnid.shape == (N_IMAGES, 5)
        assert index.dtype == np.int64 and prob.dtype == np.float32
        probs = torch.softmax(torch.from_numpy(logits), dim=1)
        top = torch.topk(probs, 5, dim=1)
        np.testing.assert_array_equal(index, top.indices.numpy())
        np.testing.assert_allclose(prob, top.values.numpy(), rtol=1e-6)
        names = timm.data.ImageNetInfo().label_names()
        assert wnid.tolist() == [[names[i] for i in row] for row in index]

        for position, spec in enumerate(layers):
            group = h5[f"layers/{spec.name}"]
            assert group.attrs["module"] == spec.module
            assert group.attrs["index"] == position
            assert tuple(group.attrs["shape"]) == summary.layers[spec.name]
            assert group.attrs["n_features"] == acts[spec.name].shape[1]
            assert group.attrs["statistic"] == PEARSON_STATISTIC
            # the sufficient statistics reproduce the correlation
            n = group.attrs["n_features"]
            mean = group["sums"][()] / n
            cov = group["gram"][()] / n - np.outer(mean, mean)
            assert np.array_equal(correlation_from_moments(cov), group["correlation"][()])
            assert group["shift"].shape == (N_IMAGES,)
            kept = acts[spec.name].shape[1] <= pixels_features
            assert ("activations" in group) == kept
            if kept:
                assert group["activations"].dtype == np.float32
                np.testing.assert_array_equal(group["activations"][()], acts[spec.name])
        assert "activations" in h5["layers/pixels"]  # F == keep_raw_max_features
    assert no_hooks(loaded.model)


def test_resize_preprocess(
    loaded: LoadedModel, layers: list[LayerSpec], images: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "resize.h5"
    pixels = [s for s in layers if s.name == "pixels"]
    extract_statistics(
        loaded,
        images,
        pixels,
        out,
        preprocess="resize",
        keep_raw_max_features=10**6,
        progress=False,
    )
    transform = make_transform(loaded.data_config, "resize")
    expected = torch.stack([transform(load_image(p)) for p in images]).reshape(N_IMAGES, -1)
    with h5py.File(out) as h5:
        assert h5.attrs["preprocess"] == "resize"
        assert list(h5.attrs["layer_names"]) == ["pixels"]
        np.testing.assert_array_equal(h5["layers/pixels/activations"][()], expected.numpy())


# --------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------


def test_failure_leaves_nothing_behind(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "stats.h5"
    out.write_bytes(b"previous result")

    def boom(*args: object, **kwargs: object) -> None:
        assert (tmp_path / f".stats.h5.tmp-{HOST}-{os.getpid()}").exists()  # failing mid-write
        raise RuntimeError("injected failure")

    monkeypatch.setattr(extract, "write_predictions", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        extract_statistics(loaded, images, layers, out, ram_budget_bytes=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.h5"]  # no tmp, no spill dir
    assert out.read_bytes() == b"previous result"
    monkeypatch.undo()

    missing = [*images[:4], str(tmp_path / "missing.png"), *images[4:]]
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}/missing.png: image file not found$"):
        extract_statistics(
            loaded, missing, layers, tmp_path / "new.h5", batch_size=2, progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.h5"]
    assert no_hooks(loaded.model)

    # A truncated JPEG (issue #11): PIL's message did not name the file.
    data = Path(images[1]).read_bytes()
    cut = tmp_path / "images" / "cut.jpg"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError) as info:
        extract_statistics(loaded, [*images[:5], str(cut)], layers, tmp_path / "new.h5",
                           batch_size=2, ram_budget_bytes=0, progress=False)
    text = str(info.value)
    assert text.startswith(f"{cut}: cannot read image (")  # PIL: "Truncated File Read"
    assert "\n" not in text
    assert text.endswith("); replace or remove the file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "stats.h5"]
    assert no_hooks(loaded.model)


KILLED_EXTRACTION = """
import time
import emergence.extraction.extract as extract
import emergence.io
from emergence.sources.models.layers import resolve_layers
from emergence.sources.models.spec import NetworkSpec, load_model

def stuck(*args, **kwargs):  # called with the output's temporary and the spill files open
    print("ready", flush=True)
    time.sleep(600)

extract.write_predictions = stuck
model = load_model(NetworkSpec.from_params({spec!r}))
extract.extract_statistics(model, {images!r}, resolve_layers(model), {out!r}, batch_size=3,
                           ram_budget_bytes=0, progress=False)
"""


def test_kill_9_mid_extraction_then_rerun(
    loaded: LoadedModel,
    layers: list[LayerSpec],
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue #11 item 9: a killed extraction left a corrupt temporary HDF5 file and its
    spill directory; the rerun's runner.start removes them, the result is bit-identical."""
    out = tmp_path / "acts" / "stats.h5"
    script = KILLED_EXTRACTION.format(spec=SPEC, images=images, out=str(out))
    pid = kill_when_ready(script)
    left = sorted(p.name for p in out.parent.iterdir())
    assert len(left) == 2 and left[0].startswith(".stats.h5.spill-")  # the defect
    assert left[1] == f".stats.h5.tmp-{HOST}-{pid}"

    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    start(SimpleNamespace(output=[str(out)], threads=torch.get_num_threads(),
                          rule="activations", wildcards={}))
    assert list(out.parent.iterdir()) == []
    kwargs = {"batch_size": 3, "ram_budget_bytes": 0, "progress": False}
    extract_statistics(loaded, images, layers, out, **kwargs)  # type: ignore[arg-type]
    extract_statistics(loaded, images, layers, tmp_path / "reference.h5", **kwargs)  # type: ignore[arg-type]
    assert sorted(out.parent.iterdir()) == [out]
    assert_identical(read_all(out), read_all(tmp_path / "reference.h5"))


def test_argument_errors(loaded: LoadedModel, layers: list[LayerSpec], images: list[str]) -> None:
    with pytest.raises(ValueError, match="written by extract_statistics"):
        extract_statistics(loaded, images, layers, "x.h5", attrs={"model": "other"})
    with pytest.raises(ValueError, match="has 2 values for 7 images"):
        extract_statistics(loaded, images, layers, "x.h5", image_meta={"wnid": ["a", "b"]})
    with pytest.raises(ValueError, match="not allowed"):
        extract_statistics(loaded, images, layers, "x.h5", image_meta={"path": images})
    with pytest.raises(ValueError, match="no images"):
        extract_statistics(loaded, [], layers, "x.h5")
    with pytest.raises(ValueError, match=r"^layer name 'a/b': use letters, digits"):
        extract_statistics(loaded, images, [LayerSpec("a/b", "bn1")], "x.h5")
    with pytest.raises(ValueError, match="preprocess"):
        make_transform(loaded.data_config, "squash")  # type: ignore[arg-type]
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------


def test_load_image_modes(tmp_path: Path, images: list[str]) -> None:
    grey = load_image(images[2])
    assert grey.mode == "RGB"
    arr = np.asarray(grey)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)
    rgb[:, 16:] = (20, 40, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.mode == "RGB"
    assert np.abs(np.asarray(cmyk, dtype=float) - rgb).mean() < 8

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255  # top opaque red, bottom fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(load_image(tmp_path / "rgba.png"))
    assert (out[:4] == (255, 0, 0)).all() and (out[4:] == 255).all()

    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[7, 7])
    palette.save(tmp_path / "palette.png", transparency=palette.info["transparency"])
    assert (np.asarray(load_image(tmp_path / "palette.png"))[7, 7] == 255).all()

    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    deep.save(tmp_path / "deep.png")
    assert (np.asarray(load_image(tmp_path / "deep.png")) == 255).all()


def test_resize_keeps_whole_image_timm_crops(loaded: LoadedModel, tmp_path: Path) -> None:
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :100, 0] = 255  # red | green | blue thirds
    wide[:, 100:200, 1] = 255
    wide[:, 200:, 2] = 255
    img = Image.fromarray(wide)
    resized = make_transform(loaded.data_config, "resize")(img)
    cropped = make_transform(loaded.data_config, "timm")(img)
    assert resized.shape == cropped.shape == (3, 64, 64)
    mean = torch.tensor(loaded.data_config["mean"])[:, None, None]
    std = torch.tensor(loaded.data_config["std"])[:, None, None]
    resized, cropped = resized * std + mean, cropped * std + mean
    assert resized[0, :, 0].min() > 0.95 and resized[2, :, -1].min() > 0.95
    assert cropped[1].min() > 0.95  # centre crop sees only the green third


def test_layers_that_do_not_run_once_are_rejected(
    loaded: LoadedModel, images: list[str], tmp_path: Path
) -> None:
    # a registered module that forward() never calls
    unused = torch.nn.Linear(2, 2)
    loaded.model.add_module("unused_head", unused)
    try:
        with pytest.raises(RuntimeError, match="produced no output"):
            extract_statistics(
                loaded, images, [LayerSpec("u", "unused_head")], tmp_path / "u.h5", progress=False
            )
    finally:
        del loaded.model.unused_head
    assert list(tmp_path.iterdir()) == []
    assert no_hooks(loaded.model)
