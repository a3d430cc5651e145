"""A folder per concept (the THINGS layout): ``<root>/<concept_id>/<image files>``.

The concepts are the sub-folders of ``root`` (hidden ones ignored), or, with a concept
table, the table's rows in file order (folders not in the table are left out). Each
concept has

* ``concept_id``: its folder name; the pipeline's concept id, held in the manifest's
  ``wnid`` column (that column keeps its name for every source). Ids, words and folder
  names are compared in Unicode NFC (a folder named on macOS, decomposed, matches the
  table's composed id; :mod:`emergence.sources.common`); paths keep the names on disk;
* ``word``: what word models look up. From the table, or else the folder name with
  ``_`` as space (``ice_cream`` -> ``ice cream``). A trailing sense digit is *not*
  removed (THINGS names ``bat1``/``bat2``): the table gives such concepts their word;
* ``definition`` (optional): the text a ``sentence-transformer`` embeds in ``text: gloss``
  and ``"word: gloss"`` modes (what the WordNet gloss is for ImageNet);
* ``wnid`` (optional): an ImageNet/WordNet id (``n02084071``); its ImageNet lemmas are
  fallbacks after ``word`` for vector-file word models, and its WordNet gloss stands in
  for an empty ``definition``.

A concept's images are the files of its folder in a format PIL reads; what else is there
is recorded in ``images/skipped.tsv`` (:mod:`emergence.sources.images.listing`).

The concept table is tab-separated (``.tsv``, ``.txt``) or comma-separated (``.csv``),
chosen by suffix, with a header; which columns are which is configured
(:data:`TABLE_COLUMNS` gives the defaults). The images rule writes the concepts it kept
to ``images/concepts.tsv`` (:func:`write_concepts`), which the word-vector jobs read
(:func:`read_concepts`) instead of timm's ImageNet tables.

:func:`read_label_map` reads the 1 vs 2 test's label map (the network's class label ->
concept id), a table of the same kinds.
"""

from __future__ import annotations

import csv
import glob
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from emergence.sources.common import (
    Concept,
    ManifestRow,
    is_wnid,
    nfc,
    same_but_normalisation,
)
from emergence.sources.images.groups import sample_groups
from emergence.sources.images.listing import Scan, Skipped

__all__ = ["TABLE_COLUMNS", "concept_folders", "default_word", "plan_folder_manifest",
           "read_concept_table", "read_label_map", "read_table"]

#: role -> default column name of the concept table (``images.table``)
TABLE_COLUMNS = {"id": "concept_id", "word": "word", "definition": "definition",
                 "wnid": "wnid"}
FILES = "{concept_id}/*"  # where a concept's images are: a folder per concept


def default_word(concept_id: str) -> str:
    """The word of a concept without a table: the folder name with ``_`` as space."""
    return " ".join(concept_id.replace("_", " ").split())


def read_table(path: str | os.PathLike[str], required: Sequence[str], what: str
               ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A ``.tsv``/``.txt`` (tab) or ``.csv`` (comma) table with a header: its header and
    ``(line number, row)`` pairs; blank lines skipped. One-line ``ValueError`` naming the
    file for an unknown suffix, a missing column or a row with too few fields."""
    path = Path(path)
    delimiter = {".tsv": "\t", ".txt": "\t", ".csv": ","}.get(path.suffix.lower())
    if delimiter is None:
        raise ValueError(f"{path}: {what} must be .tsv (tab-separated) or .csv "
                         f"(comma-separated), not '{path.suffix}'")
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            shown = ", ".join(map(repr, header)) or "none"
            raise ValueError(f"{path}: {what} lacks column(s) "
                             f"{', '.join(map(repr, missing))} (header: {shown})")
        rows: list[tuple[int, dict[str, str]]] = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) < len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(fields)} field(s), the header "
                                 f"has {len(header)}")
            values = {h: f.strip() for h, f in zip(header, fields, strict=False)}
            rows.append((reader.line_num, values))
    return header, rows


def read_concept_table(path: str | os.PathLike[str],
                       columns: Mapping[str, str] | None = None) -> list[Concept]:
    """The concepts of a concept table, in file order.

    ``columns`` maps the roles ``id``, ``word``, ``definition`` and ``wnid`` to column
    names (defaults :data:`TABLE_COLUMNS`). The id column is required; so is the word
    column unless it is left at its default name and absent (then every word is the
    default, :func:`default_word`); definition and wnid columns are used when present.
    One-line ``ValueError`` naming the file and line: a missing column, an empty id or
    word, a duplicate id, a wnid that is not ``n`` + 8 digits.
    """
    names = {**TABLE_COLUMNS, **(columns or {})}
    unknown = sorted(set(names) - set(TABLE_COLUMNS))
    if unknown:
        raise ValueError(f"concept table: unknown role(s) {unknown} "
                         f"(known: {', '.join(TABLE_COLUMNS)})")
    required = [names["id"]]
    optional = {"word": names["word"] == TABLE_COLUMNS["word"],
                "definition": True, "wnid": True}
    header, rows = read_table(path, required, "concept table")
    for role in ("word", "definition", "wnid"):
        if names[role] not in header and not optional[role]:
            raise ValueError(f"{path}: concept table lacks column {names[role]!r} "
                             f"(images.table.{role}; header: {', '.join(map(repr, header))})")
    if not rows:
        raise ValueError(f"{path}: concept table has no rows")
    seen: dict[str, tuple[int, str]] = {}
    out: list[Concept] = []
    for line, raw in rows:
        row = {k: nfc(v) for k, v in raw.items()}
        cid = row[names["id"]]
        if not cid:
            raise ValueError(f"{path}:{line}: empty concept id (column {names['id']!r})")
        if cid in seen:
            first_line, first = seen[cid]
            if first != raw[names["id"]]:
                raise ValueError(f"{path}:{line}: " + same_but_normalisation(
                    f"concept ids (line {first_line} and {line})", first, raw[names["id"]]))
            raise ValueError(f"{path}:{line}: duplicate concept id {cid!r} (first on line "
                             f"{first_line})")
        seen[cid] = (line, raw[names["id"]])
        word = row[names["word"]] if names["word"] in header else default_word(cid)
        if not word:
            raise ValueError(f"{path}:{line}: empty word for concept {cid!r} "
                             f"(column {names['word']!r})")
        wnid = row.get(names["wnid"], "")
        if wnid and not is_wnid(wnid):
            raise ValueError(f"{path}:{line}: wnid {wnid!r} of concept {cid!r} is not a "
                             f"WordNet id such as n02084071 (column {names['wnid']!r})")
        out.append(Concept(cid, word, row.get(names["definition"], ""), wnid))
    return out


def concept_folders(root: str | os.PathLike[str], scan: Scan | None = None
                    ) -> dict[str, Path]:
    """The concept folders of ``root`` by (NFC) name, sorted; one line for an image
    outside a concept folder, a broken folder link, two names equal in NFC only, or a
    root without folders (:meth:`~emergence.sources.images.listing.Scan.sub_folders`)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: image folder not found (folders: one sub-folder of images "
                         "per concept)")
    return (scan or Scan()).sub_folders(root, "concept",
                                        "folders: <root>/<concept_id>/<images>")


Plan = tuple[list[ManifestRow], list[Skipped], list[Concept]]


def plan_folder_manifest(root: str | os.PathLike[str], seed: int, *,
                         concepts: Sequence[Concept] | None = None,
                         images_per_concept: int = 5, images_per_average: int = 1,
                         max_concepts: int | None = None, table: str = "",
                         files: str = FILES, scan: Scan | None = None) -> Plan:
    """List and sample (:func:`~emergence.sources.images.groups.sample_groups`) the manifest of a
    folder source (written by the caller).

    ``concepts``: from the concept table (``table`` names it in messages), or ``None`` for
    every folder of ``root``; ``max_concepts`` keeps the first N. Returns the manifest
    rows, what was left out (files, :class:`~emergence.sources.images.listing.Scan`; concepts with
    too few images) and the concepts with images in the manifest. One line for a table
    concept without a folder or an empty folder.

    ``files``: where a concept's images are below ``root``, a glob with ``{concept_id}``
    (default ``{concept_id}/*``, a folder per concept; e.g. ``*/{concept_id}.png`` for one
    folder per image set with files named by concept). Other layouts need the table.
    ``scan``: the :class:`~emergence.sources.images.listing.Scan` to list with (its ``stamps``
    are then the listed images' sizes and mtimes).
    """
    scan = scan or Scan()
    if files != FILES:
        return _plan_from_pattern(root, seed, concepts, files, table, images_per_concept,
                                  images_per_average, max_concepts, scan)
    folders = concept_folders(root, scan)
    if concepts is None:
        concepts = [Concept(name, default_word(name)) for name in folders]
    elif not concepts:
        raise ValueError(f"{table}: concept table has no rows")
    concepts = list(concepts)[:max_concepts] if max_concepts else list(concepts)
    images: dict[str, list[str]] = {}
    for c in concepts:
        folder = folders.get(c.concept_id)
        if folder is None:
            raise ValueError(f"{table}: concept id {c.concept_id!r} has no folder in {root} "
                             "(ids are folder names)")
        before = len(scan.skipped)
        images[c.concept_id] = scan.images(folder, c.concept_id)
        if not images[c.concept_id]:
            left = scan.skipped[before:]
            why = f"; {len(left)} file(s) left out, first: {Path(left[0].path).name}: " \
                  f"{left[0].reason}" if left else ""
            raise ValueError(f"{folder}: empty concept folder (no image in a format PIL "
                             f"reads{why})")
    return _sample(root, seed, concepts, images, scan.skipped, images_per_concept,
                   images_per_average)


def _plan_from_pattern(root: str | os.PathLike[str], seed: int,
                       concepts: Sequence[Concept] | None, files: str, table: str,
                       images_per_concept: int, images_per_average: int,
                       max_concepts: int | None, scan: Scan) -> Plan:
    """:func:`plan_folder_manifest` for a ``files`` pattern other than a folder per
    concept: each table concept's images are the sorted matches of the pattern (with the
    id in NFC and, where different, NFD: names as macOS writes them)."""
    if "{concept_id}" not in files:
        raise ValueError(f"images.files: {files!r} must contain {{concept_id}}")
    if concepts is None:
        raise ValueError(f"images.files: {files!r} needs images.table (which concepts; "
                         "only the default {concept_id}/* lists them from the folders)")
    if not concepts:
        raise ValueError(f"{table}: concept table has no rows")
    concepts = list(concepts)[:max_concepts] if max_concepts else list(concepts)
    root = Path(root)
    images: dict[str, list[str]] = {}
    for c in concepts:
        forms = dict.fromkeys([c.concept_id, unicodedata.normalize("NFD", c.concept_id)])
        patterns = [files.replace("{concept_id}", glob.escape(f)) for f in forms]
        found = sorted({p for pattern in patterns for p in root.glob(pattern)})
        images[c.concept_id] = scan.files(found, c.concept_id)
        if not images[c.concept_id]:
            raise ValueError(f"{root}: no image matches {patterns[0]!r} (images.files) for "
                             f"concept id {c.concept_id!r}")
    return _sample(root, seed, concepts, images, scan.skipped, images_per_concept,
                   images_per_average)


def _sample(root: str | os.PathLike[str], seed: int, concepts: Sequence[Concept],
            images: Mapping[str, list[str]], left_out: list[Skipped],
            images_per_concept: int, images_per_average: int) -> Plan:
    """Draw the groups from each concept's images: the rows, what was left out (files,
    then concepts with too few images) and the concepts kept."""
    rows, too_few = sample_groups(images, [(c.concept_id, c.word) for c in concepts],
                                  images_per_concept, seed, source="folders",
                                  per_average=images_per_average)
    if not rows:
        raise ValueError(f"{root}: no concept has {images_per_concept * images_per_average} "
                         "images (images_per_concept x images_per_average)")
    kept = {r.wnid for r in rows}
    skipped = [*left_out, *(Skipped(w, "", reason) for w, reason in too_few)]
    return rows, skipped, [c for c in concepts if c.concept_id in kept]


def read_label_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """The 1 vs 2 test's label map: the network's class label -> concept id.

    A table (``.tsv`` or ``.csv``) with columns ``label`` (an ImageNet wnid for networks
    with ImageNet classes, else the class index) and ``concept_id``; several labels may
    map to one concept. One line for a missing column, an empty field or a label listed
    twice.
    """
    _, rows = read_table(path, ["label", "concept_id"], "label map (one_vs_two.label_map)")
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        label, cid = nfc(row["label"]), nfc(row["concept_id"])
        if not label or not cid:
            raise ValueError(f"{path}:{line}: empty label or concept_id")
        if label in out:
            raise ValueError(f"{path}:{line}: label {label!r} listed twice (first on line "
                             f"{lines[label]})")
        out[label], lines[label] = cid, line
    if not out:
        raise ValueError(f"{path}: label map has no rows")
    return out
