"""Image sources: the typed spec of the config's ``images`` section.

One interface for every source (``images.source``): :meth:`ImageSourceSpec.from_config`
(once, when the DAG is built), :meth:`~ImageSourceSpec.group_names` (known from the config
alone), :meth:`~ImageSourceSpec.params` (the slice of ``images`` the ``images`` rule
reads), :meth:`~ImageSourceSpec.from_params` (in the job) and
:meth:`~ImageSourceSpec.build` (write the manifest).

* :class:`EmojiSource` (``emoji``, the offline demo): one group per emoji style.
* :class:`ImageNetSource` (``imagenet-val``, ``imagenet-folders``, ``imagenetv2``):
  ``images_per_concept`` groups, named ``"1"``, ``"2"``, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from emergence.sources.images import ManifestRow

__all__ = ["EmojiSource", "ImageNetSource", "ImageSourceSpec"]

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
}


@dataclass(frozen=True, kw_only=True)
class ImageSourceSpec:
    """The config's ``images`` section; see the module docstring."""

    SOURCES: ClassVar[tuple[str, ...]]
    # the keys of `images` the images rule reads, in params order ("source" first)
    PARAMS: ClassVar[tuple[str, ...]]

    source: str

    @staticmethod
    def kind(source: object) -> type[ImageSourceSpec]:
        """The spec class of ``images.source``."""
        for cls in (EmojiSource, ImageNetSource):
            if source in cls.SOURCES:
                return cls
        known = ", ".join(s for c in (EmojiSource, ImageNetSource) for s in c.SOURCES)
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
            return cls.from_params(entry)
        except ValueError as exc:
            raise ConfigError(f"config key 'images': {exc}") from None

    def params(self) -> dict[str, Any]:
        """The rule's ``params``: the keys of ``images`` this source reads (those set)."""
        out: dict[str, Any] = {}
        for key in self.PARAMS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

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

    def build(self, manifest: str | os.PathLike[str], *, seed: int = 0,
              image_dir: str | os.PathLike[str] | None = None,
              table: str | os.PathLike[str] | None = None,
              ) -> tuple[list[ManifestRow], list[tuple[str, str]]]:
        """Make the images (where the source draws them) and write the manifest.

        Returns the manifest rows and the skipped concepts ``(wnid, reason)``.
        """
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class EmojiSource(ImageSourceSpec):
    """Emoji drawings of the curated concept table (``concepts``), one group per style."""

    SOURCES: ClassVar[tuple[str, ...]] = ("emoji",)
    PARAMS: ClassVar[tuple[str, ...]] = ("source", "styles", "render_size")

    source: str = "emoji"
    concepts: str | None = None  # the table is the rule's input, not a parameter
    styles: tuple[str, ...] = ("twemoji", "openmoji")
    render_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(self.styles))

    def group_names(self) -> list[str]:
        return list(self.styles)

    def build(self, manifest: str | os.PathLike[str], *, seed: int = 0,
              image_dir: str | os.PathLike[str] | None = None,
              table: str | os.PathLike[str] | None = None,
              ) -> tuple[list[ManifestRow], list[tuple[str, str]]]:
        """Render every concept of ``table`` (default ``concepts``) in every style into
        ``image_dir``; nothing is skipped (the table is checked)."""
        from emergence.sources.images import build_emoji_images

        table = table if table is not None else self.concepts
        if table is None or image_dir is None:
            raise ValueError("emoji images need the concept table and an image folder")
        rows = build_emoji_images(table, self.styles, self.render_size, image_dir, manifest)
        return rows, []


@dataclass(frozen=True, kw_only=True)
class ImageNetSource(ImageSourceSpec):
    """Photos of ImageNet-1k classes; see :mod:`emergence.sources.imagenet`.

    ``path`` is the image folder (imagenetv2: the download/cache folder); ``labels`` the
    imagenet-val label file; ``url`` and ``sha256`` the imagenetv2 tarball;
    ``max_concepts`` keeps the first N classes in class order.
    """

    SOURCES: ClassVar[tuple[str, ...]] = ("imagenet-val", "imagenet-folders", "imagenetv2")
    PARAMS: ClassVar[tuple[str, ...]] = ("source", "path", "labels", "url", "sha256",
                                         "images_per_concept", "max_concepts")

    path: str | None = None
    labels: str | None = None
    url: str | None = None
    sha256: str | None = None
    images_per_concept: int = 5
    max_concepts: int | None = None

    def __post_init__(self) -> None:
        if self.source not in self.SOURCES:
            raise ValueError(f"images.source: '{self.source}' is not an ImageNet source "
                             f"({', '.join(self.SOURCES)})")
        m = self.max_concepts
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"images.max_concepts: must be a positive integer, got {m!r}")

    def group_names(self) -> list[str]:
        return [str(j + 1) for j in range(self.images_per_concept)]

    def build(self, manifest: str | os.PathLike[str], *, seed: int = 0,
              image_dir: str | os.PathLike[str] | None = None,
              table: str | os.PathLike[str] | None = None,
              ) -> tuple[list[ManifestRow], list[tuple[str, str]]]:
        """List (imagenetv2: download first), sample with ``seed`` and write the manifest;
        see :func:`emergence.sources.imagenet.build_imagenet_manifest`."""
        from emergence.sources.imagenet import build_imagenet_manifest

        if not self.path:
            raise ValueError(f"images.path: required for source {self.source}")
        return build_imagenet_manifest(
            self.source, self.path, manifest, seed, labels=self.labels, url=self.url,
            sha256=self.sha256, images_per_concept=self.images_per_concept,
            max_concepts=self.max_concepts)
