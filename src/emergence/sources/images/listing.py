"""Listing image files: every format PIL reads, and what is left out and why.

A photo source lists its concept folders and their files with one :class:`Scan`. A file is
an image when PIL reads its format (:func:`image_suffixes`: JPEG, PNG, GIF, WebP, TIFF,
BMP, ...; the first frame of an animation); hidden names (``.DS_Store``, macOS ``._*``
files) are not read. Every other entry is left out *with a record* (:class:`Skipped`,
written to ``images/skipped.tsv`` and counted in the job's log and on the console):

* a file in a format PIL does not read (``notes.txt``, ``.heic`` without a plugin);
* a broken symbolic link (its target named);
* a second name of a file already listed (a symlink or hard link to it, in any concept
  folder: compared by device and inode), so no image counts twice;
* a sub-folder of a concept folder, a socket or other special file.

Stops with one line instead: a broken link in place of a concept folder (an unmounted
drive: the concept would vanish), two concept folders that are one folder (a symlink
``bird -> dog``: both concepts would have the same images), two folder names that differ
only in Unicode normalisation (:mod:`emergence.sources.common`), an image directly in the
root.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from emergence.sources.common import nfc, same_but_normalisation

__all__ = ["SKIPPED_COLUMNS", "Scan", "Skipped", "digest", "image_suffixes", "is_image",
           "report_skipped"]

#: columns of ``images/skipped.tsv``
SKIPPED_COLUMNS = ["wnid", "path", "reason"]

# formats PIL identifies but cannot decode here: MPEG (no decoder), EPS (needs Ghostscript,
# which would make the listing depend on the machine)
_NOT_DECODED = frozenset({"MPEG", "EPS"})


class Skipped(NamedTuple):
    """One thing a source left out: a file or folder (``path``) or a concept with too few
    images (``path`` empty); ``wnid`` is the concept id (empty for a file in no concept)."""

    wnid: str
    path: str
    reason: str


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The file suffixes (lower case, with the dot) of every format PIL reads."""
    from PIL import Image, ImageFile

    Image.init()

    def decodes(fmt: str) -> bool:
        if fmt == "MPO":  # multi-picture JPEGs: opened by the JPEG plugin
            return True
        if fmt in _NOT_DECODED or fmt not in Image.OPEN:  # PDF, PALM: written only
            return False
        factory = Image.OPEN[fmt][0]
        return not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))

    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if decodes(fmt))


def is_image(p: Path) -> bool:
    """An image file name: a format PIL reads (any case), not hidden."""
    return p.suffix.lower() in image_suffixes() and not p.name.startswith(".")


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The non-hidden entries of ``folder``, sorted by name."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _identity(st: os.stat_result, path: str | Path) -> tuple[int, int] | str:
    """Device and inode, or the resolved path where the file system has no inodes."""
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


def _broken(path: str | Path) -> str:
    try:
        return f"broken symbolic link (to {os.readlink(path)})"
    except OSError:
        return "vanished while listed"


class Scan:
    """One listing of a source's folders: the images kept, and :attr:`skipped`.

    Files are compared across every folder of one scan, so a file reached twice (a link)
    is listed once, under the first concept (in listing order) that reaches it.
    """

    def __init__(self) -> None:
        self.skipped: list[Skipped] = []
        #: each image listed -> (size, mtime in ns), as stat gave them while listing
        self.stamps: dict[str, tuple[int, int]] = {}
        self._files: dict[tuple[int, int] | str, str] = {}
        self._folders: dict[tuple[int, int] | str, tuple[str, Path]] = {}

    def sub_folders(self, root: Path, noun: str, expects: str,
                    check: Callable[[Path], None] | None = None,
                    empty_noun: str | None = None) -> dict[str, Path]:
        """The non-hidden sub-folders of ``root`` by NFC name, sorted (``check`` called on
        each as it is found); other files are recorded as skipped. One line for an image
        directly in ``root`` ("image outside a <noun> folder (<expects>)"), a broken link,
        two names equal in NFC only, or no sub-folder at all ("no <empty_noun or noun>
        sub-folders")."""
        out: dict[str, Path] = {}
        for entry in _entries(root):
            path = Path(entry.path)
            if entry.is_dir():
                name = nfc(entry.name)
                if name in out:
                    raise ValueError(f"{root}: " + same_but_normalisation(
                        f"{noun} folders", out[name].name, entry.name))
                if check is not None:
                    check(path)
                out[name] = path
            elif entry.is_symlink() and not path.exists():
                raise ValueError(f"{path}: {_broken(path)} in place of a {noun} folder (an "
                                 "unmounted drive?): mount it or remove the link")
            elif is_image(path):
                raise ValueError(f"{path}: image outside a {noun} folder ({expects})")
            else:
                self.skipped.append(Skipped("", str(path), f"not a {noun} folder"))
        if not out:
            raise ValueError(f"{root}: no {empty_noun or noun} sub-folders ({expects})")
        return out

    def images(self, folder: Path, wnid: str, noun: str = "concept") -> list[str]:
        """The images directly in ``folder`` (concept ``wnid``), sorted by name. One line
        when another concept of this scan has the same folder (a link to it)."""
        st = folder.stat()
        key = _identity(st, folder)
        if key in self._folders:
            other, where = self._folders[key]
            plural = noun + ("es" if noun.endswith("s") else "s")
            raise ValueError(
                f"{where} and {folder}: one folder ({os.path.realpath(folder)}) for {plural} "
                f"{other!r} and {wnid!r}, which would have the same images: give each "
                f"{noun} its own folder")
        self._folders[key] = (wnid, folder)
        return self.files([e.path for e in _entries(folder)], wnid)

    def files(self, paths: Iterable[str | os.PathLike[str]], wnid: str) -> list[str]:
        """The images among ``paths`` (in that order); the others recorded as skipped."""
        out: list[str] = []
        suffixes = image_suffixes()
        for path in map(os.fspath, paths):  # strings: 26,000 Path objects cost seconds
            reason = self._leave_out(path, suffixes)
            if reason is None:
                out.append(path)
            else:
                self.skipped.append(Skipped(wnid, path, reason))
        return out

    def _leave_out(self, path: str, suffixes: frozenset[str]) -> str | None:
        """Why ``path`` is not an image of this scan, or ``None`` (then it is recorded)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return _broken(path)
        except OSError as exc:
            return f"cannot read its status ({exc.strerror or exc})"
        if stat.S_ISDIR(st.st_mode):
            return "a folder (images are read one level deep)"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        suffix = os.path.splitext(path)[1]
        if suffix.lower() not in suffixes:
            return f"not a format PIL reads ({suffix or 'no suffix'})"
        key = _identity(st, path)
        if key in self._files:
            return f"the same file as {self._files[key]}"
        self._files[key] = path
        self.stamps[path] = (st.st_size, st.st_mtime_ns)
        return None


def digest(scan: Scan, rows: Iterable[Any], others: Iterable[object]) -> str:
    """SHA-256 of the manifest ``rows`` with each image's size and mtime (as ``scan``
    listed it, else as it is now) and of ``others`` (what else the images job writes)."""
    out = hashlib.sha256()
    for row in rows:
        stamp = scan.stamps.get(row.path)
        if stamp is None:
            try:
                st = os.stat(row.path)
                stamp = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
        out.update(repr((tuple(row.__dict__.values()), stamp)).encode())
    for other in others:
        out.update(repr(other).encode())
    return out.hexdigest()


# the reasons shown one line each on the console (the rest are counted)
_LOUD = ("broken symbolic link", "the same file as")
_LOUD_LINES = 20


def _kind(reason: str) -> str:
    return "the same file as another" if reason.startswith(_LOUD[1]) else reason.split(" (")[0]


def report_skipped(log: logging.Logger, skipped: list[Skipped], where: str) -> None:
    """Every entry of ``skipped`` in the job's log; as warnings (the console too, see
    :func:`emergence.runner.start`): one line per broken link or second name of a file
    (the first 20), and one line counting all that was left out, by reason, naming
    ``where`` (``images/skipped.tsv``)."""
    for s in skipped:
        log.info("left out: %s%s: %s", s.path or f"concept {s.wnid}",
                 f" (concept {s.wnid})" if s.path and s.wnid else "", s.reason)
    files = [s for s in skipped if s.path]
    loud = [s for s in files if s.reason.startswith(_LOUD)]
    for s in loud[:_LOUD_LINES]:
        log.warning("left out %s: %s", s.path, s.reason)
    if len(loud) > _LOUD_LINES:
        log.warning("... and %d more broken links or second names", len(loud) - _LOUD_LINES)
    concepts = len(skipped) - len(files)
    if not skipped:
        log.info("nothing left out (%s lists nothing)", where)
        return
    kinds = Counter(_kind(s.reason) for s in files)
    counted = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    log.warning("%d file(s) left out%s, %d concept(s) with too few images: see %s",
                len(files), f" ({counted})" if counted else "", concepts, where)
