"""What the three kinds of source share: concepts, the manifest, names, ImageNet's tables.

Image sources (:mod:`emergence.sources.images`) write two files that the later steps and
the word models read, and all three kinds of source (images, models, words) name concepts
alike. Their types live here, in a leaf that imports no other source module:

* concept ids: an ImageNet/WordNet id looks like :data:`WNID` (``n`` + 8 digits); a folder
  source's ids are its folder names;
* names as the pipeline compares them, in Unicode NFC (:func:`nfc`): macOS (and zip
  archives made there) writes file names decomposed (NFD, ``e`` + U+0301 for ``é``), most
  editors and tables composed (NFC, U+00E9). Concept ids, folder names, words and
  vector-file tokens are all compared in NFC; paths on disk keep their own bytes. Two names
  that differ only in normalisation are an error whose message shows both as code points
  (:func:`same_but_normalisation`);
* :class:`Concept`: a folder source's concept (id, word, definition, wnid), the rows of
  ``images/concepts.tsv`` (:func:`write_concepts`, :func:`read_concepts`), which word
  models read instead of timm's ImageNet tables;
* :class:`ManifestRow`: a row of ``images/manifest.tsv`` (group, concept id in the ``wnid``
  column, concept word, image path, source), which every later step reads
  (:func:`read_manifest`, :func:`group_rows`, :func:`candidates`). A *group* holds one
  image per concept (the paper: 5 groups of 166 images), or, with ``images_per_average``
  n > 1, n images per concept whose activations the readers average
  (:func:`emergence.formats.activations.load_group`);
* timm's ImageNet tables, the one reader of the files timm ships in ``timm/data/_info``
  (the same files ``timm.data.ImageNetInfo`` reads): ``imagenet_synsets.txt`` (the 1000
  ImageNet-1k wnids in class-index order, i.e. sorted), the subsets' synset lists,
  ``imagenet_synset_to_lemma.txt`` and ``imagenet_synset_to_definition.txt`` (all 21,844
  ImageNet-21k synsets). The files are located without importing timm (which imports
  torch) and read once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emergence.io import read_tsv, write_tsv

__all__ = [
    "CONCEPTS_COLUMNS",
    "MANIFEST_COLUMNS",
    "WNID",
    "Concept",
    "ManifestRow",
    "candidates",
    "check_wnid",
    "class_index",
    "class_wnids",
    "code_points",
    "glosses_for",
    "group_rows",
    "imagenet_classes",
    "is_wnid",
    "lemmas_for",
    "nfc",
    "read_concepts",
    "read_manifest",
    "same_but_normalisation",
    "write_concepts",
    "write_manifest",
]

#: An ImageNet/WordNet id: ``n`` + 8 digits (``n02084071``).
WNID = re.compile(r"n\d{8}")


def is_wnid(name: str) -> bool:
    """Whether ``name`` is written as a WordNet id (:data:`WNID`; not whether it exists)."""
    return WNID.fullmatch(name) is not None


# ------------------------------------------------------------------------------------------
# Names compared in Unicode NFC


def nfc(name: str) -> str:
    """``name`` in Unicode normal form C (ASCII is returned as is, without a copy)."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)


def code_points(name: str) -> str:
    """``'crème'`` -> ``"U+0063 U+0072 U+00E8 U+006D U+0065"``."""
    return " ".join(f"U+{ord(c):04X}" for c in name)


def same_but_normalisation(what: str, first: str, second: str) -> str:
    """The message for two names that are equal in NFC only: both with their code points."""
    return (f"{what} {first!r} ({code_points(first)}) and {second!r} ({code_points(second)}) "
            "differ only in Unicode normalisation (NFC/NFD): rename one")


# ------------------------------------------------------------------------------------------
# A folder source's concepts: images/concepts.tsv

#: columns of ``images/concepts.tsv``
CONCEPTS_COLUMNS = ["concept_id", "word", "definition", "wnid"]


@dataclass(frozen=True)
class Concept:
    """One concept of a folder source (:mod:`emergence.sources.images.folders`): its id
    (the folder name), the word word models look up, an optional definition (the gloss
    of text encoders) and an optional ImageNet wnid (its lemmas and gloss as fallbacks)."""

    concept_id: str
    word: str
    definition: str = ""
    wnid: str = ""


def write_concepts(path: str | os.PathLike[str], concepts: Iterable[Concept]) -> None:
    """``images/concepts.tsv``: the concepts of the manifest, with word, definition, wnid."""
    write_tsv(path, [c.__dict__ for c in concepts], CONCEPTS_COLUMNS)


def read_concepts(path: str | os.PathLike[str]) -> dict[str, Concept]:
    """``images/concepts.tsv`` as concept id -> :class:`Concept`."""
    return {r["concept_id"]: Concept(**{c: r[c] for c in CONCEPTS_COLUMNS})
            for r in read_tsv(path, CONCEPTS_COLUMNS)}


# ------------------------------------------------------------------------------------------
# The manifest: images/manifest.tsv

MANIFEST_COLUMNS = ["group", "wnid", "concept", "path", "source"]


@dataclass(frozen=True)
class ManifestRow:
    group: str
    wnid: str
    concept: str
    path: str
    source: str


def write_manifest(path: str | os.PathLike[str], rows: Sequence[ManifestRow]) -> None:
    write_tsv(path, [r.__dict__ for r in rows], MANIFEST_COLUMNS)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read and check a manifest: the same number of images (1, or ``images_per_average``)
    for every concept in every group, each image once per group."""
    rows = [ManifestRow(**r) for r in read_tsv(path, MANIFEST_COLUMNS)]  # type: ignore[arg-type]
    counts = Counter((r.group, r.wnid) for r in rows)
    paths = Counter((r.group, r.path) for r in rows)
    twice = next((k for k, n in paths.items() if n > 1), None)
    if twice is not None:
        raise ValueError(f"{path}: image {twice[1]} appears twice in group {twice[0]}")
    if counts and len(set(counts.values())) > 1:
        least = min(counts.values())
        group, wnid = next(k for k, n in counts.items() if n != least)
        raise ValueError(f"{path}: concept {wnid} has {counts[group, wnid]} images in group "
                         f"{group}, other concepts {least} (every concept needs the same "
                         "number in every group)")
    return rows


def group_rows(rows: Sequence[ManifestRow], group: str) -> list[ManifestRow]:
    """The manifest rows of one group, in manifest order (the order of the activations)."""
    selected = [r for r in rows if r.group == group]
    if not selected:
        raise ValueError(f"group '{group}' has no images in the manifest")
    return selected


def candidates(rows: Sequence[ManifestRow]) -> list[tuple[str, str]]:
    """Unique (wnid, concept word) pairs in first-appearance order."""
    out: dict[str, str] = {}
    for r in rows:
        out.setdefault(r.wnid, r.concept)
    return list(out.items())


# ------------------------------------------------------------------------------------------
# timm's ImageNet tables: wnids in class order, WordNet lemmas and glosses

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


def check_wnid(wnid: str, where: str) -> str:
    """``wnid`` if it is an ImageNet-1k class, else one line naming ``where``."""
    if wnid not in class_index():
        raise ValueError(f"{where}: unknown wnid '{wnid}' (not an ImageNet-1k class)")
    return wnid


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
