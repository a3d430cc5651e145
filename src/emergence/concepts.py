"""Concept selection and the word-space similarity matrix ``W``.

The paper keeps the ImageNet concepts found in all of its word-vector models
(166 for its four). Here a concept is *kept* for a word model when

1. it has an image in every group (one image per concept per group), and
2. no earlier concept (in class order) has the same word (ImageNet names two classes
   'crane' and two 'maillot'; both would get one word vector and tie every test), and
3. the word model covers it, and
4. with ``intersect_word_models`` (the paper's rule), every other configured word
   model covers it too.

The kept concepts, in image-set order, index the rows and columns of ``W`` and of
every image-space matrix ``I``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emergence.io import read_tsv, write_tsv
from emergence.sources.images import ManifestRow, candidates
from emergence.stats.similarity import similarity_matrix
from emergence.stats.two_vs_two import MIN_CONCEPTS  # fewest kept concepts: the 2 vs 2 minimum

__all__ = ["CONCEPT_COLUMNS", "COVERAGE_COLUMNS", "MIN_CONCEPTS", "check_enough_concepts",
           "select_concepts", "word_similarity_matrix"]

COVERAGE_COLUMNS = ["word_model", "wnid", "concept", "found", "lemma", "token", "how", "reason"]
CONCEPT_COLUMNS = ["word_model", "index", "wnid", "concept", "kept", "reason", "lemma", "token",
                   "how"]


def select_concepts(
    manifest: Sequence[ManifestRow],
    groups: Sequence[str],
    word_model: str,
    coverage: Mapping[str, Sequence[Mapping[str, str]]],
    intersect: bool,
) -> list[dict[str, Any]]:
    """One row per candidate concept: kept or not, why, and the token that matched.

    ``coverage`` maps each word model's name to its coverage records (dicts with
    ``wnid``, ``found`` ("true"/"false"), ``reason``, ``lemma``, ``token``, ``how``).
    Only ``word_model``'s own coverage is used unless ``intersect``.
    """
    present: dict[str, set[str]] = {}
    for r in manifest:
        present.setdefault(r.wnid, set()).add(r.group)
    by_model = {m: {r["wnid"]: r for r in recs} for m, recs in coverage.items()}
    others = [m for m in coverage if m != word_model] if intersect else []
    rows: list[dict[str, Any]] = []
    index = 0
    first_with_word: dict[str, str] = {}
    for wnid, concept in candidates(manifest):
        own = by_model[word_model].get(wnid, {})
        reasons = [f"no image in group {g}" for g in groups if g not in present.get(wnid, set())]
        twin = first_with_word.setdefault(concept.lower(), wnid)
        if twin != wnid:  # ImageNet has two 'crane's and two 'maillot's: one word, one vector
            reasons.append(f"same word as {twin}")
        if own.get("found") != "true":
            reasons.append(f"not in {word_model}: {own.get('reason') or 'not looked up'}")
        for m in others:
            rec = by_model[m].get(wnid, {})
            if rec.get("found") != "true":
                reasons.append(f"not in {m}: {rec.get('reason') or 'not looked up'}")
        kept = not reasons
        rows.append({
            "word_model": word_model, "index": index if kept else -1, "wnid": wnid,
            "concept": concept, "kept": kept, "reason": "; ".join(reasons),
            "lemma": own.get("lemma", ""), "token": own.get("token", ""), "how": own.get("how", ""),
        })
        index += kept
    return rows


def check_enough_concepts(rows: Sequence[Mapping[str, Any]], word_model: str,
                          reasons_file: str | os.PathLike[str]) -> None:
    """Stop with one line when fewer than :data:`MIN_CONCEPTS` of ``rows`` (from
    :func:`select_concepts`) are kept: how many of how many candidates, why the others
    were dropped (counted by reason), and the file with the reason per concept."""
    kept = sum(bool(r["kept"]) for r in rows)
    if kept >= MIN_CONCEPTS:
        return
    why = Counter(part.split(":")[0].strip() for r in rows if not r["kept"]
                  for part in str(r["reason"]).split("; ") if part)
    dropped = ", ".join(f"{n} {reason}" for reason, n in why.most_common())
    raise ValueError(f"word model {word_model}: only {kept} of {len(rows)} candidate concepts "
                     f"kept, the 2 vs 2 test needs at least {MIN_CONCEPTS} "
                     f"(dropped: {dropped or 'none'}); the reason per concept is in "
                     f"{os.fspath(reasons_file)}")


def write_concepts(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    write_tsv(path, rows, CONCEPT_COLUMNS)


def kept_concepts(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(wnid, concept) of the kept concepts, in matrix order."""
    rows = read_tsv(path, CONCEPT_COLUMNS)
    return [(r["wnid"], r["concept"]) for r in rows if r["kept"] == "true"]


def word_gram_matrix(vector_wnids: Sequence[str], vectors: np.ndarray,
                     kept: Sequence[tuple[str, str]]) -> np.ndarray:
    """The word side of CKA: ``X_c X_cᵀ``, the Gram matrix of the kept concepts' vectors
    centred over the kept concepts (:func:`emergence.stats.cka.linear_gram`), in kept order."""
    from emergence.stats.cka import linear_gram

    row_of = {w: i for i, w in enumerate(vector_wnids)}
    return linear_gram(np.asarray(vectors[[row_of[w] for w, _ in kept]], dtype=np.float64))


def word_similarity_matrix(
    word_model: str, vector_wnids: Sequence[str], vectors: np.ndarray,
    kept: Sequence[tuple[str, str]],
) -> np.ndarray:
    """``W`` over the kept concepts (rows of ``vectors`` by ``vector_wnids``), in kept order.

    Fewer than :data:`MIN_CONCEPTS` kept concepts, or a kept concept whose vector has
    non-finite values or is constant, raise one line naming the word model (and the
    concepts). Stored by :func:`emergence.formats.word_matrix.write_word_matrix`.
    """
    row_of = {w: i for i, w in enumerate(vector_wnids)}
    missing = [w for w, _ in kept if w not in row_of]
    if missing:
        raise ValueError(f"word model {word_model} has no vector for kept concept(s) {missing}")
    if len(kept) < MIN_CONCEPTS:
        raise ValueError(f"word model {word_model}: only {len(kept)} concepts kept, the 2 vs 2 "
                         f"test needs at least {MIN_CONCEPTS}")
    x = vectors[[row_of[w] for w, _ in kept]]
    try:
        return similarity_matrix(x, labels=[f"{c!r} ({w})" for w, c in kept])
    except ValueError as exc:
        raise ValueError(f"word model {word_model}: the vector of {exc}; fix or remove it in "
                         "the word model's vectors") from exc
