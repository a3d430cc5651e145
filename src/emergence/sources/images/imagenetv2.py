"""ImageNetV2 matched-frequency (Recht et al. 2019): download, checksum and extraction.

The release is a tarball of folders ``0`` ... ``999`` (class index in sorted-wnid order),
fetched once into a cache folder, checked against a pinned SHA-256 and extracted safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

__all__ = ["DEFAULT_FOLDER", "DEFAULT_SHA256", "DEFAULT_URL", "ensure_imagenetv2"]

# ImageNetV2 matched-frequency (Recht et al. 2019), the authors' Hugging Face mirror. The SHA-256
# and size (1,264,079,360 bytes) are those published in TensorFlow Datasets'
# tensorflow_datasets/datasets/imagenet_v2/checksums.tsv for this exact URL.
DEFAULT_URL = ("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
               "imagenetv2-matched-frequency.tar.gz")
DEFAULT_SHA256: str | None = "f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c"
DEFAULT_FOLDER = "imagenetv2-matched-frequency-format-val"

_CHUNK = 1 << 20



def ensure_imagenetv2(dest_dir: str | os.PathLike[str], url: str = DEFAULT_URL,
                      sha256: str | None = DEFAULT_SHA256,
                      folder: str = DEFAULT_FOLDER) -> Path:
    """The extracted ImageNetV2 folder under ``dest_dir``, downloading it on first use.

    The tarball is streamed to a temporary file in ``dest_dir``, its SHA-256 checked, and
    extracted (``tarfile`` ``filter="data"``: no absolute paths, ``..`` or links out of the
    tree) into a temporary folder; ``folder`` is then renamed into place. If
    ``dest_dir/folder`` already exists it is returned without any network access.

    Parameters
    ----------
    dest_dir : str or path-like
        Download/cache folder.
    url : str
    sha256 : str or None
        Expected SHA-256 (hex). ``None``: download, then fail naming the computed hash, to be
        pinned in the config.
    folder : str
        The archive's top folder (``imagenetv2-matched-frequency-format-val``).

    Returns
    -------
    pathlib.Path
        ``dest_dir / folder``.

    Raises
    ------
    ValueError
        Checksum mismatch (naming the URL and both hashes), unpinned checksum, or an archive
        without ``folder`` or with unsafe members; nothing is left behind.
    OSError
        Network or disk errors (urllib's URLError is an OSError); nothing is left behind.
    """
    dest = Path(dest_dir)
    target = dest / folder
    if target.is_dir():
        return target
    if target.exists():
        raise ValueError(f"{target}: exists but is not a folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=dest, prefix=f".{folder}-", suffix=".tar.gz.part")
    part = Path(part_name)
    staging: Path | None = None
    try:
        print(f"downloading {url} -> {dest}", file=sys.stderr, flush=True)
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "semantic-emergence"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if sha256 is None:
            raise ValueError(f"{url}: no SHA-256 pinned; the download has SHA-256 {actual} "
                             "(set images.sha256 to it after checking it)")
        if actual.lower() != sha256.strip().lower():
            raise ValueError(f"{url}: SHA-256 mismatch: expected {sha256.strip().lower()}, "
                             f"got {actual}")
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{folder}-extract-"))
        try:
            with tarfile.open(part, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            raise ValueError(f"{url}: cannot extract the archive ({type(exc).__name__}: "
                             f"{exc})") from None
        extracted = staging / folder
        if not extracted.is_dir():
            raise ValueError(f"{url}: the archive has no top folder {folder}")
        try:
            os.rename(extracted, target)
        except OSError:
            if not target.is_dir():  # not a concurrent run that finished first
                raise
        return target
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created and not target.exists():
            with contextlib.suppress(OSError):
                dest.rmdir()
