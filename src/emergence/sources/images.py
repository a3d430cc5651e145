"""Image sets: the manifest of (group, concept, image path) that every later step reads.

A *group* holds at most one image per concept (the paper: 5 groups of 166 images).
Sources:

* ``emoji`` (the offline demo): each emoji style is one group; every concept of the
  curated table is drawn centred on white at ``render_size`` px.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emergence.io import atomic_path, read_tsv, write_tsv

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "build_emoji_images", "read_manifest"]

MANIFEST_COLUMNS = ["group", "wnid", "concept", "path", "source"]


@dataclass(frozen=True)
class ManifestRow:
    group: str
    wnid: str
    concept: str
    path: str
    source: str


def build_emoji_images(
    table: str | os.PathLike[str], styles: Sequence[str], render_size: int,
    image_dir: str | os.PathLike[str], manifest: str | os.PathLike[str],
) -> list[ManifestRow]:
    """Render every concept of the curated emoji table in every style; write the manifest."""
    from emergence.sources.emoji import load_concept_table, render_emoji

    concepts = load_concept_table(table)
    rows: list[ManifestRow] = []
    for style in styles:
        out = Path(image_dir) / style
        out.mkdir(parents=True, exist_ok=True)
        for c in concepts:
            path = out / f"{c.wnid}.png"
            with atomic_path(path) as tmp:
                render_emoji(c.emoji, style, render_size).save(tmp, format="PNG")  # type: ignore[arg-type]
            rows.append(ManifestRow(style, c.wnid, c.concept, str(path), f"{style}:{c.emoji}"))
    write_manifest(manifest, rows)
    return rows


def write_manifest(path: str | os.PathLike[str], rows: Sequence[ManifestRow]) -> None:
    write_tsv(path, [r.__dict__ for r in rows], MANIFEST_COLUMNS)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read and check a manifest: one image per concept per group."""
    rows = [ManifestRow(**r) for r in read_tsv(path, MANIFEST_COLUMNS)]  # type: ignore[arg-type]
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if (r.group, r.wnid) in seen:
            raise ValueError(f"{path}: concept {r.wnid} appears twice in group {r.group}")
        seen.add((r.group, r.wnid))
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

