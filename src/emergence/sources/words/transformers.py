"""``transformers`` word models: a language model's hidden states, layer by layer.

Each concept is written into a prompt ``template`` (``"{word}"``, ``"a photo of a {word}"``,
``"{word}: {gloss}"``; the gloss is the
concept's WordNet gloss, :mod:`~emergence.sources.words.lexicon`)
and run through any model :class:`transformers.AutoModel` loads (the encoder of an
encoder-decoder model). Its hidden states are the word model's **layers**: ``embeddings``
(hidden state 0, the token embeddings) and ``layer1`` ... ``layerN`` (the output of each
block, as ``output_hidden_states`` returns them). A concept's vector in a layer pools the
hidden states of the concept's **own tokens** (not the template's): every token whose
characters overlap the word's characters in the filled template (the fast tokenizer's offset
mapping; special tokens never count):

``mean``
    the mean of the word's tokens (float64, token by token in order);
``last``
    the word's last token (for a causal model: the one that has read the whole word);
``cls``
    the sequence's first token when it is the tokenizer's ``[CLS]`` (not the word's own
    tokens: BERT's sequence summary); a tokenizer that adds none is refused.

The model is found as the sentence-transformer path finds it
(:func:`~emergence.sources.words.text_encoders.resolve_sentence_transformer_dir`: a folder, an
installed package that ships one, or a Hugging Face hub id through the HF cache, offline
with ``HF_HUB_OFFLINE=1``), loaded in float32 in eval mode (no dropout).

**Bit-identical for any batch size.** The last bits of a text's hidden states depend on the
length it is padded to (the attention's sums run over the padded keys; MiniLM: ~5e-6 between
paddings), and on the CPU not on the other texts of its batch when that length is a multiple
of 8 (with unpadded lengths such as 11, a batch of one text gave other bits than a batch of
several). So each text is padded (right, masked) to its own token count rounded up to a
multiple of :data:`PAD_MULTIPLE`, and texts of the same padded length run together,
``batch_size`` at a time: a concept's vector depends on its own text only, and is the same
bits for every ``batch_size`` and torch thread count (tests/test_sources_words_transformers.py, on
an AVX-512 CPU with torch 2.14). CUDA kernels may choose another algorithm per batch shape.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from emergence.sources.words.lexicon import IMAGENET, Lexicon
from emergence.sources.words.spec import (
    Concepts,
    CoverageResult,
    Device,
    WordModelSpec,
    _record,
)

__all__ = ["LanguageModel", "LayeredEmbedding", "Pooling", "TransformersSpec", "check_template",
           "fill_template", "hidden_state_names", "layer_vectors",
           "load_language_model", "pool", "select_hidden_states", "word_tokens"]

Pooling = Literal["mean", "last", "cls"]
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELDS = ("word", "gloss")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Texts are padded to a multiple of this many tokens (module doc).
PAD_MULTIPLE = 8


# ------------------------------------------------------------------------------ templates


def check_template(template: str) -> None:
    """``ValueError`` (one line) unless ``template`` holds ``{word}`` exactly once, at most
    ``{gloss}`` besides it, and no other brace."""
    names = _PLACEHOLDER.findall(template)
    unknown = sorted({n for n in names if n not in _FIELDS})
    if unknown:
        raise ValueError(f"template {template!r}: unknown placeholder(s) "
                         f"{', '.join('{' + n + '}' for n in unknown)}; use {{word}} and {{gloss}}")
    if names.count("word") != 1:
        raise ValueError(f"template {template!r}: needs {{word}} exactly once (the concept's "
                         "own tokens are pooled)")
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError(f"template {template!r}: a brace that is not part of {{word}} or "
                         "{gloss}")


def fill_template(template: str, word: str, gloss: str = "") -> tuple[str, tuple[int, int]]:
    """The text of ``template`` with ``word`` and ``gloss`` in, and the character span
    ``(start, end)`` of the word in it."""
    check_template(template)
    pieces = _PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    text, span = "", (0, 0)
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            text += piece
        elif piece == "word":
            span = (len(text), len(text) + len(word))
            text += word
        else:
            text += gloss
    return text, span


def word_tokens(offsets: Sequence[tuple[int, int]], special: Sequence[int | bool],
                span: tuple[int, int]) -> list[int]:
    """Positions of the tokens whose characters ``[a, b)`` overlap the word's ``span``
    (special tokens and empty spans left out), in order."""
    start, end = span
    return [i for i, ((a, b), s) in enumerate(zip(offsets, special, strict=True))
            if not s and b > a and a < end and b > start]


def pool(states: NDArray[np.floating], tokens: Sequence[int], pooling: Pooling,
         ) -> NDArray[np.float64]:
    """One concept's vector from its hidden states ``(tokens, d)`` of one layer: the mean
    of ``tokens`` (rows added in order, float64), its last token, or row 0 (``cls``)."""
    if pooling == "cls":
        return np.asarray(states[0], dtype=np.float64)
    if pooling == "last":
        return np.asarray(states[tokens[-1]], dtype=np.float64)
    return np.mean(np.asarray(states[list(tokens)], dtype=np.float64), axis=0)


# --------------------------------------------------------------------------------- layers


def hidden_state_names(n_layers: int) -> list[str]:
    """Names of a model's ``n_layers + 1`` hidden states: ``embeddings``, ``layer1`` ..."""
    return ["embeddings", *(f"layer{i}" for i in range(1, n_layers + 1))]


def select_hidden_states(layers: str | Sequence[int], n_layers: int) -> list[int]:
    """The hidden-state indices ``layers`` selects: ``all``, ``embeddings`` (0), or a list
    of indices (0 = embeddings, i = block i; negative from the end, -1 = the last block),
    in model order, each once; one line for an index the model does not have."""
    if layers == "all":
        return list(range(n_layers + 1))
    if layers == "embeddings":
        return [0]
    if isinstance(layers, str):
        raise ValueError(f"layers {layers!r}: use all, embeddings or a list of indices")
    chosen = []
    for i in layers:
        if not -(n_layers + 1) <= i <= n_layers:
            raise ValueError(f"layer index {i}: the model has hidden states 0 (embeddings) to "
                             f"{n_layers} (negative: from the end)")
        chosen.append(i % (n_layers + 1))
    return sorted(set(chosen))


# ---------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class LanguageModel:
    """A loaded language model, its tokenizer and what identifies its weights."""

    module: Any  # the transformers model (its encoder for an encoder-decoder model)
    tokenizer: Any
    path: Path
    n_layers: int
    revision: str  # the hub commit of a cached snapshot, "" for a folder or package
    weights_sha256: str
    max_tokens: int | None


def _weights_sha256(folder: Path) -> str:
    """SHA-256 over the weights files (``*.safetensors``, else ``*.bin``) in name order:
    each name and its content's SHA-256. A file that links to a Hugging Face cache blob
    named by its SHA-256 (LFS files) is not read again: the blob's name is that hash."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ValueError(f"{folder}: no weights (*.safetensors or *.bin)")
    outer = hashlib.sha256()
    for file in files:
        blob = file.resolve().name
        if file.is_symlink() and _HEX64.fullmatch(blob):
            digest = blob
        else:
            with open(file, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        outer.update(f"{file.name}\0{digest}\n".encode())
    return outer.hexdigest()


@functools.lru_cache(maxsize=2)
def _load(path: Path, device: str) -> LanguageModel:
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True,
                                          dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ValueError(f"{path}: transformers cannot load it: {first.strip()}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: the tokenizer is not a fast (tokenizers) one, so it has no "
                         "offset mapping to find the concept's tokens")
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    model.eval().to(device)
    config = model.config
    n_layers = int(config.num_hidden_layers)
    positions = getattr(config, "max_position_embeddings", None) \
        or getattr(config, "n_positions", None)
    revision = path.name if _HEX40.fullmatch(path.name) and path.parent.name == "snapshots" \
        else ""
    return LanguageModel(model, tokenizer, path, n_layers, revision, _weights_sha256(path),
                         int(positions) if positions else None)


def load_language_model(model: str | os.PathLike[str], device: str = "cpu") -> LanguageModel:
    """The model ``model`` names (a folder, a package shipping one, a hub id: see
    :func:`~emergence.sources.words.text_encoders.resolve_sentence_transformer_dir`) and its
    tokenizer, float32, eval mode, on ``device``; cached per folder and device."""
    from emergence.sources.words.text_encoders import resolve_sentence_transformer_dir

    return _load(resolve_sentence_transformer_dir(model), device)


def _encode(lm: LanguageModel, text: str, span: tuple[int, int], pooling: Pooling,
            concept: str) -> tuple[list[int], list[int]]:
    """The text's token ids and the positions of the word's own tokens."""
    enc = lm.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    tokens = word_tokens(enc["offset_mapping"], enc["special_tokens_mask"], span)
    if not tokens:
        raise ValueError(f"{lm.path}: no token of the tokenizer covers {concept!r} in "
                         f"{text!r}")
    if lm.max_tokens is not None and len(ids) > lm.max_tokens:
        raise ValueError(f"{lm.path}: the text of {concept!r} has {len(ids)} tokens, the "
                         f"model reads at most {lm.max_tokens}; shorten the template")
    cls_id = getattr(lm.tokenizer, "cls_token_id", None)
    if pooling == "cls" and (cls_id is None or ids[0] != cls_id):
        raise ValueError(f"{lm.path}: pooling cls needs a [CLS] token first, and this "
                         "tokenizer adds none; use mean or last")
    return ids, tokens


def _forward(lm: LanguageModel, batch: list[list[int]], length: int, hidden: Sequence[int],
             device: str) -> list[NDArray[np.float32]]:
    """The selected hidden states ``(B, length, d)`` of a batch of texts padded (right,
    masked) to ``length`` tokens (module doc)."""
    import torch

    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad if pad is not None else 0] * (length - len(r)) for r in batch],
                       device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in batch], device=device)
    with torch.inference_mode():
        states = lm.module(input_ids=ids, attention_mask=mask,
                           output_hidden_states=True).hidden_states
    return [states[h].float().cpu().numpy() for h in hidden]


def layer_vectors(lm: LanguageModel, texts: Sequence[tuple[str, tuple[int, int], str]],
                  hidden: Sequence[int], pooling: Pooling, batch_size: int,
                  device: str = "cpu") -> list[NDArray[np.float64]]:
    """Per selected hidden state: ``len(texts) x d`` float64 concept vectors.

    ``texts``: ``(filled template, word span, concept word)`` per concept. Texts of the
    same padded length run together, ``batch_size`` at a time (module doc).
    """
    encoded = [_encode(lm, text, span, pooling, concept) for text, span, concept in texts]
    by_length: dict[int, list[int]] = {}
    for i, (ids, _) in enumerate(encoded):
        padded = -(-len(ids) // PAD_MULTIPLE) * PAD_MULTIPLE
        by_length.setdefault(min(padded, lm.max_tokens or padded), []).append(i)
    out: list[list[NDArray[np.float64] | None]] = [[None] * len(texts) for _ in hidden]
    for length in sorted(by_length):
        rows = by_length[length]
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            states = _forward(lm, [encoded[i][0] for i in chunk], length, hidden, device)
            for slot, layer in enumerate(states):
                for j, i in enumerate(chunk):
                    out[slot][i] = pool(layer[j], encoded[i][1], pooling)
    if not texts:
        width = int(lm.module.config.hidden_size)
        return [np.zeros((0, width), np.float64) for _ in hidden]
    return [np.vstack(layer) for layer in out]  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ spec


@dataclass(frozen=True)
class LayeredEmbedding:
    """Every selected layer's vectors of the concepts, and what made them."""

    wnids: list[str]
    texts: list[str]
    records: list[dict[str, Any]]
    layers: dict[str, NDArray[np.float64]]
    hidden_states: dict[str, int]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TransformersSpec(WordModelSpec):
    """A ``transformers`` language model, layer by layer (module doc).

    ``layers``: ``all``, ``embeddings`` or hidden-state indices; ``pooling``: ``mean``,
    ``last`` or ``cls``; ``template`` with ``{word}`` (once) and ``{gloss}``.
    """

    type: ClassVar[str] = "transformers"
    _KEYS: ClassVar[dict[str, str]] = {
        "model": "model", "layers": "layers", "pooling": "pooling", "template": "template",
        "batch_size": "batch_size", "device": "device"}
    model: str
    layers: str | tuple[int, ...] = "all"
    pooling: Pooling = "mean"
    template: str = "{word}"
    batch_size: int = 32
    device: Device = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.layers, str) and self.layers not in ("all", "embeddings"):
            raise ValueError(f"layers {self.layers!r}: use all, embeddings or a list of indices")
        if isinstance(self.layers, tuple) and (
                not self.layers or not all(type(i) is int for i in self.layers)):
            raise ValueError(f"layers {list(self.layers)}: a non-empty list of integers")
        if self.pooling not in get_args(Pooling):
            raise ValueError(f"unknown pooling {self.pooling!r}; expected {get_args(Pooling)}")
        check_template(self.template)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.device not in get_args(Device):
            raise ValueError(f"unknown device {self.device!r}; expected {get_args(Device)}")

    def params(self) -> dict[str, Any]:
        out = super().params()
        if isinstance(out.get("layers"), tuple):
            out["layers"] = list(out["layers"])
        return out

    @property
    def source(self) -> str:
        return self.model

    def check_study(self, names: Sequence[str]) -> None:
        """One language layer per word model until the workflow fans out over them."""
        from emergence.errors import ConfigError

        if not (self.layers == "embeddings" or isinstance(self.layers, tuple)
                and len(self.layers) == 1):
            shown = self.layers if isinstance(self.layers, str) else list(self.layers)
            raise ConfigError(f"config key 'word_models.{self.name}.layers': {shown} selects "
                              "several layers; the workflow scores one language layer per "
                              "word model for now: give one, e.g. [-1] (the last block) or "
                              "embeddings")

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        from emergence.sources.words.text_encoders import check_model

        check_model(self.model, base, key=f"word_models.{self.name}.model")

    def embed_layers(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
                     device: str = "cpu") -> LayeredEmbedding:
        """Every selected layer's vectors of ``(wnid, concept word)`` pairs on ``device``;
        every concept is covered (its ``token`` record is the text encoded)."""
        lm = load_language_model(self.model, device)
        glosses = lexicon.glosses(w for w, _ in concepts) if "{gloss}" in self.template \
            else {}
        filled = [(*fill_template(self.template, c, glosses.get(w, "")), c) for w, c in concepts]
        hidden = select_hidden_states(self.layers, lm.n_layers)
        names = hidden_state_names(lm.n_layers)
        vectors = layer_vectors(lm, filled, hidden, self.pooling, self.batch_size, device)
        attrs = {"model": str(lm.path), "revision": lm.revision,
                 "weights_sha256": lm.weights_sha256, "pooling": self.pooling,
                 "template": self.template, "n_hidden_states": lm.n_layers + 1}
        return LayeredEmbedding(
            wnids=[w for w, _ in concepts], texts=[t for t, _, _ in filled],
            records=[_record(w, c, c, t, "encoded")
                     for (w, c), (t, _, _) in zip(concepts, filled, strict=True)],
            layers={names[h]: v for h, v in zip(hidden, vectors, strict=True)},
            hidden_states={names[h]: h for h in hidden}, attrs=attrs)

    def embed(self, concepts: Concepts, lexicon: Lexicon = IMAGENET,
              device: str = "cpu") -> CoverageResult:
        """The vectors of the one selected layer (the one-vector DAG's word model)."""
        result = self.embed_layers(concepts, lexicon, device)
        if len(result.layers) != 1:
            raise ValueError(f"word model {self.name or self.model}: {len(result.layers)} "
                             f"layers selected ({', '.join(result.layers)}); the workflow "
                             "scores one language layer per word model: select one, e.g. "
                             "layers: [-1]")
        (name, vectors), = result.layers.items()
        return CoverageResult(
            vectors=vectors, wnids=result.wnids, records=result.records,
            attrs={**result.attrs, "layer": name, "hidden_state": result.hidden_states[name]})
