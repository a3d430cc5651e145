"""Word models: the typed specs of the config's ``word_models`` and the concept vectors.

A word model turns candidate concepts ``(wnid, concept word)`` into vectors and a
coverage record per concept (:func:`embed_concepts`). Three kinds, one spec class each:

``keyedvectors`` (:class:`KeyedVectorsSpec`)
    a static vector file (:mod:`emergence.sources.words.vector_files`), each concept matched
    by its word and its ImageNet lemmas (:mod:`emergence.sources.words.matching`);
``gensim-data`` (:class:`GensimDataSpec`)
    the same, for a file downloaded once by gensim (:mod:`emergence.sources.words.gensim_data`);
    :meth:`GensimDataSpec.resolve` turns it into a ``keyedvectors`` spec;
``sentence-transformer`` (:class:`SentenceTransformerSpec`)
    a text encoder (a folder, a package shipping one, or a Hugging Face hub id) applied
    to the concept word, its WordNet gloss or ``"word: gloss"``
    (:mod:`emergence.sources.words.text_encoders`), on the CPU or CUDA; it covers every concept.

Each spec is built once from the config (:meth:`WordModelSpec.from_config`), handed to
the rules as :meth:`~WordModelSpec.params` (the config entry without ``label``, keys in
the order configured) and rebuilt in the job (:meth:`WordModelSpec.from_params`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from emergence.sources.words.lexicon import IMAGENET, Lexicon
from emergence.sources.words.matching import MultiwordMode, match_concept
from emergence.sources.words.vector_files import VectorFormat, load_keyed_vectors

__all__ = [
    "CoverageResult",
    "GensimDataSpec",
    "KeyedVectorsSpec",
    "SentenceTransformerSpec",
    "TextMode",
    "WordModelSpec",
    "embed_concepts",
]

Concepts = Sequence[tuple[str, str]]  # (wnid, concept word) pairs
TextMode = Literal["word", "gloss", "word: gloss"]
Device = Literal["auto", "cpu", "cuda"]


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
    attrs
        What else identifies the vectors, stored as attributes of ``vectors.h5`` (a
        language model's revision and weights hash, its layer and pooling; a precomputed
        file's SHA-256).
    """

    vectors: NDArray[np.float64]
    wnids: list[str]
    records: list[dict[str, Any]]
    attrs: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- specs


# type value -> spec class, filled by WordModelSpec.__init_subclass__
_TYPES: dict[str, type[WordModelSpec]] = {}


@dataclass(frozen=True, kw_only=True)
class WordModelSpec:
    """One entry of the config's ``word_models``; see the module docstring.

    ``name`` (the config key) and ``label`` (the name in figures) do not change the
    vectors: they are not part of :meth:`params` nor of equality.
    """

    type: ClassVar[str]
    # params key -> field, in the canonical order
    _KEYS: ClassVar[dict[str, str]]

    name: str = field(default="", compare=False)
    label: str | None = field(default=None, compare=False)
    # the params keys in the order configured ("type" included); () = canonical order
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:  # a concrete type registers itself (kinds())
            _TYPES[cls.type] = cls

    @staticmethod
    def kinds() -> dict[str, type[WordModelSpec]]:
        """``type`` value -> spec class: every subclass with its own ``type`` (the package's
        ``__init__`` imports the modules that define them, so all are there)."""
        return dict(_TYPES)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WordModelSpec:
        """The spec of ``params["type"]``; unknown types, keys and values raise ``ValueError``.

        ``{"type": "keyedvectors", "path": ..., "format": "auto", "multiword": "phrase",
        "lowercase_fallback": true}``, ``{"type": "gensim-data", "name": ...}`` or
        ``{"type": "sentence-transformer", "model": ..., "text": "word", "batch_size": 32}``.
        """
        kinds = WordModelSpec.kinds()
        kind = params.get("type")
        if kind not in kinds:
            raise ValueError(f"word model type must be one of {sorted(kinds)}, got {kind!r}")
        spec_cls = kinds[kind]
        unknown = sorted(set(params) - {"type", *spec_cls._KEYS})
        if unknown:
            raise ValueError(f"unknown key(s) for a {kind} word model: {', '.join(unknown)}")
        values = {spec_cls._KEYS[k]: v for k, v in params.items() if k != "type"}
        return spec_cls(keys=tuple(params), **values)

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> WordModelSpec:
        """The spec of ``word_models.<name>`` (schema-validated); one-line ``ConfigError``."""
        from emergence.errors import ConfigError

        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"config key 'word_models.{name}': names may use letters, "
                              "digits, '-' and '_' only (they become file names)")
        try:
            spec = cls.from_params({k: v for k, v in entry.items() if k != "label"})
        except ValueError as exc:
            raise ConfigError(f"config key 'word_models.{name}': {exc}") from None
        return dataclasses.replace(spec, name=name, label=entry.get("label"))

    def params(self) -> dict[str, Any]:
        """The rule's ``params``: the config entry without ``label``, in configured order."""
        keys = self.keys or ("type", *(k for k, f in self._KEYS.items()
                                       if getattr(self, f) is not None))
        return {k: self.type if k == "type" else getattr(self, self._KEYS[k]) for k in keys}

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        """Stop with one ``ConfigError`` line when an input file of the model is missing."""

    def input_files(self) -> dict[str, str]:
        """The model's own data files, inputs of its ``word_vectors`` job (a newer file
        reruns it): none for a model that is downloaded or found by name."""
        return {}

    def check_study(self, names: Sequence[str]) -> None:
        """Stop with one ``ConfigError`` line where the study asks what this word model
        cannot give: a measure of ``names`` (``measures.names``) it cannot be scored by (a
        similarity matrix has no features for CKA), or more than one language layer."""

    def word_matrices(self, word_model: str, vector_wnids: Sequence[str],
                      vectors: NDArray[np.float64], kept: Sequence[tuple[str, str]],
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``W`` and the centred Gram matrix over the ``kept`` concepts from the vectors
        (rows: ``vector_wnids``): :func:`~emergence.concepts.word_similarity_matrix` and
        :func:`~emergence.concepts.word_gram_matrix`."""
        from emergence.concepts import word_gram_matrix, word_similarity_matrix

        return (word_similarity_matrix(word_model, vector_wnids, vectors, kept),
                word_gram_matrix(vector_wnids, vectors, kept))

    def resolve(self) -> WordModelSpec:
        """The spec that :meth:`embed` runs (downloads what must be downloaded)."""
        return self

    def uses_cuda(self, *, available: bool | None = None) -> bool:
        """Whether the job runs on CUDA (its rule asks for ``gpu=1``): see
        :func:`emergence.device.uses_cuda`. Static vectors run on the CPU."""
        from emergence.device import uses_cuda

        return uses_cuda(getattr(self, "device", "cpu"), available=available)

    def job_device(self, gpus: int | None) -> str:
        """The device the job embeds on, given its ``gpu`` resource (see
        :func:`emergence.device.job_device`)."""
        from emergence.device import job_device

        return job_device(getattr(self, "device", "cpu"), gpus)

    @property
    def source(self) -> str:
        """What messages name: the vector file or the model."""
        return self.type

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        """Embed ``(wnid, concept_word)`` pairs on ``device`` (:meth:`job_device`); see
        :func:`embed_concepts`."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class _VocabularySpec(WordModelSpec):
    """A vocabulary of static vectors, searched by :func:`match_concept`."""

    multiword: MultiwordMode = "phrase"
    lowercase_fallback: bool = True

    def __post_init__(self) -> None:
        if self.multiword not in get_args(MultiwordMode):
            raise ValueError(f"unknown multiword mode {self.multiword!r}")


@dataclass(frozen=True, kw_only=True)
class KeyedVectorsSpec(_VocabularySpec):
    """Static word vectors in a file, matched with :func:`match_concept`.

    ``download`` says where to get the file (shown when it is missing).
    """

    type: ClassVar[str] = "keyedvectors"
    _KEYS: ClassVar[dict[str, str]] = {
        "path": "path", "download": "download", "format": "format",
        "multiword": "multiword", "lowercase_fallback": "lowercase_fallback"}
    path: str
    download: str | None = None
    format: VectorFormat = "auto"

    def __post_init__(self) -> None:
        if self.format not in get_args(VectorFormat):
            raise ValueError(f"unknown word-vector format {self.format!r}")
        super().__post_init__()

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        from emergence.errors import ConfigError

        if not (Path(base) / self.path).exists():
            hint = self.download or "a word2vec/GloVe/fastText vector file"
            raise ConfigError(f"config key 'word_models.{self.name}.path': {self.path} does "
                              f"not exist; download {hint} and set the path")

    @property
    def source(self) -> str:
        return self.path

    def input_files(self) -> dict[str, str]:
        return {"vector_file": self.path}

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        kv = load_keyed_vectors(self.path, self.format)
        imagenet = lexicon.lemmas(w for w, _ in concepts)
        rows: list[NDArray[np.float64]] = []
        wnids: list[str] = []
        records: list[dict[str, Any]] = []
        for wnid, concept in concepts:
            lemmas = list(dict.fromkeys([concept, *imagenet[wnid]]))
            match = match_concept(kv, lemmas, self.multiword, self.lowercase_fallback)
            if match is None:
                reason = f"no lemma of {concept!r} in vocabulary"
                records.append(_record(wnid, concept, reason=reason))
                continue
            rows.append(match.vector)
            wnids.append(wnid)
            records.append(_record(wnid, concept, match.lemma, match.token, match.how))
        return _coverage(rows, kv.vector_size, wnids, records)


@dataclass(frozen=True, kw_only=True)
class GensimDataSpec(_VocabularySpec):
    """A gensim-data vector file (``dataset``: the config's ``name``), fetched once.

    ``base_url`` is a mirror of the releases (tests use a local server).
    """

    type: ClassVar[str] = "gensim-data"
    _KEYS: ClassVar[dict[str, str]] = {
        "name": "dataset", "base_url": "base_url",
        "multiword": "multiword", "lowercase_fallback": "lowercase_fallback"}
    dataset: str
    base_url: str | None = None

    @property
    def source(self) -> str:
        return self.dataset

    def resolve(self) -> KeyedVectorsSpec:
        """Download (once, see :func:`~emergence.sources.words.gensim_data.gensim_data_path`) and
        return the ``keyedvectors`` spec of the file (format sniffed)."""
        from emergence.sources.words.gensim_data import gensim_data_path

        path = gensim_data_path(self.dataset, self.base_url)
        return KeyedVectorsSpec(name=self.name, label=self.label, path=str(path),
                                multiword=self.multiword,
                                lowercase_fallback=self.lowercase_fallback)

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        return self.resolve().embed(concepts, lexicon, device)


@dataclass(frozen=True, kw_only=True)
class SentenceTransformerSpec(WordModelSpec):
    """A sentence-transformers encoder applied to the concept word and/or gloss.

    ``model``: a model folder, an importable package that ships one, or a Hugging Face hub
    id ``org/name``
    (:func:`~emergence.sources.words.text_encoders.resolve_sentence_transformer_dir`).
    ``device``: ``cpu`` (default), ``cuda``, or ``auto`` (CUDA where the workflow sees one).
    """

    type: ClassVar[str] = "sentence-transformer"
    _KEYS: ClassVar[dict[str, str]] = {"model": "model", "text": "text",
                                       "batch_size": "batch_size", "device": "device"}
    model: str
    text: TextMode = "word"
    batch_size: int = 32
    device: Device = "cpu"

    def __post_init__(self) -> None:
        if self.text not in get_args(TextMode):
            raise ValueError(f"unknown text mode {self.text!r}; expected {get_args(TextMode)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.device not in get_args(Device):
            raise ValueError(f"unknown device {self.device!r}; expected {get_args(Device)}")

    @property
    def source(self) -> str:
        return self.model

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        from emergence.sources.words.text_encoders import check_model

        check_model(self.model, base, key=f"word_models.{self.name}.model")

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        from emergence.sources.words.text_encoders import encode_texts

        glosses = lexicon.glosses(w for w, _ in concepts) if self.text != "word" else {}
        texts = [
            {"word": c, "gloss": glosses.get(w, ""), "word: gloss": f"{c}: {glosses.get(w, '')}"}[
                self.text
            ]
            for w, c in concepts
        ]
        vectors = encode_texts(self.model, texts, self.batch_size, device)
        records = [
            _record(w, c, c, t, "encoded") for (w, c), t in zip(concepts, texts, strict=True)
        ]
        return _coverage(list(vectors), vectors.shape[1], [w for w, _ in concepts], records)


# ------------------------------------------------------------------------- embedding


def embed_concepts(spec: WordModelSpec, concepts: Concepts, lexicon: Lexicon = IMAGENET,
                   device: str = "cpu") -> CoverageResult:
    """Embed concepts with a word model and report which ones it covers.

    Parameters
    ----------
    spec
        The word model (a ``gensim-data`` model is downloaded first, see
        :meth:`WordModelSpec.resolve`).
    concepts
        ``(wnid, concept_word)`` pairs. A ``keyedvectors`` model matches the lemma
        list ``[concept_word, *ImageNet lemmas of wnid]`` (duplicates dropped, order
        kept; unknown wnids use the concept word alone). A ``sentence-transformer``
        covers every concept; its ``token`` is the text embedded and ``how`` is
        ``"encoded"``; gloss modes need a gloss for every concept.
    lexicon
        Where the ImageNet lemmas and glosses above come from: timm's ImageNet tables
        (the default; concept ids are wnids) or a folder source's concept table
        (:class:`~emergence.sources.words.lexicon.Lexicon`).
    device
        Where a text encoder runs (``"cpu"`` or ``"cuda:<i>"``, see
        :meth:`WordModelSpec.job_device`); static vectors ignore it.

    Returns
    -------
    CoverageResult

    Raises
    ------
    ValueError
        One line naming the vector file (or model) and the concepts, if a found
        concept's vector has non-finite values (nan, inf) or is constant.
    """
    spec = spec.resolve()
    result = spec.embed(list(concepts), lexicon, device)
    _check_vectors(result, spec.source)
    return result


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
