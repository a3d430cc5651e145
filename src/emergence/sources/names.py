"""Names as the pipeline compares them: Unicode NFC.

The same visible name can be stored as different code points: macOS (and zip archives made
there) writes file names decomposed (NFD, ``e`` + U+0301 for ``é``), most editors and tables
composed (NFC, U+00E9). Concept ids, folder names, words and vector-file tokens are all
compared in NFC (:func:`nfc`); paths on disk keep their own bytes. Two names that differ
only in normalisation are an error whose message shows both as code points
(:func:`same_but_normalisation`).
"""

from __future__ import annotations

import unicodedata

__all__ = ["code_points", "nfc", "same_but_normalisation"]


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
