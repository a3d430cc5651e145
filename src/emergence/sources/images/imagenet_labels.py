"""Label files of the ImageNet validation set: image key -> wnid.

:func:`read_val_labels` reads, in file order:

* Kaggle's ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``);
* the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, line
  ``i`` labels image ``i``), with the devkit's ``meta.mat`` beside it;
* a two-column text file ``filename label`` (label = wnid, or the class index in sorted-wnid
  order as in Caffe's ``val.txt``).

Every wnid is checked to be an ImageNet-1k class.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from emergence.sources.common import check_wnid, class_wnids

__all__ = ["read_val_labels"]


def read_val_labels(labels: Path) -> dict[str, str]:
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
            out[key] = check_wnid(tokens[0], f"{labels}: line {line}")
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
        out[f"ILSVRC2012_val_{n:08d}"] = check_wnid(id_to_wnid[int(token)],
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
    classes = class_wnids()
    out: dict[str, str] = {}
    for line, (name, label) in lines:
        if label.isdigit():
            if not int(label) < len(classes):
                raise ValueError(f"{labels}: line {line}: class index {label} is not in 0..999")
            wnid = classes[int(label)]
        else:
            wnid = check_wnid(label, f"{labels}: line {line}")
        key = Path(name).name
        if key in out:
            raise ValueError(f"{labels}: line {line}: image {key} is labelled twice")
        out[key] = wnid
    return out
