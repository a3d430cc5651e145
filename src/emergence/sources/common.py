"""timm's ImageNet tables: wnids in class order, WordNet lemmas and glosses.

The one reader of the files timm ships in ``timm/data/_info`` (the same files
``timm.data.ImageNetInfo`` reads): ``imagenet_synsets.txt`` (the 1000 ImageNet-1k wnids
in class-index order, i.e. sorted), the subsets' synset lists,
``imagenet_synset_to_lemma.txt`` and ``imagenet_synset_to_definition.txt`` (all 21,844
ImageNet-21k synsets). The files are located without importing timm (which imports
torch) and read once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "class_index",
    "class_wnids",
    "glosses_for",
    "imagenet_classes",
    "lemmas_for",
]

# timm.data.imagenet_info._SUBSETS: subset name (lowercase, no '-', '_' or space) -> file.
_SUBSETS = {
    "imagenet1k": "imagenet_synsets.txt",
    "imagenet12k": "imagenet12k_synsets.txt",
    "imagenet22k": "imagenet22k_synsets.txt",
    "imagenet21k": "imagenet21k_goog_synsets.txt",
    "imagenet21kgoog": "imagenet21k_goog_synsets.txt",
    "imagenet21kmiil": "imagenet21k_miil_synsets.txt",
    "imagenet22kms": "imagenet22k_ms_synsets.txt",
}
_LEMMA_FILE = "imagenet_synset_to_lemma.txt"
_DEFINITION_FILE = "imagenet_synset_to_definition.txt"


def _info_file(name: str) -> Path:
    """Path of a file in timm's ``data/_info`` folder, without importing timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("timm is not installed: it ships the ImageNet class tables "
                           "(timm/data/_info)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    if not path.is_file():
        raise RuntimeError(f"{path}: file not found (timm's ImageNet class data)")
    return path


@functools.cache
def class_wnids(subset: str = "imagenet-1k") -> tuple[str, ...]:
    """The wnids of a timm ImageNet label set, in class-index order.

    ``subset`` is a name as :func:`timm.data.infer_imagenet_subset` returns it
    (``"imagenet-1k"``, ``"imagenet-12k"``, ``"imagenet-22k"``, ...); the result equals
    ``timm.data.ImageNetInfo(subset).label_names()``. ImageNet-1k's 1000 wnids are
    checked to be distinct.
    """
    key = re.sub(r"[-_\s]", "", subset.lower())
    if key not in _SUBSETS:
        raise ValueError(f"unknown ImageNet label set {subset!r} "
                         f"(timm knows {', '.join(sorted(_SUBSETS))})")
    path = _info_file(_SUBSETS[key])
    wnids = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                  if line.strip())
    if key == "imagenet1k" and (len(wnids) != 1000 or len(set(wnids)) != 1000):
        raise RuntimeError(f"{path}: expected 1000 distinct wnids, found {len(wnids)}")
    return wnids


@functools.cache
def class_index() -> dict[str, int]:
    """ImageNet-1k wnid -> class index (the position in sorted-wnid order)."""
    return {wnid: i for i, wnid in enumerate(class_wnids())}


@functools.cache
def _synset_table(name: str) -> dict[str, str]:
    """wnid -> value of a two-column (tab-separated) timm table, both sides stripped."""
    table: dict[str, str] = {}
    with _info_file(name).open(encoding="utf-8") as fin:
        for line in fin:
            wnid, sep, value = line.rstrip("\n").partition("\t")
            if sep:
                table[wnid.strip()] = value.strip()
    return table


def _split_lemmas(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _lookup(wnids: Iterable[str], name: str) -> dict[str, str]:
    table = _synset_table(name)
    wnids = list(wnids)
    missing = [w for w in wnids if w not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise KeyError(f"{len(missing)} WordNet id(s) not in timm's {name}: {shown}")
    return {w: table[w] for w in wnids}


def lemmas_for(wnids: Iterable[str], *, missing_ok: bool = False) -> dict[str, list[str]]:
    """ImageNet lemmas of each synset, from timm's ``imagenet_synset_to_lemma.txt``.

    Parameters
    ----------
    wnids
        WordNet ids such as ``"n01440764"`` (any of the 21,844 ImageNet-21k synsets).
    missing_ok
        Give an unknown wnid no lemmas (``[]``) instead of raising.

    Returns
    -------
    dict
        ``wnid -> [lemma, ...]`` in input order, lemmas in WordNet order
        (``"n01440764" -> ["tench", "Tinca tinca"]``).

    Raises
    ------
    KeyError
        If a wnid is not in the table (unless ``missing_ok``).
    """
    if missing_ok:
        table = _synset_table(_LEMMA_FILE)
        return {w: _split_lemmas(table.get(w, "")) for w in wnids}
    return {w: _split_lemmas(v) for w, v in _lookup(wnids, _LEMMA_FILE).items()}


def glosses_for(wnids: Iterable[str]) -> dict[str, str]:
    """WordNet gloss of each synset, from timm's ``imagenet_synset_to_definition.txt``.

    Raises
    ------
    KeyError
        If a wnid is not in the table.
    """
    return _lookup(wnids, _DEFINITION_FILE)


@functools.cache
def _classes() -> tuple[tuple[str, str], ...]:
    wnids = class_wnids()
    table = _synset_table(_LEMMA_FILE)
    for wnid in wnids:
        if wnid not in table:
            raise RuntimeError(f"{_info_file(_LEMMA_FILE)}: no lemma for {wnid}")
    return tuple((w, table[w].split(",")[0].strip()) for w in wnids)


def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet-1k classes in class-index order (sorted wnids).

    Returns
    -------
    list of (wnid, concept)
        ``concept`` is the first WordNet lemma as written (``"tench"``, ``"great white
        shark"``). Two words occur twice: ``crane`` (bird, machine) and ``maillot``.
    """
    return list(_classes())
