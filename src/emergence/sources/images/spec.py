"""Image sources: the typed spec of the config's ``images`` section.

One interface for every source (``images.source``): :meth:`ImageSourceSpec.from_config`
(once, when the DAG is built), :meth:`~ImageSourceSpec.group_names` (known from the config
alone), :meth:`~ImageSourceSpec.params` (the slice of ``images`` the ``images`` rule
reads), :meth:`~ImageSourceSpec.inputs` and :meth:`~ImageSourceSpec.outputs` (the rule's
files), :meth:`~ImageSourceSpec.from_params` (in the job) and
:meth:`~ImageSourceSpec.build` (write the manifest and the source's other outputs).

* :class:`EmojiSource` (``emoji``, the offline demo): one group per emoji style.
* :class:`ImageNetSource` (``imagenet-val``, ``imagenet-folders``, ``imagenetv2``):
  ``images_per_concept`` groups, named ``"1"``, ``"2"``, ...
* :class:`FolderSource` (``folders``: a folder per concept, the THINGS layout, with an
  optional concept table): groups as for ImageNet.

The photo sources draw ``images_per_concept x images_per_average`` images per concept
with the seed (:func:`emergence.sources.images.groups.sample_groups`); ``images_per_average``
n > 1 puts n images of a concept in each group, averaged by the readers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from emergence.sources.common import ManifestRow
from emergence.sources.images.listing import Scan, Skipped, digest

__all__ = ["EmojiSource", "FolderSource", "ImageNetSource", "ImageSourceSpec"]

PathLike = str | os.PathLike[str]

# Where to get each input the config names (shown when it is missing).
_HINTS = {
    ("imagenet-val", "path"): "the folder of the 50,000 ILSVRC2012_val_*.JPEG images "
    "(ILSVRC2012_img_val.tar from https://image-net.org, free registration)",
    ("imagenet-val", "labels"): "LOC_val_solution.csv (Kaggle, ImageNet Object Localization "
    "Challenge) or the devkit's ILSVRC2012_validation_ground_truth.txt with meta.mat beside it "
    "(ILSVRC2012_devkit_t12.tar.gz from https://image-net.org)",
    ("imagenet-folders", "path"): "a folder with one sub-folder of images per wnid "
    "(the ILSVRC2012 layout)",
    ("emoji", "concepts"): "the curated concept table, e.g. config/demo_concepts.tsv",
    ("folders", "path"): "a folder with one sub-folder of images per concept "
    "(<root>/<concept_id>/<images>, the THINGS layout)",
}
# Params left out while at their default, so that adding them kept existing params.
_QUIET_DEFAULTS = {"images_per_average": 1}


@dataclass(frozen=True, kw_only=True)
class ImageSourceSpec:
    """The config's ``images`` section; see the module docstring."""

    SOURCES: ClassVar[tuple[str, ...]]
    # the keys of `images` the images rule reads, in params order ("source" first)
    PARAMS: ClassVar[tuple[str, ...]]
    # the rule's outputs: name -> path under the results folder
    OUTPUTS: ClassVar[dict[str, str]] = {"manifest": "images/manifest.tsv",
                                         "skipped": "images/skipped.tsv"}
    # outputs that are folders (the rule marks them `directory`)
    DIRECTORIES: ClassVar[tuple[str, ...]] = ()
    # whether the images are drawn with the seed (the rule's `seed` param)
    SAMPLED: ClassVar[bool] = True
    # the images are user files, listed when the DAG is built (`fingerprint`)
    LISTED: ClassVar[bool] = False

    source: str

    @staticmethod
    def kind(source: object) -> type[ImageSourceSpec]:
        """The spec class of ``images.source``."""
        kinds = (EmojiSource, ImageNetSource, FolderSource)
        for cls in kinds:
            if source in cls.SOURCES:
                return cls
        known = ", ".join(s for c in kinds for s in c.SOURCES)
        raise ValueError(f"unknown image source '{source}' (expected one of {known})")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ImageSourceSpec:
        """The spec of ``params["source"]``; keys other than its own are ignored."""
        spec_cls = cls.kind(params.get("source"))
        names = {f.name for f in fields(spec_cls)}
        return spec_cls(**{k: v for k, v in params.items() if k in names})

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> ImageSourceSpec:
        """The spec of the (schema-validated, defaults filled) ``images`` section."""
        from emergence.errors import ConfigError

        try:
            spec = cls.from_params(entry)
        except ValueError as exc:
            raise ConfigError(f"config key 'images': {exc}") from None
        if entry.get("images_per_average", 1) != 1 and "images_per_average" not in spec.PARAMS:
            raise ConfigError(f"config key 'images.images_per_average': source '{spec.source}' "
                              "has one image per concept per group (remove the key)")
        return spec

    def params(self) -> dict[str, Any]:
        """The rule's ``params``: the keys of ``images`` this source reads (those set)."""
        out: dict[str, Any] = {}
        for key in self.PARAMS:
            value = getattr(self, key)
            if value is not None and not (key in _QUIET_DEFAULTS
                                          and value == _QUIET_DEFAULTS[key]):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def rule_params(self, seed: int) -> dict[str, Any]:
        """The images rule's ``params``: ``images`` (:meth:`params`), and ``seed`` when the
        source draws its images."""
        return {"images": self.params(), **({"seed": seed} if self.SAMPLED else {})}

    def inputs(self) -> dict[str, str]:
        """The images rule's input files (name -> path as configured)."""
        return {}

    def outputs(self, results: str) -> dict[str, str]:
        """The images rule's outputs (name -> path under ``results``)."""
        return {name: f"{results}/{path}" for name, path in self.OUTPUTS.items()}

    def group_names(self) -> list[str]:
        """Names of the image groups, known from the config alone (no file is read)."""
        raise NotImplementedError

    def check_data_paths(self, base: str | os.PathLike[str] = ".") -> None:
        """Stop with one ``ConfigError`` line when a configured input does not exist.

        The line names the config key, the missing path and where to get the data.
        """
        from emergence.errors import ConfigError

        for (source, key), hint in _HINTS.items():
            if source != self.source:
                continue
            value = getattr(self, key)
            if value is None:
                raise ConfigError(f"config key 'images.{key}' is required for source "
                                  f"'{source}': set it to {hint}")
            if not (Path(base) / value).exists():
                raise ConfigError(f"config key 'images.{key}': {value} does not exist; "
                                  f"set it to {hint}")

    def listed(self) -> bool:
        """Whether the images are user files (:meth:`fingerprint` is not ``None``)."""
        return self.LISTED

    def fingerprint(self, seed: int) -> str | None:
        """What the images rule would write now and the size and mtime of every image in
        its manifest, as one SHA-256 (the rule's ``listing`` param): when it changes (an
        image overwritten, added, removed or made unreadable) the rule runs again, and
        everything after it. ``None`` for sources whose images are not user files."""
        return None

    def build(self, outputs: PathLike | Mapping[str, PathLike], *, seed: int = 0,
              inputs: Mapping[str, PathLike] | None = None,
              ) -> tuple[list[ManifestRow], list[Skipped]]:
        """Make the images (where the source draws them), write the manifest and the
        source's other outputs given in ``outputs`` (names of :meth:`outputs`; a single
        path is the manifest alone); ``inputs`` as :meth:`inputs` names them.

        Returns the manifest rows and what was left out (files, then concepts with too
        few images), as ``images/skipped.tsv`` lists them.
        """
        out = dict(outputs) if isinstance(outputs, Mapping) else {"manifest": outputs}
        rows, skipped = self._build(out, seed, dict(inputs or {}))
        if "skipped" in out:
            from emergence.io import write_tsv
            from emergence.sources.images.listing import SKIPPED_COLUMNS

            write_tsv(out["skipped"], [s._asdict() for s in skipped], SKIPPED_COLUMNS)
        return rows, skipped

    def _build(self, outputs: dict[str, PathLike], seed: int, inputs: dict[str, PathLike]
               ) -> tuple[list[ManifestRow], list[Skipped]]:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class EmojiSource(ImageSourceSpec):
    """Emoji drawings of the curated concept table (``concepts``), one group per style."""

    SOURCES: ClassVar[tuple[str, ...]] = ("emoji",)
    PARAMS: ClassVar[tuple[str, ...]] = ("source", "styles", "render_size")
    OUTPUTS: ClassVar[dict[str, str]] = {"manifest": "images/manifest.tsv",
                                         "images": "images/png"}
    DIRECTORIES: ClassVar[tuple[str, ...]] = ("images",)
    SAMPLED: ClassVar[bool] = False

    source: str = "emoji"
    concepts: str | None = None  # the table is the rule's input, not a parameter
    styles: tuple[str, ...] = ("twemoji", "openmoji")
    render_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(self.styles))

    def group_names(self) -> list[str]:
        return list(self.styles)

    def inputs(self) -> dict[str, str]:
        return {"table": self.concepts} if self.concepts else {}

    def _build(self, outputs: dict[str, PathLike], seed: int, inputs: dict[str, PathLike]
               ) -> tuple[list[ManifestRow], list[Skipped]]:
        """Render every concept of the ``table`` input (default ``concepts``) in every
        style into the ``images`` output; nothing is skipped (the table is checked)."""
        from emergence.sources.images.groups import build_emoji_images

        table = inputs.get("table", self.concepts)
        if table is None or "images" not in outputs:
            raise ValueError("emoji images need the concept table and an image folder")
        rows = build_emoji_images(table, self.styles, self.render_size, outputs["images"],
                                  outputs["manifest"])
        return rows, []


@dataclass(frozen=True, kw_only=True)
class _SampledSource(ImageSourceSpec):
    """Photos drawn with the seed: ``images_per_concept`` groups of
    ``images_per_average`` images per concept; ``max_concepts`` keeps the first N."""

    LISTED: ClassVar[bool] = True

    path: str | None = None
    images_per_concept: int = 5
    max_concepts: int | None = None
    images_per_average: int = 1

    def __post_init__(self) -> None:
        if self.source not in self.SOURCES:
            raise ValueError(f"images.source: '{self.source}' is not a source of "
                             f"{type(self).__name__} ({', '.join(self.SOURCES)})")
        for key in ("max_concepts", "images_per_average"):
            m = getattr(self, key)
            if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
                raise ValueError(f"images.{key}: must be a positive integer, got {m!r}")

    def group_names(self) -> list[str]:
        return [str(j + 1) for j in range(self.images_per_concept)]

    def plan(self, seed: int, inputs: Mapping[str, PathLike] | None = None,
             scan: Scan | None = None,
             ) -> tuple[list[ManifestRow], list[Skipped], list[Any] | None]:
        """List (with ``scan``, a new one by default) and sample without writing: the
        manifest rows, what was left out, and the concepts of ``images/concepts.tsv``
        (``None`` where the source has no such table)."""
        raise NotImplementedError

    def _build(self, outputs: dict[str, PathLike], seed: int, inputs: dict[str, PathLike]
               ) -> tuple[list[ManifestRow], list[Skipped]]:
        """:meth:`plan`, then write the manifest (and ``concepts`` where listed)."""
        from emergence.sources.common import write_manifest

        rows, skipped, concepts = self.plan(seed, inputs)
        write_manifest(outputs["manifest"], rows)
        if concepts is not None and "concepts" in outputs:
            from emergence.sources.common import write_concepts

            write_concepts(outputs["concepts"], concepts)
        return rows, skipped

    def fingerprint(self, seed: int) -> str | None:
        if not self.listed():
            return None
        scan = Scan()
        try:
            rows, skipped, concepts = self.plan(seed, self.inputs(), scan)
        except Exception as exc:  # noqa: BLE001 - never a traceback while the DAG is built:
            # the job runs and stops with this error, in one line and in its log
            return "not listed: " + " ".join(str(exc).split())
        return digest(scan, rows, [*skipped, *(c.__dict__ for c in concepts or ())])


@dataclass(frozen=True, kw_only=True)
class ImageNetSource(_SampledSource):
    """Photos of ImageNet-1k classes; see :mod:`emergence.sources.images.imagenet`.

    ``path`` is the image folder (imagenetv2: the download/cache folder); ``labels`` the
    imagenet-val label file; ``url`` and ``sha256`` the imagenetv2 tarball;
    ``max_concepts`` keeps the first N classes in class order.
    """

    SOURCES: ClassVar[tuple[str, ...]] = ("imagenet-val", "imagenet-folders", "imagenetv2")
    PARAMS: ClassVar[tuple[str, ...]] = ("source", "path", "labels", "url", "sha256",
                                         "images_per_concept", "max_concepts",
                                         "images_per_average")

    labels: str | None = None
    url: str | None = None
    sha256: str | None = None

    def listed(self) -> bool:
        """The user's folders, not ImageNetV2 (a checksummed download: ``url``, ``sha256``)."""
        return self.source != "imagenetv2"

    def inputs(self) -> dict[str, str]:
        return {"labels": self.labels} if self.labels else {}

    def plan(self, seed: int, inputs: Mapping[str, PathLike] | None = None,
             scan: Scan | None = None,
             ) -> tuple[list[ManifestRow], list[Skipped], list[Any] | None]:
        """List (imagenetv2: download first) and sample with ``seed``; see
        :func:`emergence.sources.images.imagenet.plan_imagenet_manifest`."""
        from emergence.sources.images.imagenet import plan_imagenet_manifest

        if not self.path:
            raise ValueError(f"images.path: required for source {self.source}")
        rows, skipped = plan_imagenet_manifest(
            self.source, self.path, seed, labels=self.labels,
            url=self.url, sha256=self.sha256, images_per_concept=self.images_per_concept,
            max_concepts=self.max_concepts, images_per_average=self.images_per_average,
            scan=scan)
        return rows, skipped, None


@dataclass(frozen=True, kw_only=True)
class FolderSource(_SampledSource):
    """A folder per concept (``path``: ``<root>/<concept_id>/<images>``, the THINGS layout);
    see :mod:`emergence.sources.images.folders`.

    ``table``: the concept table, ``{"path": ..., "id": ..., "word": ...,
    "definition": ..., "wnid": ...}`` (column names; defaults
    :data:`~emergence.sources.images.folders.TABLE_COLUMNS`), or ``None``: every sub-folder is a
    concept, its word the folder name with ``_`` as space. The manifest's ``wnid`` column
    holds the concept id (the folder name); ``images/concepts.tsv`` the concepts' words,
    definitions and wnids, which the word models read instead of timm's ImageNet tables.
    ``max_concepts`` keeps the first N concepts of the table (of the sorted folders).
    """

    SOURCES: ClassVar[tuple[str, ...]] = ("folders",)
    PARAMS: ClassVar[tuple[str, ...]] = ("source", "path", "table", "files",
                                         "images_per_concept", "max_concepts",
                                         "images_per_average")
    OUTPUTS: ClassVar[dict[str, str]] = {"manifest": "images/manifest.tsv",
                                         "skipped": "images/skipped.tsv",
                                         "concepts": "images/concepts.tsv"}

    source: str = "folders"
    table: Mapping[str, str] | None = None
    files: str | None = None  # None: a folder per concept ("{concept_id}/*")
    download: str | None = None  # where the data come from, shown when a path is missing

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.table is not None:
            from emergence.sources.images.folders import TABLE_COLUMNS

            table = dict(self.table)
            unknown = sorted(set(table) - {"path", *TABLE_COLUMNS})
            if "path" not in table or unknown:
                raise ValueError(f"images.table: needs 'path', may name columns "
                                 f"{', '.join(TABLE_COLUMNS)}; got {sorted(table)}")
            object.__setattr__(self, "table", table)

    def inputs(self) -> dict[str, str]:
        return {"table": self.table["path"]} if self.table else {}

    def check_data_paths(self, base: PathLike = ".") -> None:
        from emergence.errors import ConfigError

        where = [("path", self.path)] + ([("table.path", self.table["path"])] if self.table else [])
        for key, value in where:
            if self.download and value and not (Path(base) / value).exists():
                raise ConfigError(f"config key 'images.{key}': {value} does not exist; "
                                  f"download {self.download} and set the path")
        super().check_data_paths(base)
        if self.table and not (Path(base) / self.table["path"]).is_file():
            raise ConfigError(f"config key 'images.table.path': {self.table['path']} does not "
                              "exist; set it to the concept table (.tsv or .csv with a "
                              "concept_id column)")

    def plan(self, seed: int, inputs: Mapping[str, PathLike] | None = None,
             scan: Scan | None = None,
             ) -> tuple[list[ManifestRow], list[Skipped], list[Any] | None]:
        """Read the concept table (the ``table`` input), list and sample the folders with
        ``seed``; see :func:`emergence.sources.images.folders.plan_folder_manifest`."""
        from emergence.sources.images.folders import plan_folder_manifest, read_concept_table

        if not self.path:
            raise ValueError("images.path: required for source folders")
        inputs = inputs or {}
        table = str(inputs.get("table", self.table["path"] if self.table else ""))
        columns = {k: v for k, v in (self.table or {}).items() if k != "path"}
        concepts = read_concept_table(table, columns) if table else None
        rows, skipped, kept = plan_folder_manifest(
            self.path, seed, concepts=concepts,
            images_per_concept=self.images_per_concept,
            images_per_average=self.images_per_average, max_concepts=self.max_concepts,
            table=table, scan=scan, **({"files": self.files} if self.files else {}))
        return rows, skipped, kept
