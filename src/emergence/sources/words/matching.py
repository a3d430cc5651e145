"""Concept matching: the first lemma of a concept that has a vector in a vocabulary.

The paper (Dharmaretnam & Fyshe 2018, section 2.3) keeps the ImageNet concepts
"for which a match was found" in every word-vector model. This module makes that
match explicit and reproducible.

:func:`match_concept` takes a list of lemmas (for a pipeline concept: the concept
word followed by the ImageNet lemmas of its WordNet synset, duplicates removed)
and returns the first hit of this ordered search:

1. Lemmas are tried in their listed order; **the first lemma that matches wins**,
   whatever rule matched it (a mean for lemma 1 beats an exact token for lemma 2).
2. Within a lemma, whitespace-separated words are joined with ``"_"``
   (GoogleNews style: ``"ice cream"`` -> ``ice_cream``). A single-word lemma is
   its own token.
3. Hyphens: the token is tried as written, then with each ``"-"`` replaced by
   ``"_"`` (``T-shirt`` -> ``T_shirt``).
4. Case: all case-preserving variants of step 3 are tried first, then (when
   ``lowercase_fallback``) their lowercased forms, skipping forms equal to one
   already tried.
5. Only when ``multiword="phrase+mean"``, a multi-word lemma with no phrase token
   falls back to the mean of its words' vectors; every word must be found (each
   word by steps 3-4), otherwise the lemma does not match.

``multiword="none"`` skips multi-word lemmas altogether (hyphenated single words
are still tried). :class:`Match.how` records the rule: ``"exact"`` (the lemma
itself), ``"lowercase"`` (the lemma lowercased), ``"phrase"`` (a token built by
joining parts with ``"_"``, possibly lowercased; compare ``token`` and
``lemma``) or ``"mean"`` (``token`` lists the averaged tokens joined by ``"+"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

__all__ = ["Match", "MatchHow", "MultiwordMode", "match_concept"]

MultiwordMode = Literal["phrase", "phrase+mean", "none"]
MatchHow = Literal["exact", "lowercase", "phrase", "mean"]


@dataclass(frozen=True)
class Match:
    """How one concept was found in a vocabulary.

    Attributes
    ----------
    lemma
        The lemma (from the list given to :func:`match_concept`) that matched.
    token
        The vocabulary token used; for ``how="mean"`` the averaged tokens joined
        by ``"+"``.
    how
        ``"exact"``, ``"lowercase"``, ``"phrase"`` or ``"mean"``.
    vector
        The vector as a read-only float64 array (not part of equality).
    """

    lemma: str
    token: str
    how: MatchHow
    vector: NDArray[np.float64] = field(compare=False, repr=False)


def _token_candidates(lemma: str, lowercase_fallback: bool) -> Iterator[tuple[str, MatchHow]]:
    """Ordered ``(token, how)`` candidates for one lemma (rules 2-4)."""
    words = lemma.split()
    if not words:
        return
    base = "_".join(words)
    variants = [base]
    if "-" in base:
        variants.append(base.replace("-", "_"))
    tried: set[str] = set()
    cased: list[tuple[str, MatchHow]] = []
    for variant in variants:
        joined = len(words) > 1 or variant != base
        cased.append((variant, "phrase" if joined else "exact"))
    lowered: list[tuple[str, MatchHow]] = []
    if lowercase_fallback:
        for token, how in cased:
            lowered.append((token.lower(), "phrase" if how == "phrase" else "lowercase"))
    for token, how in cased + lowered:
        if token not in tried:
            tried.add(token)
            yield token, how


def match_concept(
    kv: KeyedVectors,
    lemmas: Sequence[str],
    multiword: MultiwordMode = "phrase",
    lowercase_fallback: bool = True,
) -> Match | None:
    """Find the first lemma of ``lemmas`` that has a vector in ``kv``.

    Parameters
    ----------
    kv
        The vocabulary.
    lemmas
        Candidate names, most preferred first.
    multiword
        ``"phrase"``: multi-word lemmas only as ``"_"``-joined tokens;
        ``"phrase+mean"``: then as the mean of their words' vectors; ``"none"``:
        skip multi-word lemmas.
    lowercase_fallback
        Also try lowercased tokens.

    Returns
    -------
    Match or None
        The first match under the rules of the module docstring, or ``None``.
    """
    if multiword not in get_args(MultiwordMode):
        raise ValueError(f"unknown multiword mode {multiword!r}")
    vocab = kv.key_to_index

    def vector_of(token: str) -> NDArray[np.float64]:
        vec = np.array(kv.vectors[vocab[token]], dtype=np.float64)
        vec.setflags(write=False)
        return vec

    for lemma in lemmas:
        words = lemma.split()
        if not words or (len(words) > 1 and multiword == "none"):
            continue
        for token, how in _token_candidates(lemma, lowercase_fallback):
            if token in vocab:
                return Match(lemma=lemma, token=token, how=how, vector=vector_of(token))
        if len(words) > 1 and multiword == "phrase+mean":
            tokens = []
            for word in words:
                hit = next(
                    (t for t, _ in _token_candidates(word, lowercase_fallback) if t in vocab),
                    None,
                )
                if hit is None:
                    break
                tokens.append(hit)
            else:
                mean = np.mean([kv.vectors[vocab[t]] for t in tokens], axis=0, dtype=np.float64)
                mean.setflags(write=False)
                return Match(lemma=lemma, token="+".join(tokens), how="mean", vector=mean)
    return None
