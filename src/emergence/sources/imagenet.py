"""Real-photo image sources: ImageNet validation images and ImageNetV2.

The paper (Dharmaretnam & Fyshe 2018) takes 5 ImageNet validation images per concept and
splits them into 5 groups of one image per concept. This module lists labelled images from
the usual on-disk layouts, samples them reproducibly and writes the image manifest
(:func:`emergence.sources.images.write_manifest`).

Sources (``images.source`` in the config):

* ``imagenet-val``: a flat folder of ``ILSVRC2012_val_XXXXXXXX.JPEG`` files plus a label file:
  Kaggle's ``LOC_val_solution.csv``, the devkit's ``ILSVRC2012_validation_ground_truth.txt``
  (with the devkit's ``meta.mat`` beside it), or a two-column text file ``filename label``
  (label = wnid, or the class index in sorted-wnid order as in Caffe's ``val.txt``).
* ``imagenet-folders``: one sub-folder per wnid (the ILSVRC train/val folder layout).
* ``imagenetv2``: ImageNetV2 matched-frequency, folders ``0`` ... ``999`` (class index in
  sorted-wnid order); downloaded and checksum-verified on first use.

Concept words are the first WordNet lemma of each ImageNet-1k class, as timm ships them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emergence.sources.images import ManifestRow, write_manifest

__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_SHA256",
    "DEFAULT_URL",
    "IMAGE_SUFFIXES",
    "SOURCES",
    "build_imagenet_manifest",
    "ensure_imagenetv2",
    "imagenet_classes",
    "list_images",
    "sample_groups",
]

SOURCES = ("imagenet-val", "imagenet-folders", "imagenetv2")
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})

# ImageNetV2 matched-frequency (Recht et al. 2019), the authors' Hugging Face mirror. The SHA-256
# and size (1,264,079,360 bytes) are those published in TensorFlow Datasets'
# tensorflow_datasets/datasets/imagenet_v2/checksums.tsv for this exact URL.
DEFAULT_URL = ("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
               "imagenetv2-matched-frequency.tar.gz")
DEFAULT_SHA256: str | None = "f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c"
DEFAULT_FOLDER = "imagenetv2-matched-frequency-format-val"

_WNID = re.compile(r"n\d{8}")
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------
# ImageNet-1k classes


def _timm_info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("timm is not installed: it provides the ImageNet class list "
                           "(timm/data/_info/imagenet_synsets.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"


@lru_cache(maxsize=1)
def _classes() -> tuple[tuple[str, str], ...]:
    info = _timm_info_dir()
    synsets_file = info / "imagenet_synsets.txt"
    lemma_file = info / "imagenet_synset_to_lemma.txt"
    for f in (synsets_file, lemma_file):
        if not f.is_file():
            raise RuntimeError(f"{f}: file not found (timm's ImageNet class data)")
    wnids = [line.strip() for line in synsets_file.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise RuntimeError(f"{synsets_file}: expected 1000 distinct wnids, found {len(wnids)}")
    lemmas: dict[str, str] = {}
    for line in lemma_file.read_text().splitlines():
        wnid, sep, words = line.partition("\t")
        if sep:
            lemmas[wnid.strip()] = words
    out = []
    for wnid in wnids:
        if wnid not in lemmas:
            raise RuntimeError(f"{lemma_file}: no lemma for {wnid}")
        out.append((wnid, lemmas[wnid].split(",")[0].strip()))
    return tuple(out)


def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet-1k classes in class-index order (sorted wnids).

    Returns
    -------
    list of (wnid, concept)
        ``concept`` is the first WordNet lemma as written (``"tench"``, ``"great white
        shark"``). Two words occur twice: ``crane`` (bird, machine) and ``maillot``.
    """
    return list(_classes())


def _class_index() -> dict[str, int]:
    return {wnid: i for i, (wnid, _) in enumerate(_classes())}


# ------------------------------------------------------------------------------------------
# Listing labelled images


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and _is_image(p)),
                  key=lambda p: p.name)


def _check_wnid(wnid: str, where: str) -> str:
    if wnid not in _class_index():
        raise ValueError(f"{where}: unknown wnid '{wnid}' (not an ImageNet-1k class)")
    return wnid


def list_images(source: str, path: str | os.PathLike[str],
                labels: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """List labelled images: ``{wnid: [image path, ...]}``, paths sorted by file name.

    Parameters
    ----------
    source : {"imagenet-val", "imagenet-folders", "imagenetv2"}
    path : str or path-like
        ``imagenet-val``: the flat image folder. ``imagenet-folders``: the folder of wnid
        sub-folders. ``imagenetv2``: the extracted ``imagenetv2-matched-frequency-format-val``
        folder (sub-folders ``0`` ... ``999``).
    labels : str or path-like, optional
        ``imagenet-val`` only: ``LOC_val_solution.csv``, ``ILSVRC2012_validation_ground_truth.txt``
        (``meta.mat`` beside it) or a ``filename label`` text file. Default: the first of the
        first two found in ``path``.

    Returns
    -------
    dict
        wnid -> image paths (``path`` joined with the file name, as given). Only classes
        present are keys; dict order is class-index order.

    Raises
    ------
    ValueError
        One line naming the file or folder and what is wrong.
    """
    folder = Path(path)
    if source not in SOURCES:
        raise ValueError(f"unknown image source '{source}' (expected one of {', '.join(SOURCES)})")
    if not folder.is_dir():
        raise ValueError(f"{folder}: image folder not found ({source})")
    if labels is not None and source != "imagenet-val":
        raise ValueError(f"labels ({labels}) are only used with source imagenet-val, "
                         f"not {source}")
    if source == "imagenet-val":
        out = _list_val(folder, None if labels is None else Path(labels))
    elif source == "imagenet-folders":
        out = _list_folders(folder)
    else:
        out = _list_v2(folder)
    index = _class_index()
    return {w: sorted(out[w], key=lambda s: Path(s).name)
            for w in sorted(out, key=lambda w: index[w])}


def _list_folders(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not _WNID.fullmatch(entry.name):
                raise ValueError(f"{entry}: folder name is not a wnid (expected one sub-folder "
                                 "per wnid, e.g. n01440764)")
            _check_wnid(entry.name, str(entry))
            out[entry.name] = [str(p) for p in _images_in(entry)]
        elif _is_image(entry):
            raise ValueError(f"{entry}: image outside a class folder (imagenet-folders expects "
                             "one sub-folder per wnid)")
    if not out:
        raise ValueError(f"{folder}: no wnid sub-folders (imagenet-folders expects one "
                         "sub-folder per wnid)")
    return out


def _list_v2(folder: Path) -> dict[str, list[str]]:
    classes = _classes()
    out: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if _is_image(entry):
                raise ValueError(f"{entry}: image outside a class folder (imagenetv2 expects "
                                 "folders 0..999)")
            continue
        if not re.fullmatch(r"\d+", entry.name) or not 0 <= int(entry.name) < len(classes):
            raise ValueError(f"{entry}: folder name is not a class index 0..999 (imagenetv2 "
                             "layout)")
        wnid = classes[int(entry.name)][0]
        if wnid in out:
            raise ValueError(f"{entry}: class index {int(entry.name)} has two folders")
        out[wnid] = [str(p) for p in _images_in(entry)]
    if not out:
        raise ValueError(f"{folder}: no class folders 0..999 (imagenetv2 layout; point path at "
                         f"the extracted {DEFAULT_FOLDER} folder)")
    return out


def _list_val(folder: Path, labels: Path | None) -> dict[str, list[str]]:
    if labels is None:
        found = [folder / n for n in ("LOC_val_solution.csv",
                                      "ILSVRC2012_validation_ground_truth.txt")
                 if (folder / n).is_file()]
        if not found:
            raise ValueError(f"{folder}: no label file (set images.labels to LOC_val_solution.csv "
                             "or the devkit's ILSVRC2012_validation_ground_truth.txt)")
        labels = found[0]
    if not labels.is_file():
        raise ValueError(f"{labels}: label file not found")
    by_key = _read_val_labels(labels)

    files = _images_in(folder)
    if not files:
        raise ValueError(f"{folder}: no images (.JPEG/.jpg/.png) in the validation folder")
    by_name = {p.name: p for p in files}
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise ValueError(f"{folder}: two images named {p.stem} ({by_stem[p.stem].name}, "
                             f"{p.name})")
        by_stem[p.stem] = p

    out: dict[str, list[str]] = {}
    used: set[str] = set()
    for key, wnid in by_key.items():
        p = by_name.get(key) or by_stem.get(key)
        if p is None:
            raise ValueError(f"{labels}: label for image '{key}', which is not in {folder}")
        if p.name in used:
            raise ValueError(f"{labels}: image {p.name} is labelled twice")
        used.add(p.name)
        out.setdefault(wnid, []).append(str(p))
    unlabelled = [p.name for p in files if p.name not in used]
    if unlabelled:
        raise ValueError(f"{folder}: {len(unlabelled)} image(s) have no label in {labels} "
                         f"(first: {unlabelled[0]})")
    return out


def _read_val_labels(labels: Path) -> dict[str, str]:
    """Image key (file name or stem) -> wnid, in file order."""
    if labels.suffix.lower() == ".csv":
        return _read_loc_csv(labels)
    lines = [(i, line.split()) for i, line in
             enumerate(labels.read_text(errors="replace").splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{labels}: empty label file")
    widths = {len(tokens) for _, tokens in lines}
    if widths == {1}:
        return _read_devkit(labels, lines)
    if widths == {2}:
        return _read_two_column(labels, lines)
    bad = next(i for i, tokens in lines if len(tokens) != len(lines[0][1]) or len(tokens) > 2)
    raise ValueError(f"{labels}: line {bad}: expected one class id per line (devkit ground "
                     "truth) or 'filename label' on every line")


def _read_loc_csv(labels: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(labels, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if "ImageId" not in header or "PredictionString" not in header:
            raise ValueError(f"{labels}: expected header ImageId,PredictionString (Kaggle "
                             f"LOC_val_solution.csv), found {','.join(header) or 'none'}")
        for line, row in enumerate(reader, 2):
            key = (row["ImageId"] or "").strip()
            tokens = (row["PredictionString"] or "").split()
            if not key or not tokens:
                raise ValueError(f"{labels}: line {line}: empty ImageId or PredictionString")
            if key in out:
                raise ValueError(f"{labels}: line {line}: image {key} is labelled twice")
            out[key] = _check_wnid(tokens[0], f"{labels}: line {line}")
    if not out:
        raise ValueError(f"{labels}: no labels")
    return out


def _read_devkit(labels: Path, lines: list[tuple[int, list[str]]]) -> dict[str, str]:
    meta = labels.with_name("meta.mat")
    if not meta.is_file():
        raise ValueError(f"{labels}: devkit ground truth needs the devkit's meta.mat beside it "
                         f"({meta} not found)")
    id_to_wnid = _read_meta(meta)
    out: dict[str, str] = {}
    for n, (line, (token,)) in enumerate(lines, 1):
        if n != line:
            raise ValueError(f"{labels}: line {line} is empty (line i labels image i)")
        if not token.isdigit() or int(token) not in id_to_wnid:
            raise ValueError(f"{labels}: line {line}: '{token}' is not an ILSVRC2012_ID "
                             f"in {meta}")
        out[f"ILSVRC2012_val_{n:08d}"] = _check_wnid(id_to_wnid[int(token)],
                                                     f"{meta}: ILSVRC2012_ID {token}")
    return out


def _scalar(value: Any) -> Any:
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError("not a scalar")
        value = value.reshape(()).item() if value.dtype != object else value.reshape(-1)[0]
    return value


def _read_meta(meta: Path) -> dict[int, str]:
    import scipy.io

    try:
        synsets = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise ValueError(f"{meta}: cannot read the devkit's synsets struct "
                         f"({type(exc).__name__}: {exc})") from None
    synsets = np.atleast_1d(synsets)
    names = synsets.dtype.names or ()
    if "ILSVRC2012_ID" not in names or "WNID" not in names:
        raise ValueError(f"{meta}: synsets lack the fields ILSVRC2012_ID and WNID "
                         f"(found: {', '.join(names) or 'none'})")
    out: dict[int, str] = {}
    for ident, wnid in zip(synsets["ILSVRC2012_ID"].ravel(), synsets["WNID"].ravel(),
                           strict=True):
        try:
            out[int(_scalar(ident))] = str(_scalar(wnid)).strip()
        except (ValueError, TypeError):
            raise ValueError(f"{meta}: malformed synset entry ({ident!r}, {wnid!r})") from None
    return out


def _read_two_column(labels: Path, lines: list[tuple[int, list[str]]]) -> dict[str, str]:
    classes = _classes()
    out: dict[str, str] = {}
    for line, (name, label) in lines:
        if label.isdigit():
            if not int(label) < len(classes):
                raise ValueError(f"{labels}: line {line}: class index {label} is not in 0..999")
            wnid = classes[int(label)][0]
        else:
            wnid = _check_wnid(label, f"{labels}: line {line}")
        key = Path(name).name
        if key in out:
            raise ValueError(f"{labels}: line {line}: image {key} is labelled twice")
        out[key] = wnid
    return out


# ------------------------------------------------------------------------------------------
# ImageNetV2 download


def ensure_imagenetv2(dest_dir: str | os.PathLike[str], url: str = DEFAULT_URL,
                      sha256: str | None = DEFAULT_SHA256,
                      folder: str = DEFAULT_FOLDER) -> Path:
    """The extracted ImageNetV2 folder under ``dest_dir``, downloading it on first use.

    The tarball is streamed to a temporary file in ``dest_dir``, its SHA-256 checked, and
    extracted (``tarfile`` ``filter="data"``: no absolute paths, ``..`` or links out of the
    tree) into a temporary folder; ``folder`` is then renamed into place. If
    ``dest_dir/folder`` already exists it is returned without any network access.

    Parameters
    ----------
    dest_dir : str or path-like
        Download/cache folder.
    url : str
    sha256 : str or None
        Expected SHA-256 (hex). ``None``: download, then fail naming the computed hash, to be
        pinned in the config.
    folder : str
        The archive's top folder (``imagenetv2-matched-frequency-format-val``).

    Returns
    -------
    pathlib.Path
        ``dest_dir / folder``.

    Raises
    ------
    ValueError
        Checksum mismatch (naming the URL and both hashes), unpinned checksum, or an archive
        without ``folder`` or with unsafe members; nothing is left behind.
    OSError
        Network or disk errors (urllib's URLError is an OSError); nothing is left behind.
    """
    dest = Path(dest_dir)
    target = dest / folder
    if target.is_dir():
        return target
    if target.exists():
        raise ValueError(f"{target}: exists but is not a folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=dest, prefix=f".{folder}-", suffix=".tar.gz.part")
    part = Path(part_name)
    staging: Path | None = None
    try:
        print(f"downloading {url} -> {dest}", file=sys.stderr, flush=True)
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "semantic-emergence"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if sha256 is None:
            raise ValueError(f"{url}: no SHA-256 pinned; the download has SHA-256 {actual} "
                             "(set images.sha256 to it after checking it)")
        if actual.lower() != sha256.strip().lower():
            raise ValueError(f"{url}: SHA-256 mismatch: expected {sha256.strip().lower()}, "
                             f"got {actual}")
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{folder}-extract-"))
        try:
            with tarfile.open(part, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise ValueError(f"{url}: cannot extract the archive ({type(exc).__name__}: "
                             f"{exc})") from None
        extracted = staging / folder
        if not extracted.is_dir():
            raise ValueError(f"{url}: the archive has no top folder {folder}")
        try:
            os.rename(extracted, target)
        except OSError:
            if not target.is_dir():  # not a concurrent run that finished first
                raise
        return target
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created and not target.exists():
            with contextlib.suppress(OSError):
                dest.rmdir()


# ------------------------------------------------------------------------------------------
# Sampling and the manifest


def sample_groups(images_by_wnid: Mapping[str, Sequence[str]],
                  concepts: Sequence[tuple[str, str]], n_per_concept: int, seed: int,
                  *, source: str = "imagenet") -> tuple[list[ManifestRow], list[tuple[str, str]]]:
    """Sample ``n_per_concept`` distinct images per concept and split them into groups.

    Concept ``k`` (its position in ``concepts``) draws from
    ``numpy.random.default_rng([seed, k])`` (``Generator.choice`` without replacement over
    its images sorted by file name); the draws are sorted, and the ``j``-th goes to group
    ``str(j + 1)``. Each concept's sample depends only on ``seed``, its position and its own
    images, so appending concepts leaves the others' samples unchanged.

    Parameters
    ----------
    images_by_wnid : mapping
        wnid -> image paths (as from :func:`list_images`).
    concepts : sequence of (wnid, concept)
        Candidate concepts, e.g. :func:`imagenet_classes`.
    n_per_concept : int
        Images per concept = number of groups.
    seed : int
        Non-negative.
    source : str, keyword-only
        The manifest's ``source`` column (e.g. ``"imagenet-val"``).

    Returns
    -------
    rows : list of ManifestRow
        Group-major: all of group ``"1"`` in concept order, then group ``"2"``, ...
    skipped : list of (wnid, reason)
        Concepts with fewer than ``n_per_concept`` images.
    """
    if isinstance(n_per_concept, bool) or not isinstance(n_per_concept, int | np.integer) \
            or n_per_concept < 1:
        raise ValueError(f"images per concept must be a positive integer, got {n_per_concept!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    wnids = [w for w, _ in concepts]
    if len(set(wnids)) != len(wnids):
        dup = next(w for w in wnids if wnids.count(w) > 1)
        raise ValueError(f"concept {dup} is listed twice")

    chosen: list[tuple[str, str, list[str]]] = []
    skipped: list[tuple[str, str]] = []
    for position, (wnid, concept) in enumerate(concepts):
        images = sorted(images_by_wnid.get(wnid, ()), key=lambda s: (Path(s).name, s))
        if len(set(images)) != len(images):
            raise ValueError(f"concept {wnid}: an image is listed twice")
        if len(images) < n_per_concept:
            skipped.append((wnid, f"{len(images)} image(s), {n_per_concept} needed"))
            continue
        rng = np.random.default_rng([int(seed), position])
        picks = np.sort(rng.choice(len(images), size=n_per_concept, replace=False))
        chosen.append((wnid, concept, [images[int(i)] for i in picks]))

    rows = [ManifestRow(str(j + 1), wnid, concept, paths[j], source)
            for j in range(n_per_concept) for wnid, concept, paths in chosen]
    return rows, skipped


def build_imagenet_manifest(config_images: Mapping[str, Any],
                            manifest_path: str | os.PathLike[str], seed: int
                            ) -> tuple[list[ManifestRow], list[tuple[str, str]]]:
    """List, sample and write the manifest for an ImageNet source.

    Parameters
    ----------
    config_images : mapping
        The config's ``images`` section: ``source`` (imagenet-val, imagenet-folders or
        imagenetv2), ``path``, and optionally ``labels`` (imagenet-val), ``url`` and ``sha256``
        (imagenetv2; ``path`` is then the download/cache folder), ``images_per_concept``
        (default 5), ``max_concepts`` (the first N classes in class order).
    manifest_path : str or path-like
        Written atomically.
    seed : int

    Returns
    -------
    rows, skipped
        As :func:`sample_groups`.
    """
    source = config_images.get("source")
    if source not in SOURCES:
        raise ValueError(f"images.source: '{source}' is not an ImageNet source "
                         f"({', '.join(SOURCES)})")
    if not config_images.get("path"):
        raise ValueError(f"images.path: required for source {source}")
    path = Path(config_images["path"])
    n = config_images.get("images_per_concept", 5)
    max_concepts = config_images.get("max_concepts")
    if max_concepts is not None and (isinstance(max_concepts, bool)
                                     or not isinstance(max_concepts, int) or max_concepts < 1):
        raise ValueError(f"images.max_concepts: must be a positive integer, got {max_concepts!r}")

    if source == "imagenetv2":
        root = ensure_imagenetv2(path, config_images.get("url") or DEFAULT_URL,
                                 config_images.get("sha256") or DEFAULT_SHA256)
        images = list_images(source, root)
    else:
        images = list_images(source, path, config_images.get("labels"))

    concepts = imagenet_classes()
    if max_concepts is not None:
        concepts = concepts[:max_concepts]
    rows, skipped = sample_groups(images, concepts, n, seed, source=source)
    if not rows:
        raise ValueError(f"{path}: no concept has {n} images ({source})")
    write_manifest(manifest_path, rows)
    return rows, skipped
