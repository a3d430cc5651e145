"""Concept selection and the word-space similarity matrix ``W``.

The paper keeps the ImageNet concepts found in all of its word-vector models
(166 for its four). Here a concept is *kept* for a word model when

1. it has an image in every group (one image per concept per group), and
2. the word model covers it, and
3. with ``intersect_word_models`` (the paper's rule), every other configured word
   model covers it too, and
4. no earlier kept concept (in class order) with the same word gets the same vector:
   ImageNet names two classes 'crane' and two 'maillot', and a static vector file has
   one vector for both (they would tie every test), so the second is dropped; a text
   encoder on ``"word: gloss"`` encodes two different texts and keeps both senses.
   With ``intersect_word_models``, a sense that collapses in any model is dropped.

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
from emergence.sources.common import ManifestRow, candidates
from emergence.stats.similarity import similarity_matrix
from emergence.stats.two_vs_two import MIN_CONCEPTS  # fewest kept concepts: the 2 vs 2 minimum

__all__ = ["CONCEPT_COLUMNS", "COVERAGE_COLUMNS", "MIN_CONCEPTS", "check_enough_concepts",
           "collapsed_senses", "kept_rows", "select_concepts", "word_similarity_matrix"]

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
    ``wnid``, ``concept``, ``found`` ("true"/"false"), ``reason``, ``lemma``, ``token``,
    ``how``). Only ``word_model``'s own coverage is used unless ``intersect``.

    Senses of one word (ImageNet's two ``crane`` classes; ``crane1``, ``crane2`` in a
    concept table) are both kept when the word model encodes them differently (a text
    encoder on their glosses); when it encodes the same token or text (one vector for
    both, a tie in every test), the later one is dropped, its reason naming the kept
    sense and the token (:func:`collapsed_senses` lists them in one line). With
    ``intersect``, a sense that collapses in any word model is dropped for all.
    """
    present: dict[str, set[str]] = {}
    for r in manifest:
        present.setdefault(r.wnid, set()).add(r.group)
    by_model = {m: {r["wnid"]: r for r in recs} for m, recs in coverage.items()}
    models = [word_model, *(m for m in coverage if m != word_model)] if intersect \
        else [word_model]
    rows: list[dict[str, Any]] = []
    index = 0
    # (word model, word, what it encodes) -> the kept concept that has that vector
    encoded_by: dict[tuple[str, str, str], str] = {}
    for wnid, concept in candidates(manifest):
        own = by_model[word_model].get(wnid, {})
        reasons = [f"no image in group {g}" for g in groups if g not in present.get(wnid, set())]
        for m in models:
            rec = by_model[m].get(wnid, {})
            if rec.get("found") != "true":
                reasons.append(f"not in {m}: {rec.get('reason') or 'not looked up'}")
        keys = {m: (m, concept.lower(), by_model[m].get(wnid, {}).get("token", ""))
                for m in models}
        if not reasons:  # the first model (its own first) that collapses it onto a kept one
            reasons += [_same_vector(m, encoded_by[key], by_model[m][wnid])
                        for m, key in keys.items() if key in encoded_by][:1]
        kept = not reasons
        if kept:
            encoded_by.update({key: wnid for key in keys.values()})
        rows.append({
            "word_model": word_model, "index": index if kept else -1, "wnid": wnid,
            "concept": concept, "kept": kept, "reason": "; ".join(reasons),
            "lemma": own.get("lemma", ""), "token": own.get("token", ""), "how": own.get("how", ""),
        })
        index += kept
    return rows


def _same_vector(word_model: str, twin: str, record: Mapping[str, str]) -> str:
    what = "text" if record.get("how") == "encoded" else "token"
    return f"same vector as {twin} in {word_model} ({what} {record.get('token', '')!r})"


def collapsed_senses(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the senses :func:`select_concepts` dropped because a word model
    gives them the same vector as a kept sense of their word (``""`` when none)."""
    pairs = [f"{r['wnid']} = {part.removeprefix('same vector as ')}"
             for r in rows for part in str(r["reason"]).split("; ")
             if part.startswith("same vector as ")]
    if not pairs:
        return ""
    return (f"{len(pairs)} sense(s) dropped, one vector for two senses of a word: "
            + ", ".join(pairs))


def check_enough_concepts(rows: Sequence[Mapping[str, Any]], word_model: str,
                          reasons_file: str | os.PathLike[str]) -> None:
    """Stop with one line when fewer than :data:`MIN_CONCEPTS` of ``rows`` (from
    :func:`select_concepts`) are kept: how many of how many candidates, why the others
    were dropped (counted by reason), and the file with the reason per concept."""
    kept = sum(bool(r["kept"]) for r in rows)
    if kept >= MIN_CONCEPTS:
        return
    why = Counter(_reason_kind(part) for r in rows if not r["kept"]
                  for part in str(r["reason"]).split("; ") if part)
    dropped = ", ".join(f"{n} {reason}" for reason, n in why.most_common())
    raise ValueError(f"word model {word_model}: only {kept} of {len(rows)} candidate concepts "
                     f"kept, the 2 vs 2 test needs at least {MIN_CONCEPTS} "
                     f"(dropped: {dropped or 'none'}); the reason per concept is in "
                     f"{os.fspath(reasons_file)}")


def _reason_kind(reason: str) -> str:
    """A reason without its details, to count concepts by it."""
    if reason.startswith("same vector as "):
        return "one vector for two senses of a word"
    return reason.split(":")[0].strip()


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


def kept_rows(word_model: str, vector_wnids: Sequence[str], kept: Sequence[tuple[str, str]],
              what: str = "vector") -> list[int]:
    """The row of each kept concept in ``vector_wnids``, in kept order; one line naming the
    word model where a kept concept has no ``what`` (a vector, a matrix row) or fewer than
    :data:`MIN_CONCEPTS` are kept."""
    row_of = {w: i for i, w in enumerate(vector_wnids)}
    missing = [w for w, _ in kept if w not in row_of]
    if missing:
        raise ValueError(f"word model {word_model} has no {what} for kept concept(s) {missing}")
    if len(kept) < MIN_CONCEPTS:
        raise ValueError(f"word model {word_model}: only {len(kept)} concepts kept, the 2 vs 2 "
                         f"test needs at least {MIN_CONCEPTS}")
    return [row_of[w] for w, _ in kept]


def word_similarity_matrix(
    word_model: str, vector_wnids: Sequence[str], vectors: np.ndarray,
    kept: Sequence[tuple[str, str]],
) -> np.ndarray:
    """``W`` over the kept concepts (rows of ``vectors`` by ``vector_wnids``), in kept order.

    Fewer than :data:`MIN_CONCEPTS` kept concepts, or a kept concept whose vector has
    non-finite values or is constant, raise one line naming the word model (and the
    concepts). Stored by :func:`emergence.formats.word_matrix.write_word_matrix`.
    """
    x = vectors[kept_rows(word_model, vector_wnids, kept)]
    try:
        return similarity_matrix(x, labels=[f"{c!r} ({w})" for w, c in kept])
    except ValueError as exc:
        raise ValueError(f"word model {word_model}: the vector of {exc}; fix or remove it in "
                         "the word model's vectors") from exc
