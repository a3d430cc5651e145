"""The groups of a manifest: photos drawn with the seed, or emoji drawn in each style.

A *group* holds one image per concept (the paper: 5 groups of 166 images), or, with
``images_per_average`` n > 1, n images per concept whose activations the readers average.
Every photo source draws its groups with the one seeded sampler, :func:`sample_groups`;
the offline demo renders one group per emoji style, every concept of the curated table
drawn centred on white at ``render_size`` px (:func:`build_emoji_images`). The manifest
itself (:class:`~emergence.sources.common.ManifestRow`) is read and written in
:mod:`emergence.sources.common`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emergence.io import atomic_path
from emergence.sources.common import ManifestRow, write_manifest

__all__ = ["build_emoji_images", "sample_groups"]


def build_emoji_images(
    table: str | os.PathLike[str], styles: Sequence[str], render_size: int,
    image_dir: str | os.PathLike[str], manifest: str | os.PathLike[str],
) -> list[ManifestRow]:
    """Render every concept of the curated emoji table in every style; write the manifest."""
    from emergence.sources.images.emoji import load_concept_table, render_emoji

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


# ------------------------------------------------------------------------------------------
# Sampling photos (every photo source; listing them: emergence.sources.images.listing)


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
        concept id -> image paths (e.g. :func:`emergence.sources.images.imagenet.list_images`).
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
