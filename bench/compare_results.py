"""Compare two results folders: are the outputs of a refactor the same as before it?

    python bench/compare_results.py OLD/results NEW/results

Every TSV must be byte-identical, every HDF5 file must hold the same datasets (names, dtypes,
shapes, values; NaN equals NaN) with the same attributes in the same order, and the same
files must exist. Differences that are expected between two runs are reported apart and do
not fail: logs and benchmarks (timings), figures (PNG/PDF carry no result), and values that
hold the absolute run folder (image paths). Exit status 1 on any other difference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SKIP_DIRS = ("logs", "benchmarks")
SKIP_SUFFIXES = (".png", ".pdf")


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _relative(value: Any, roots: tuple[str, str]) -> Any:
    """Strings with the run folder replaced, so that paths compare across folders."""
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        out = [(v.decode() if isinstance(v, bytes) else str(v)) for v in arr.ravel()]
        for root in roots:
            out = [v.replace(root, "<run>") for v in out]
        return np.array(out, dtype=object).reshape(arr.shape)
    return value


def compare_h5(old: Path, new: Path, roots: tuple[str, str]) -> tuple[list[str], list[str]]:
    """(differences, path-only differences) between two HDF5 files."""
    diffs: list[str] = []
    paths_only: list[str] = []
    with h5py.File(old, "r") as fa, h5py.File(new, "r") as fb:
        items_a: list[tuple[str, Any]] = [("/", fa)]
        items_b: list[tuple[str, Any]] = [("/", fb)]
        fa.visititems(lambda n, o: items_a.append((n, o)))
        fb.visititems(lambda n, o: items_b.append((n, o)))
        if [n for n, _ in items_a] != [n for n, _ in items_b]:
            other = sorted({n for n, _ in items_a} ^ {n for n, _ in items_b})
            diffs.append(f"{new}: other objects {other}")
            return diffs, paths_only
        for (name, oa), (_, ob) in zip(items_a, items_b, strict=True):
            if list(oa.attrs) != list(ob.attrs):
                diffs.append(f"{new}:{name}: attrs {list(oa.attrs)} != {list(ob.attrs)}")
            for key in oa.attrs:
                if key in ob.attrs and not _same(oa.attrs[key], ob.attrs[key]):
                    where = f"{new}:{name}@{key}"
                    if _same(_relative(oa.attrs[key], roots), _relative(ob.attrs[key], roots)):
                        paths_only.append(where)
                    else:
                        diffs.append(f"{where}: {oa.attrs[key]!r} != {ob.attrs[key]!r}")
            if isinstance(oa, h5py.Dataset):
                if oa.dtype != ob.dtype or oa.shape != ob.shape:
                    diffs.append(f"{new}:{name}: {oa.dtype}{oa.shape} != {ob.dtype}{ob.shape}")
                elif not _same(oa[()], ob[()]):
                    if _same(_relative(oa[()], roots), _relative(ob[()], roots)):
                        paths_only.append(f"{new}:{name}")
                    else:
                        diffs.append(f"{new}:{name}: values differ")
    return diffs, paths_only


def compare(old: Path, new: Path) -> int:
    roots = (str(old.resolve().parent), str(new.resolve().parent))
    files_a = {p.relative_to(old) for p in old.rglob("*") if p.is_file()}
    files_b = {p.relative_to(new) for p in new.rglob("*") if p.is_file()}
    keep = {p for p in files_a | files_b
            if p.parts[0] not in SKIP_DIRS and p.suffix not in SKIP_SUFFIXES}
    diffs = [f"only in {old}: {p}" for p in sorted(keep & files_a - files_b)]
    diffs += [f"only in {new}: {p}" for p in sorted(keep & files_b - files_a)]
    counts = {"tsv": 0, "h5": 0, "other": 0}
    paths_only: list[str] = []
    for rel in sorted(keep & files_a & files_b):
        a, b = old / rel, new / rel
        if rel.suffix == ".h5":
            counts["h5"] += 1
            d, p = compare_h5(a, b, roots)
            diffs += d
            paths_only += p
        else:
            counts["tsv" if rel.suffix == ".tsv" else "other"] += 1
            if a.read_bytes() != b.read_bytes():
                text_a = a.read_text(errors="replace")
                text_b = b.read_text(errors="replace")
                for root in roots:
                    text_a, text_b = (text_a.replace(root, "<run>"),
                                      text_b.replace(root, "<run>"))
                (paths_only if text_a == text_b else diffs).append(str(b))
    print(f"compared {counts['tsv']} TSV, {counts['h5']} HDF5 and {counts['other']} other files "
          f"(skipped: {', '.join(SKIP_DIRS)}, figures)")
    for p in paths_only:
        print(f"  differs only by the run folder: {p}")
    for d in diffs:
        print(f"DIFFERENT: {d}")
    print("identical" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
