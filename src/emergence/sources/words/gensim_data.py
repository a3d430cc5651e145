"""gensim-data models: download once into a cache folder, return the vector file.

:mod:`gensim.downloader` reads its cache folder from ``GENSIM_DATA_DIR`` when it is
imported, and its release URLs are module constants. So that every call can choose its
own cache folder and mirror, and the importing process is left as it was, the download
runs in a child Python process whose environment sets ``GENSIM_DATA_DIR``; a mirror is set
there, in that process only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from emergence.sources.words.vector_files import one_line

__all__ = ["gensim_data_path"]

# Run as `python -c _CHILD name base_url`; writes one JSON object to stdout.
_CHILD = """
import json, sys
out, sys.stdout = sys.stdout, sys.stderr  # gensim prints download progress to stdout
name, base_url = sys.argv[1], sys.argv[2]
import gensim.downloader as api
if base_url:
    root = base_url.rstrip("/")
    api.DOWNLOAD_BASE_URL = root
    # _load_info binds DATA_LIST_URL as a default argument at import time.
    api._load_info.__defaults__ = (root + "/list.json",) + api._load_info.__defaults__[1:]
try:
    result = {"path": api.load(name, return_path=True)}
except ValueError as exc:
    result = {"error": "ValueError", "message": str(exc)}
except Exception as exc:  # gensim raises bare Exception on checksum mismatch
    result = {"error": type(exc).__name__, "message": str(exc)}
out.write(json.dumps(result))
"""


def gensim_data_path(
    name: str,
    base_url: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Download (once) a gensim-data model and return the path of its data file.

    Uses :mod:`gensim.downloader` in a child process (see the module docstring), which
    checks the md5 sums listed in ``list.json`` and skips the download when
    ``<cache>/<name>/`` exists.

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
        :func:`emergence.sources.words.vector_files.load_keyed_vectors`.

    Raises
    ------
    ValueError
        Unknown name, or no model list reachable and none cached.
    RuntimeError
        Download or checksum failure, or the file is missing after download.
    """
    cache = Path(cache_dir or os.environ.get("GENSIM_DATA_DIR") or "~/gensim-data")
    cache = cache.expanduser().resolve()
    env = {**os.environ, "GENSIM_DATA_DIR": str(cache)}
    child = subprocess.run([sys.executable, "-c", _CHILD, name, base_url or ""], env=env,
                           stdout=subprocess.PIPE, text=True, check=False)
    try:
        result = json.loads(child.stdout)
    except ValueError:
        raise RuntimeError(f"gensim-data {name!r}: download failed: the downloader exited "
                           f"with status {child.returncode}") from None
    if result.get("error") == "ValueError":
        raise ValueError(f"gensim-data {name!r}: {one_line(result['message'])}")
    if "error" in result:
        raise RuntimeError(f"gensim-data {name!r}: download failed: "
                           f"{one_line(result['message'])}")
    path = Path(result["path"])
    if not path.is_file():
        raise RuntimeError(f"gensim-data {name!r}: {path} missing; delete {path.parent} and retry")
    return path
