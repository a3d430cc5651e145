"""What word models know of a concept beyond its word: fallback lemmas and a gloss.

For the ImageNet and emoji sources the concept id is an ImageNet wnid, and both come from
timm's ImageNet tables (:mod:`emergence.sources.common`). A folder source's concepts
(:mod:`emergence.sources.images.folders`, ``images/concepts.tsv``) bring their own: the gloss is
the concept table's ``definition``; the lemmas and, for an empty definition, the gloss
are those of the concept's optional ``wnid``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emergence.sources.common import Concept, glosses_for, lemmas_for

__all__ = ["IMAGENET", "Lexicon"]


@dataclass(frozen=True)
class Lexicon:
    """Lemmas and glosses by concept id: timm's ImageNet tables (``concepts=None``) or a
    folder source's concepts."""

    concepts: Mapping[str, Concept] | None = None

    def _concept(self, cid: str) -> Concept:
        assert self.concepts is not None
        if cid not in self.concepts:
            raise ValueError(f"concept {cid!r} is in the manifest but not in the concept "
                             "table images/concepts.tsv (rerun the images rule)")
        return self.concepts[cid]

    def lemmas(self, ids: Iterable[str]) -> dict[str, list[str]]:
        """Lemmas tried after the concept's word (ImageNet lemmas of its wnid; unknown
        wnids have none)."""
        ids = list(ids)
        if self.concepts is None:
            return lemmas_for(ids, missing_ok=True)
        wnids = {i: self._concept(i).wnid for i in ids}
        imagenet = lemmas_for({w for w in wnids.values() if w}, missing_ok=True)
        return {i: imagenet[w] if w else [] for i, w in wnids.items()}

    def glosses(self, ids: Iterable[str]) -> dict[str, str]:
        """The gloss of each concept; one line naming the concepts that have none."""
        ids = list(ids)
        if self.concepts is None:
            return glosses_for(ids)  # KeyError naming unknown wnids
        concepts = {i: self._concept(i) for i in ids}
        by_wnid = {c.wnid for c in concepts.values() if not c.definition and c.wnid}
        try:
            imagenet = glosses_for(sorted(by_wnid))
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]} (concept table: give these concepts a "
                             "definition)") from None
        lacking = [i for i, c in concepts.items() if not c.definition and not c.wnid]
        if lacking:
            shown = ", ".join(map(repr, lacking[:5])) + (" ..." if len(lacking) > 5 else "")
            raise ValueError(f"{len(lacking)} concept(s) without a definition or wnid in the "
                             f"concept table ({shown}): text modes with a gloss need one")
        return {i: c.definition or imagenet[c.wnid] for i, c in concepts.items()}


#: timm's ImageNet tables (the ImageNet and emoji sources)
IMAGENET = Lexicon()
