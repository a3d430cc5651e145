"""Real-photo image sources: ImageNet validation images and ImageNetV2.

The paper (Dharmaretnam & Fyshe 2018) takes 5 ImageNet validation images per concept and
splits them into 5 groups of one image per concept. This module lists labelled images from
the usual on-disk layouts (with :class:`emergence.sources.images.listing.Scan`: every format PIL
reads, the rest recorded) and samples them reproducibly into the image manifest.

Sources (``images.source`` in the config):

* ``imagenet-val``: a flat folder of ``ILSVRC2012_val_XXXXXXXX.JPEG`` files plus a label file
  (read by :mod:`emergence.sources.images.imagenet_labels`).
* ``imagenet-folders``: one sub-folder per wnid (the ILSVRC train/val folder layout).
* ``imagenetv2``: ImageNetV2 matched-frequency, folders ``0`` ... ``999`` (class index in
  sorted-wnid order); downloaded and checksum-verified on first use
  (:mod:`emergence.sources.images.imagenetv2`).

Concept words are the first WordNet lemma of each ImageNet-1k class, as timm ships them
(:mod:`emergence.sources.common`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from emergence.sources.common import (
    ManifestRow,
    check_wnid,
    class_index,
    class_wnids,
    imagenet_classes,
    is_wnid,
)
from emergence.sources.images.groups import sample_groups
from emergence.sources.images.imagenet_labels import read_val_labels
from emergence.sources.images.imagenetv2 import (
    DEFAULT_FOLDER,
    DEFAULT_SHA256,
    DEFAULT_URL,
    ensure_imagenetv2,
)
from emergence.sources.images.listing import Scan, Skipped, is_image

__all__ = [
    "SOURCES",
    "list_images",
    "plan_imagenet_manifest",
    "sample_groups",
    "scan_images",
]

SOURCES = ("imagenet-val", "imagenet-folders", "imagenetv2")

_LABEL_FILES = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt")


# ------------------------------------------------------------------------------------------
# Listing labelled images


def list_images(source: str, path: str | os.PathLike[str],
                labels: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """:func:`scan_images` without the files it left out."""
    return scan_images(source, path, labels)[0]


def scan_images(source: str, path: str | os.PathLike[str],
                labels: str | os.PathLike[str] | None = None, scan: Scan | None = None,
                ) -> tuple[dict[str, list[str]], list[Skipped]]:
    """List labelled images: ``{wnid: [image path, ...]}``, paths sorted by file name, and
    the files left out (:class:`~emergence.sources.images.listing.Scan`: not a format PIL reads,
    broken links, second names of a file).

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
    scan : Scan, optional
        The :class:`~emergence.sources.images.listing.Scan` to list with.

    Returns
    -------
    dict
        wnid -> image paths (``path`` joined with the file name, as given). Only classes
        present are keys; dict order is class-index order.
    list of Skipped
        What was left out and why.

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
    scan = scan or Scan()
    if source == "imagenet-val":
        out = _list_val(folder, None if labels is None else Path(labels), scan)
    elif source == "imagenet-folders":
        out = _list_folders(folder, scan)
    else:
        out = _list_v2(folder, scan)
    index = class_index()
    return ({w: sorted(out[w], key=lambda s: Path(s).name)
             for w in sorted(out, key=lambda w: index[w])}, scan.skipped)


def _list_folders(folder: Path, scan: Scan) -> dict[str, list[str]]:
    def check(entry: Path) -> None:
        if not is_wnid(entry.name):
            raise ValueError(f"{entry}: folder name is not a wnid (expected one sub-folder "
                             "per wnid, e.g. n01440764)")
        check_wnid(entry.name, str(entry))

    folders = scan.sub_folders(folder, "class",
                               "imagenet-folders expects one sub-folder per wnid", check,
                               empty_noun="wnid")
    return {name: scan.images(entry, name, "class") for name, entry in folders.items()}


def _list_v2(folder: Path, scan: Scan) -> dict[str, list[str]]:
    classes = class_wnids()
    out: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if is_image(entry):
                raise ValueError(f"{entry}: image outside a class folder (imagenetv2 expects "
                                 "folders 0..999)")
            continue
        if not re.fullmatch(r"\d+", entry.name) or not 0 <= int(entry.name) < len(classes):
            raise ValueError(f"{entry}: folder name is not a class index 0..999 (imagenetv2 "
                             "layout)")
        wnid = classes[int(entry.name)]
        if wnid in out:
            raise ValueError(f"{entry}: class index {int(entry.name)} has two folders")
        out[wnid] = scan.images(entry, wnid, "class")
    if not out:
        raise ValueError(f"{folder}: no class folders 0..999 (imagenetv2 layout; point path at "
                         f"the extracted {DEFAULT_FOLDER} folder)")
    return out


def _list_val(folder: Path, labels: Path | None, scan: Scan) -> dict[str, list[str]]:
    if labels is None:
        found = [folder / n for n in _LABEL_FILES if (folder / n).is_file()]
        if not found:
            raise ValueError(f"{folder}: no label file (set images.labels to LOC_val_solution.csv "
                             "or the devkit's ILSVRC2012_validation_ground_truth.txt)")
        labels = found[0]
    if not labels.is_file():
        raise ValueError(f"{labels}: label file not found")
    by_key = read_val_labels(labels)

    files = [Path(p) for p in scan.images(folder, "")]
    # the label files beside the images are not images left out
    scan.skipped[:] = [s for s in scan.skipped if Path(s.path).name not in _LABEL_FILES
                       and Path(s.path).resolve() != labels.resolve()]
    if not files:
        raise ValueError(f"{folder}: no images (.JPEG or any format PIL reads) in the "
                         "validation folder")
    by_name = {p.name: p for p in files}
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise ValueError(f"{folder}: two images named {p.stem} ({by_stem[p.stem].name}, "
                             f"{p.name})")
        by_stem[p.stem] = p
    left_out = {n: i for i, s in enumerate(scan.skipped)
                for n in (Path(s.path).name, Path(s.path).stem)}

    out: dict[str, list[str]] = {}
    used: set[str] = set()
    for key, wnid in by_key.items():
        p = by_name.get(key) or by_stem.get(key)
        if p is None and key in left_out:  # a broken link, ...: recorded with its class
            scan.skipped[left_out[key]] = scan.skipped[left_out[key]]._replace(wnid=wnid)
            continue
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


# ------------------------------------------------------------------------------------------
# The manifest (sampling: emergence.sources.images.groups.sample_groups)


def plan_imagenet_manifest(source: str, path: str | os.PathLike[str], seed: int, *,
                           labels: str | os.PathLike[str] | None = None,
                           url: str | None = None, sha256: str | None = None,
                           images_per_concept: int = 5, max_concepts: int | None = None,
                           images_per_average: int = 1, scan: Scan | None = None,
                           ) -> tuple[list[ManifestRow], list[Skipped]]:
    """List and sample the manifest of an ImageNet source (written by the caller).

    Parameters
    ----------
    source : {"imagenet-val", "imagenet-folders", "imagenetv2"}
    path : str or path-like
        The image folder (imagenetv2: the download/cache folder).
    seed : int
    labels : str or path-like, optional
        imagenet-val only: the label file (see :func:`list_images`).
    url, sha256 : str, optional
        imagenetv2 only: the tarball and its SHA-256 (default: the matched-frequency
        release, :data:`~emergence.sources.images.imagenetv2.DEFAULT_URL`).
    images_per_concept : int
        Images per concept = number of groups.
    max_concepts : int, optional
        Only the first N classes in class order.
    images_per_average : int
        Images per concept in each group, averaged by the readers (default 1: the paper).
    scan : Scan, optional
        The :class:`~emergence.sources.images.listing.Scan` to list with.

    Returns
    -------
    rows : list of ManifestRow
        As :func:`sample_groups`.
    skipped : list of Skipped
        The files left out (:func:`scan_images`), then the classes with too few images.
    """
    path = Path(path)
    if source == "imagenetv2":
        root = ensure_imagenetv2(path, url or DEFAULT_URL, sha256 or DEFAULT_SHA256)
        images, left_out = scan_images(source, root, scan=scan)
    else:
        images, left_out = scan_images(source, path, labels, scan)

    concepts = imagenet_classes()
    if max_concepts is not None:
        concepts = concepts[:max_concepts]
    rows, too_few = sample_groups(images, concepts, images_per_concept, seed, source=source,
                                  per_average=images_per_average)
    if not rows:
        needed = images_per_concept * images_per_average
        raise ValueError(f"{path}: no concept has {needed} images ({source})")
    return rows, [*left_out, *(Skipped(w, "", reason) for w, reason in too_few)]
