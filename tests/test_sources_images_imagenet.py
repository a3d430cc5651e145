"""Tests for the ImageNet image sources: classes (:mod:`emergence.sources.common`),
label files and listings, sampling, the ImageNetV2 download, and the ``images`` spec
(:mod:`emergence.sources.images.spec`)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from emergence.sources.common import ManifestRow, class_wnids, imagenet_classes, read_manifest
from emergence.sources.images.imagenet import list_images, sample_groups
from emergence.sources.images.imagenetv2 import (
    DEFAULT_FOLDER,
    DEFAULT_SHA256,
    DEFAULT_URL,
    ensure_imagenetv2,
)
from emergence.sources.images.listing import Skipped
from emergence.sources.images.spec import ImageSourceSpec

CLASSES = imagenet_classes()


def _build(params: dict[str, object], manifest: Path, seed: int
           ) -> tuple[list[ManifestRow], list[Skipped]]:
    return ImageSourceSpec.from_params(params).build(manifest, seed=seed)
# three classes: index 0 (tench), 1 (goldfish), 2 (great white shark)
WNIDS = [w for w, _ in CLASSES[:3]]
N_PER_CLASS = 6


def _jpeg(path: Path, mode: str = "RGB", value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (value, 100, 200), "L": value, "CMYK": (value, 10, 20, 30)}[mode]
    Image.new(mode, (8, 8), colour).save(path, format="JPEG")
    return path


def _mode(i: int) -> str:
    # one greyscale and one CMYK JPEG in the fixtures
    return {0: "L", 1: "CMYK"}.get(i, "RGB")


@pytest.fixture
def val_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A flat validation folder: 3 classes x 6 images, interleaved; image name -> wnid."""
    folder = tmp_path / "val"
    labels: dict[str, str] = {}
    for i in range(len(WNIDS) * N_PER_CLASS):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        _jpeg(folder / name, _mode(i), i)
        labels[name] = WNIDS[i % len(WNIDS)]
    return folder, labels


def _expected(folder: Path, labels: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in sorted(labels):
        out.setdefault(labels[name], []).append(str(folder / name))
    return {w: out[w] for w in WNIDS}


def _write_loc_csv(path: Path, labels: dict[str, str]) -> Path:
    lines = ["ImageId,PredictionString"]
    lines += [f"{Path(n).stem},{w} 1 2 30 40 {w} 5 6 7 8" for n, w in sorted(labels.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


# devkit ILSVRC2012_IDs are not the sorted-wnid index: give the 3 classes scrambled ids
DEVKIT_IDS = {WNIDS[0]: 3, WNIDS[1]: 1, WNIDS[2]: 2}


def _write_devkit(folder: Path, labels: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array([(np.uint16(i), w, "x", np.uint16(0)) for w, i in DEVKIT_IDS.items()]
                       + [(np.uint16(1001), "n00001740", "entity", np.uint16(2))], dtype=dtype)
    scipy.io.savemat(folder / "meta.mat", {"synsets": synsets})
    gt = folder / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{DEVKIT_IDS[labels[n]]}\n" for n in sorted(labels)))
    return gt


# ------------------------------------------------------------------------------------------


def test_imagenet_classes() -> None:
    assert len(CLASSES) == 1000
    assert CLASSES[:3] == [("n01440764", "tench"), ("n01443537", "goldfish"),
                           ("n01484850", "great white shark")]
    assert [w for w, _ in CLASSES] == sorted(w for w, _ in CLASSES)
    assert all(c and "," not in c for _, c in CLASSES)
    CLASSES.append(("x", "y"))  # a copy: the cache is not mutated
    assert len(imagenet_classes()) == 1000
    CLASSES.pop()


@pytest.mark.parametrize("subset", ["imagenet-1k", "imagenet-21k-miil", "imagenet-12k",
                                    "imagenet-22k", "imagenet-22k-ms", "imagenet-21k-goog"])
def test_class_wnids_are_timms_label_names(subset: str) -> None:
    import timm.data

    assert list(class_wnids(subset)) == timm.data.ImageNetInfo(subset).label_names()
    assert class_wnids() == tuple(w for w, _ in CLASSES)
    with pytest.raises(ValueError, match="unknown ImageNet label set"):
        class_wnids("imagenet-7k")


def test_val_loc_csv(val_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, labels = val_folder
    csv_file = _write_loc_csv(tmp_path / "LOC_val_solution.csv", labels)
    got = list_images("imagenet-val", folder, csv_file)
    assert got == _expected(folder, labels)
    assert list(got) == WNIDS
    # default: the label file inside the image folder
    _write_loc_csv(folder / "LOC_val_solution.csv", labels)
    assert list_images("imagenet-val", folder) == got


def test_val_devkit(val_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, labels = val_folder
    gt = _write_devkit(tmp_path / "devkit" / "data", labels)
    assert list_images("imagenet-val", folder, gt) == _expected(folder, labels)


def test_val_two_column(val_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, labels = val_folder
    by_wnid = tmp_path / "labels.txt"
    by_wnid.write_text("".join(f"{n} {w}\n" for n, w in labels.items()))
    by_index = tmp_path / "val.txt"
    by_index.write_text("".join(f"{n} {WNIDS.index(w)}\n" for n, w in labels.items()))
    assert list_images("imagenet-val", folder, by_wnid) == _expected(folder, labels)
    assert list_images("imagenet-val", folder, by_index) == _expected(folder, labels)


def test_val_errors(val_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, labels = val_folder

    def err(labels_file: Path | None, match: str, path: Path = folder) -> None:
        with pytest.raises(ValueError, match=match) as info:
            list_images("imagenet-val", path, labels_file)
        assert "\n" not in str(info.value)

    err(None, r"val: no label file")
    err(tmp_path / "missing.csv", r"missing.csv: label file not found")
    err(None, r"nowhere: image folder not found", tmp_path / "nowhere")

    extra = dict(labels, **{"ILSVRC2012_val_00000999.JPEG": WNIDS[0]})
    err(_write_loc_csv(tmp_path / "a.csv", extra),
        r"a.csv: label for image 'ILSVRC2012_val_00000999', which is not in .*val")
    fewer = dict(list(labels.items())[1:])
    err(_write_loc_csv(tmp_path / "b.csv", fewer), r"val: 1 image\(s\) have no label in .*b.csv")
    unknown = dict(labels, **{"ILSVRC2012_val_00000001.JPEG": "n99999999"})
    err(_write_loc_csv(tmp_path / "c.csv", unknown), r"c.csv: line \d+: unknown wnid 'n99999999'")
    (tmp_path / "d.csv").write_text("id,label\nx,y\n")
    err(tmp_path / "d.csv", r"d.csv: expected header ImageId,PredictionString")

    gt = _write_devkit(tmp_path / "devkit", labels)
    (tmp_path / "devkit" / "meta.mat").unlink()
    err(gt, r"ground_truth.txt: devkit ground truth needs the devkit's meta.mat")
    gt = _write_devkit(tmp_path / "devkit2", labels)
    gt.write_text("7\n" + "1\n" * (len(labels) - 1))
    err(gt, r"ground_truth.txt: line 1: '7' is not an ILSVRC2012_ID")
    gt.write_text("1 2 3\n")
    err(gt, r"ground_truth.txt: line 1: expected one class id per line")


def test_folders_layout(tmp_path: Path) -> None:
    root = tmp_path / "train"
    expected: dict[str, list[str]] = {}
    for k, wnid in enumerate(WNIDS):
        for i in range(N_PER_CLASS):
            ext = [".JPEG", ".jpg", ".jpeg", ".png", ".JPG", ".PNG"][i]
            p = root / wnid / f"{wnid}_{i}{ext}"
            if ext.lower() == ".png":
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(p, format="PNG")
            else:
                _jpeg(p, _mode(i), k)
            expected.setdefault(wnid, []).append(str(p))
        (root / wnid / "notes.txt").write_text("not an image")
    (root / "LOC_synset_mapping.txt").write_text("ignored")
    got = list_images("imagenet-folders", root)
    assert got == {w: sorted(v, key=lambda s: Path(s).name) for w, v in expected.items()}

    (root / "cats").mkdir()
    with pytest.raises(ValueError, match=r"cats: folder name is not a wnid"):
        list_images("imagenet-folders", root)
    (root / "cats").rmdir()
    (root / "n99999999").mkdir()
    with pytest.raises(ValueError, match=r"n99999999: unknown wnid 'n99999999'"):
        list_images("imagenet-folders", root)
    with pytest.raises(ValueError, match=r"labels .* are only used with source imagenet-val"):
        list_images("imagenet-folders", root, tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"unknown image source 'imagenet'"):
        list_images("imagenet", root)


def _v2_tree(root: Path, classes: range = range(3), per_class: int = N_PER_CLASS) -> Path:
    for k in classes:
        for i in range(per_class):
            _jpeg(root / str(k) / f"{hashlib.sha1(f'{k}-{i}'.encode()).hexdigest()}.jpeg",
                  _mode(i), k)
    return root


def test_v2_layout(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path / DEFAULT_FOLDER, range(3))
    got = list_images("imagenetv2", root)
    assert list(got) == WNIDS
    for k, wnid in enumerate(WNIDS):
        assert got[wnid] == sorted(str(p) for p in (root / str(k)).iterdir())
    (root / "1000").mkdir()
    with pytest.raises(ValueError, match=r"1000: folder name is not a class index 0..999"):
        list_images("imagenetv2", root)


def test_fixture_modes_load(tmp_path: Path) -> None:
    """Greyscale and CMYK JPEGs in the listings come out as RGB downstream."""
    pytest.importorskip("torch")
    from emergence.extraction.preprocess import load_image

    for mode in ("L", "CMYK"):
        img = load_image(_jpeg(tmp_path / f"{mode}.JPEG", mode, 50))
        assert img.mode == "RGB" and img.size == (8, 8)


# ------------------------------------------------------------------------------------------


def _images(n_classes: int, per_class: int = N_PER_CLASS) -> dict[str, list[str]]:
    return {w: [f"/img/{w}/{i:02d}.JPEG" for i in range(per_class)]
            for w, _ in CLASSES[:n_classes]}


def test_sample_groups() -> None:
    images = _images(3)
    concepts = CLASSES[:3]
    rows, skipped = sample_groups(images, concepts, 5, seed=7, source="imagenet-val")
    assert skipped == []
    assert len(rows) == 15
    assert [r.group for r in rows] == [str(j + 1) for j in range(5) for _ in range(3)]
    for j in range(5):
        group = [r for r in rows if r.group == str(j + 1)]
        assert [(r.wnid, r.concept) for r in group] == concepts
    for wnid, _ in concepts:
        paths = [r.path for r in rows if r.wnid == wnid]
        assert len(set(paths)) == 5 and paths == sorted(paths)
        assert set(paths) <= set(images[wnid])
    assert {r.source for r in rows} == {"imagenet-val"}

    again, _ = sample_groups(images, concepts, 5, seed=7, source="imagenet-val")
    assert again == rows
    samples = {tuple(r.path for r in sample_groups(images, concepts, 5, seed=s)[0])
               for s in range(6)}
    assert len(samples) > 1  # seed-dependent

    # adding a class (and its images) leaves the others' samples unchanged
    more, _ = sample_groups(_images(4), CLASSES[:4], 5, seed=7, source="imagenet-val")
    assert [r for r in more if r.wnid != CLASSES[3][0]] == rows


def test_sample_groups_skips() -> None:
    images = _images(3)
    images[WNIDS[1]] = images[WNIDS[1]][:4]
    rows, skipped = sample_groups(images, CLASSES[:4], 5, seed=0)
    assert {r.wnid for r in rows} == {WNIDS[0], WNIDS[2]}
    assert skipped == [(WNIDS[1], "4 image(s), 5 needed"), (CLASSES[3][0], "0 image(s), 5 needed")]
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        sample_groups(images, CLASSES[:3], 5, seed=-1)
    with pytest.raises(ValueError, match="images per concept must be a positive integer"):
        sample_groups(images, CLASSES[:3], 0, seed=1)
    with pytest.raises(ValueError, match=f"concept {WNIDS[0]} is listed twice"):
        sample_groups(images, [CLASSES[0], CLASSES[0]], 5, seed=1)


def test_build_manifest_val(val_folder: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    folder, labels = val_folder
    csv_file = _write_loc_csv(tmp_path / "LOC_val_solution.csv", labels)
    config = {"source": "imagenet-val", "path": str(folder), "labels": str(csv_file),
              "max_concepts": 4}
    manifest = tmp_path / "out" / "manifest.tsv"
    rows, skipped = _build(config, manifest, seed=2018)
    assert read_manifest(manifest) == rows
    assert len(rows) == 15 and sorted({r.group for r in rows}) == ["1", "2", "3", "4", "5"]
    assert skipped == [(CLASSES[3][0], "", "0 image(s), 5 needed")]
    for r in rows:
        assert labels[Path(r.path).name] == r.wnid
        assert Path(r.path).is_file()

    rows2, _ = _build(dict(config, images_per_concept=6), manifest, seed=1)
    assert sorted({r.group for r in rows2}) == [str(j) for j in range(1, 7)]
    with pytest.raises(ValueError, match=r"no concept has 7 images"):
        _build(dict(config, images_per_concept=7), manifest, seed=1)
    with pytest.raises(ValueError, match=r"images.path: required"):
        _build({"source": "imagenet-val"}, manifest, seed=1)


# ------------------------------------------------------------------------------------------
# ImageNetV2 download, against a loopback server


def test_default_download_source() -> None:
    assert DEFAULT_URL.startswith("https://") and DEFAULT_URL.endswith(".tar.gz")
    assert DEFAULT_SHA256 is None or (len(DEFAULT_SHA256) == 64
                                      and int(DEFAULT_SHA256, 16) >= 0)


def _tarball(tmp_path: Path, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    src = _v2_tree(tmp_path / "src" / DEFAULT_FOLDER, range(3))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=DEFAULT_FOLDER)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size))
    return buf.getvalue()


class _Server:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                if self.path != "/v2.tar.gz":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    s = _Server(_tarball(tmp_path))
    yield s
    s.close()


def test_download_verify_extract_reuse(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(server.payload).hexdigest()
    dest = tmp_path / "cache"
    root = ensure_imagenetv2(dest, server.url, sha)
    assert root == dest / DEFAULT_FOLDER and server.requests == 1
    assert sorted(p.name for p in dest.iterdir()) == [DEFAULT_FOLDER]  # no temp files left
    assert list(list_images("imagenetv2", root)) == WNIDS

    assert ensure_imagenetv2(dest, server.url, sha) == root
    assert server.requests == 1  # reused, no download

    # through the manifest builder (cache hit: url/sha256 irrelevant)
    manifest = tmp_path / "manifest.tsv"
    rows, skipped = _build(
        {"source": "imagenetv2", "path": str(dest), "url": server.url, "sha256": sha,
         "max_concepts": 3}, manifest, seed=3)
    assert server.requests == 1 and skipped == [] and len(rows) == 15
    assert {r.source for r in rows} == {"imagenetv2"}
    assert all(Path(r.path).is_relative_to(root) for r in rows)


def test_download_via_manifest_builder(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(server.payload).hexdigest()
    rows, _ = _build(
        {"source": "imagenetv2", "path": str(tmp_path / "c"), "url": server.url,
         "sha256": sha.upper(), "max_concepts": 3, "images_per_concept": 2},
        tmp_path / "m.tsv", seed=3)
    assert server.requests == 1 and len(rows) == 6


def test_download_checksum_mismatch(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(server.payload).hexdigest()
    wrong = "0" * 64
    for dest in (tmp_path / "new", tmp_path / "existing"):
        if dest.name == "existing":
            dest.mkdir()
        with pytest.raises(ValueError) as info:
            ensure_imagenetv2(dest, server.url, wrong)
        msg = str(info.value)
        assert server.url in msg and wrong in msg and sha in msg and "\n" not in msg
        assert not dest.exists() or list(dest.iterdir()) == []
    assert (tmp_path / "existing").is_dir() and not (tmp_path / "new").exists()

    with pytest.raises(ValueError, match=f"no SHA-256 pinned; the download has SHA-256 {sha}"):
        ensure_imagenetv2(tmp_path / "unpinned", server.url, None)
    assert not (tmp_path / "unpinned").exists()


def test_download_bad_archives(tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../evil.txt")
    evil.size = 3
    for payload, match in ((_tarball(tmp_path / "a", [evil]), r"cannot extract the archive"),
                           (b"not a tarball", r"cannot extract the archive")):
        s = _Server(payload)
        try:
            with pytest.raises(ValueError, match=match):
                ensure_imagenetv2(tmp_path / "dest", s.url, hashlib.sha256(payload).hexdigest())
        finally:
            s.close()
        assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.txt").exists()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(_v2_tree(tmp_path / "other"), arcname="other-top")
    s = _Server(buf.getvalue())
    try:
        with pytest.raises(ValueError, match=f"the archive has no top folder {DEFAULT_FOLDER}"):
            ensure_imagenetv2(tmp_path / "dest", s.url,
                              hashlib.sha256(buf.getvalue()).hexdigest())
        with pytest.raises(OSError):
            ensure_imagenetv2(tmp_path / "dest", s.url.replace("v2.tar", "missing.tar"), None)
    finally:
        s.close()
    assert not (tmp_path / "dest").exists()


# ------------------------------------------------------------------------------------------
# The images spec


# The slice of `images` each source's rule read before the spec (workflow/rules/common.smk).
_IMAGE_KEYS = {
    "emoji": ("source", "styles", "render_size"),
    "imagenet": ("source", "path", "labels", "url", "sha256", "images_per_concept",
                 "max_concepts"),
}


@pytest.mark.parametrize("images", [
    {"source": "emoji", "concepts": "config/demo_concepts.tsv", "styles": ["openmoji"],
     "render_size": 64, "images_per_concept": 5},
    {"source": "imagenet-val", "path": "val", "labels": "LOC_val_solution.csv",
     "styles": ["twemoji", "openmoji"], "render_size": 256, "images_per_concept": 3,
     "max_concepts": 40},
    {"source": "imagenetv2", "path": "cache", "images_per_concept": 5,
     "styles": ["twemoji", "openmoji"], "render_size": 256},
])
def test_image_source_spec(images: dict[str, object]) -> None:
    spec = ImageSourceSpec.from_config(images)
    keys = _IMAGE_KEYS["emoji" if images["source"] == "emoji" else "imagenet"]
    params = {k: images[k] for k in keys if k in images}
    assert spec.params() == params and list(spec.params()) == list(params)
    assert ImageSourceSpec.from_params(params) == ImageSourceSpec.from_params(spec.params())
    groups = (images["styles"] if images["source"] == "emoji"
              else [str(j + 1) for j in range(images["images_per_concept"])])
    assert spec.group_names() == groups


def test_image_source_data_paths(tmp_path: Path) -> None:
    from emergence.config import ConfigError

    spec = ImageSourceSpec.from_config({"source": "imagenet-val", "path": "val"})
    with pytest.raises(ConfigError, match=r"config key 'images.path': val does not exist; "
                       "set it to the folder of the 50,000"):
        spec.check_data_paths(tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError, match="config key 'images.labels' is required for source "
                       "'imagenet-val': set it to LOC_val_solution.csv"):
        spec.check_data_paths(tmp_path)
    ImageSourceSpec.from_config({"source": "imagenetv2"}).check_data_paths(tmp_path)
    with pytest.raises(ValueError, match="images.max_concepts: must be a positive integer"):
        ImageSourceSpec.from_params({"source": "imagenet-folders", "max_concepts": 0})
