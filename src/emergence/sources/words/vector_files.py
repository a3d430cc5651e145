"""Word-vector files: sniffing the layout and loading them as gensim KeyedVectors.

:func:`load_keyed_vectors` reads the four on-disk layouts the paper's models come
in, optionally gzipped (``.gz``, decompressed on the fly by gensim):

``word2vec-binary``
    header ``"<count> <dim>"``, then ``word<space>`` + ``dim`` little-endian float32.
``word2vec-text`` / ``fasttext-vec``
    header ``"<count> <dim>"``, then one ``word v1 ... vdim`` line per word.
``glove``
    the same text lines without a header.
``auto``
    sniffs the first MiB: no two-integer header line means ``glove``; with a
    header, the file is ``word2vec-text`` if in its first three records every
    field after the word parses as a float, else ``word2vec-binary``.

An explicit format is checked against the same sniffing, so a text file read as
binary (which gensim would silently turn into garbage vectors) is an error.

Words and headers are decoded as ``utf-8-sig``: a UTF-8 byte order mark (as Windows
tools write) before the first line is dropped, in every format; CRLF line ends are
stripped with the other trailing whitespace.

A word stored in another Unicode normal form than NFC is also found by its NFC form
(:func:`nfc_aliases`).
"""

from __future__ import annotations

import codecs
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

__all__ = ["VectorFormat", "load_keyed_vectors", "nfc_aliases", "one_line"]

VectorFormat = Literal["auto", "word2vec-binary", "word2vec-text", "glove", "fasttext-vec"]

_SNIFF_BYTES = 1 << 20
#: gensim decodes each line (text) or word (binary) with this: a BOM is dropped
_ENCODING = "utf-8-sig"
_Layout = Literal["word2vec-binary", "word2vec-text", "glove"]


def one_line(text: object) -> str:
    """Collapse any whitespace run (newlines included) into one space."""
    return " ".join(str(text).split())


def _parse_header(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` if ``line`` is a word2vec header, else ``None``."""
    parts = line.split()
    if len(parts) != 2:
        return None
    try:
        count, dim = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return (count, dim) if count >= 0 and dim > 0 else None


def _is_text_record(line: bytes) -> bool:
    """Whether ``line`` is ``word f1 f2 ...`` with at least one float.

    Only the fields after the word must be text: a word in another encoding than
    UTF-8 does not make the file binary (gensim then needs ``unicode_errors``).
    """
    parts = line.decode("utf-8", errors="replace").rstrip().split(" ")
    if len(parts) < 2 or not parts[0]:
        return False
    try:
        for value in parts[1:]:
            float(value)
    except ValueError:
        return False
    return True


def _sniff_layout(path: Path) -> tuple[_Layout, tuple[int, int] | None]:
    """Guess the on-disk layout of a word-vector file from its first MiB."""
    from gensim import utils as gensim_utils

    with gensim_utils.open(str(path), "rb") as fin:
        head = fin.read(_SNIFF_BYTES)
    head = head.removeprefix(codecs.BOM_UTF8)
    if not head:
        raise ValueError(f"{path}: file is empty")
    first, _, rest = head.partition(b"\n")
    header = _parse_header(first)
    if header is None:
        if _is_text_record(first):
            return "glove", None
        raise ValueError(
            f"{path}: not a word-vector file (first line is neither a 'count dim' header "
            "nor a 'word float ...' record)"
        )
    pieces = rest.split(b"\n")
    if len(head) == _SNIFF_BYTES:
        pieces = pieces[:-1]  # the last piece may be cut short
    # Three records, so that a binary vector that happens to start with an ASCII
    # digit followed by a newline byte is not taken for text.
    records = [piece for piece in pieces if piece.strip()][:3]
    if all(_is_text_record(record) for record in records):
        return "word2vec-text", header
    return "word2vec-binary", header


def _checked_keyed_vectors() -> type[KeyedVectors]:
    """A KeyedVectors subclass whose ``add_vector`` rejects wrong-length vectors.

    gensim's text reader does not check the number of values per line, and numpy
    broadcasting silently spreads a one-value line over all ``dim`` slots.
    """
    from gensim.models import KeyedVectors

    class _Checked(KeyedVectors):
        def add_vector(self, key: str, vector: Any) -> int:
            if len(vector) != self.vector_size:
                raise ValueError(
                    f"vector of {key!r} has {len(vector)} values, expected {self.vector_size}"
                )
            return int(super().add_vector(key, vector))

    return _Checked


def load_keyed_vectors(
    path: str | os.PathLike[str],
    fmt: VectorFormat = "auto",
    *,
    limit: int | None = None,
    unicode_errors: str = "strict",
) -> KeyedVectors:
    """Load word vectors from a word2vec, GloVe or fastText file (optionally ``.gz``).

    Parameters
    ----------
    path
        Local file; a ``.gz`` suffix is decompressed transparently.
    fmt
        ``"word2vec-binary"``, ``"word2vec-text"``, ``"glove"`` (text, no header),
        ``"fasttext-vec"`` (``.vec`` text with header) or ``"auto"`` to sniff the
        layout (see the module docstring).
    limit
        Read only the first ``limit`` vectors (files are usually frequency sorted).
    unicode_errors
        Passed to gensim; ``"ignore"`` helps with files whose tokens were cut in
        the middle of a multibyte character.

    Returns
    -------
    gensim.models.KeyedVectors
        float32 vectors, in file order.

    Raises
    ------
    ValueError
        One line naming ``path``: missing file, unknown format, a file that does
        not look like ``fmt``, or one gensim cannot parse (truncated, wrong
        dimensions, bad encoding, corrupt gzip).
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if fmt not in get_args(VectorFormat):
        raise ValueError(
            f"{path}: unknown word-vector format {fmt!r}; "
            f"expected one of {', '.join(get_args(VectorFormat))}"
        )
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        layout, header = _sniff_layout(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read file: {one_line(exc)}") from exc

    if fmt == "auto":
        fmt = layout
    elif fmt == "glove" and header is not None:
        raise ValueError(
            f"{path}: format 'glove' expects no header, but the first line is a "
            f"word2vec header {header[0]} {header[1]}; use 'word2vec-text'"
        )
    elif fmt != "glove" and header is None:
        raise ValueError(f"{path}: format {fmt!r} needs a 'count dim' header line; use 'glove'")
    elif fmt == "word2vec-binary" and layout != "word2vec-binary":
        raise ValueError(f"{path}: format 'word2vec-binary' requested, but the records are text")
    elif fmt in ("word2vec-text", "fasttext-vec") and layout == "word2vec-binary":
        raise ValueError(f"{path}: format {fmt!r} requested, but the records are binary")

    try:
        kv = _checked_keyed_vectors().load_word2vec_format(
            str(path),
            binary=fmt == "word2vec-binary",
            no_header=fmt == "glove",
            limit=limit,
            encoding=_ENCODING,
            unicode_errors=unicode_errors,
        )
    except (ValueError, EOFError, OSError, IndexError, AssertionError, zlib.error) as exc:
        hint = " (try unicode_errors='replace')" if isinstance(exc, UnicodeDecodeError) else ""
        raise ValueError(
            f"{path}: cannot load as {fmt}: {type(exc).__name__}: {one_line(exc)}{hint}"
        ) from exc
    if len(kv) == 0:
        raise ValueError(f"{path}: contains no vectors")
    kv.__class__ = KeyedVectors  # plain KeyedVectors for callers, pickles and isinstance
    nfc_aliases(kv)
    return kv


def nfc_aliases(kv: KeyedVectors) -> int:
    """Make every word of ``kv`` found by its Unicode NFC form too (concept words are NFC,
    :mod:`emergence.sources.common`; a file may hold ``crème`` decomposed, as macOS tools
    write it). A word already in NFC, or whose NFC form is a word of the file itself, is
    left alone: an exact match wins. Returns the number of aliases added."""
    from emergence.sources.common import nfc

    added = 0
    for index, word in enumerate(kv.index_to_key):
        if not word.isascii():
            composed = nfc(word)
            if composed not in kv.key_to_index:
                kv.key_to_index[composed] = index
                added += 1
    return added
