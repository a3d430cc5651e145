"""Image sets: the manifest of (group, concept, image path) that every later step reads.

A *group* holds one image per concept (the paper: 5 groups of 166 images), or, with
``images_per_average`` n > 1, n images per concept whose activations the readers average
(:func:`emergence.formats.activations.load_group`). The manifest's ``wnid`` column is the
pipeline's concept id (an ImageNet wnid for the ImageNet and emoji sources, the folder
name for ``folders``). Here too: the seeded sampler every photo source uses
(:func:`sample_groups`), and the emoji rendering of the offline demo (each emoji style is
one group; every concept of the curated table drawn centred on white at ``render_size`` px).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emergence.io import atomic_path, read_tsv, write_tsv

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "build_emoji_images", "read_manifest",
           "sample_groups"]

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
# Sampling photos (every photo source; listing them: emergence.sources.listing)


def _check_count(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{what} must be {kind} integer, got {value!r}")


def sample_groups(images_by_wnid: Mapping[str, Sequence[str]],
                  concepts: Sequence[tuple[str, str]], n_per_concept: int, seed: int,
                  *, source: str = "imagenet", per_average: int = 1,
                  ) -> tuple[list[ManifestRow], list[tuple[str, str]]]:
    """Sample distinct images per concept and split them into ``n_per_concept`` groups.

    Concept ``k`` (its position in ``concepts``) draws ``n_per_concept * per_average``
    images from ``numpy.random.default_rng([seed, k])`` (``Generator.choice`` without
    replacement over its images sorted by file name); the draws are sorted, and draws
    ``j * per_average ... (j + 1) * per_average - 1`` go to group ``str(j + 1)`` (with
    ``per_average = 1``, the paper: the ``j``-th draw). Each concept's sample depends only
    on ``seed``, its position and its own images, so appending concepts leaves the others'
    samples unchanged.

    Parameters
    ----------
    images_by_wnid : mapping
        concept id -> image paths (e.g. :func:`emergence.sources.imagenet.list_images`).
    concepts : sequence of (wnid, concept)
        Candidate concepts (id, word), e.g. :func:`imagenet_classes`.
    n_per_concept : int
        Number of groups.
    seed : int
        Non-negative.
    source : str, keyword-only
        The manifest's ``source`` column (e.g. ``"imagenet-val"``).
    per_average : int, keyword-only
        Images per concept in each group (averaged by the readers); default 1.

    Returns
    -------
    rows : list of ManifestRow
        Group-major: all of group ``"1"`` in concept order (a concept's images together),
        then group ``"2"``, ...
    skipped : list of (wnid, reason)
        Concepts with fewer than ``n_per_concept * per_average`` images.
    """
    _check_count(n_per_concept, "images per concept", 1)
    _check_count(per_average, "images per average", 1)
    _check_count(seed, "seed", 0)
    wnids = [w for w, _ in concepts]
    if len(set(wnids)) != len(wnids):
        dup = next(w for w in wnids if wnids.count(w) > 1)
        raise ValueError(f"concept {dup} is listed twice")

    needed = n_per_concept * per_average
    chosen: list[tuple[str, str, list[str]]] = []
    skipped: list[tuple[str, str]] = []
    for position, (wnid, concept) in enumerate(concepts):
        images = sorted(images_by_wnid.get(wnid, ()), key=lambda s: (os.path.basename(s), s))
        if len(set(images)) != len(images):
            raise ValueError(f"concept {wnid}: an image is listed twice")
        if len(images) < needed:
            skipped.append((wnid, f"{len(images)} image(s), {needed} needed"))
            continue
        rng = np.random.default_rng([int(seed), position])
        picks = np.sort(rng.choice(len(images), size=needed, replace=False))
        chosen.append((wnid, concept, [images[int(i)] for i in picks]))

    rows = [ManifestRow(str(j + 1), wnid, concept, path, source)
            for j in range(n_per_concept) for wnid, concept, paths in chosen
            for path in paths[j * per_average:(j + 1) * per_average]]
    return rows, skipped
