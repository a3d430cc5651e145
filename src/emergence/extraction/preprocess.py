"""Images in, model input out: reading image files, the model's transform, the batch loader.

Every image a network sees is read by :func:`load_image`: upright (its EXIF orientation
applied), 8-bit RGB (deeper images scaled by their bit depth).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import timm.data
import torch
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageOps
from torchvision import transforms

__all__ = ["ImageBatches", "ImageDataset", "image_loader", "load_image", "load_oriented",
           "make_transform"]

#: Integer modes and their bit depth when the file does not say (TIFF's BitsPerSample
#: does): PNG and TIFF 16-bit greyscale load as ``I;16*``, 16-bit PGM/PPM as ``I``.
_DEEP_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 16}
#: EXIF orientation tags that flip and/or rotate the stored pixels
_TRANSPOSED = range(2, 9)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as upright 8-bit RGB.

    The EXIF orientation tag (a phone photo taken sideways, also TIFF's own tag) is
    applied with :func:`PIL.ImageOps.exif_transpose`, so the network sees the picture
    as a viewer shows it. Greyscale, CMYK, YCbCr, 16-bit and palette images are
    converted; 16-bit (and other integer) images are scaled by their bit depth
    (``value * 255 / 65535``: a 16-bit file equals its 8-bit version times 257), never
    by the image's own maximum. Images with transparency (RGBA, LA, palette with a
    transparent colour) are composited on white.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    PIL.Image.Image
        A loaded (file closed) image in mode ``"RGB"``.

    Raises
    ------
    FileNotFoundError, OSError
        One line naming the file: missing, not an image, truncated or corrupt.
        Truncated files are never padded silently (PIL's ``LOAD_TRUNCATED_IMAGES``
        is not used).
    """
    return load_oriented(path)[0]


def load_oriented(path: str | os.PathLike[str]) -> tuple[Image.Image, int]:
    """:func:`load_image`, and the EXIF orientation tag it applied (``0``: no tag;
    ``1``: upright; ``2`` to ``8``: flipped and/or rotated)."""
    try:
        return _load_image(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{os.fspath(path)}: image file not found") from exc
    except Image.UnidentifiedImageError as exc:
        raise OSError(f"{os.fspath(path)}: not an image file PIL can read; "
                      "replace or remove the file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise OSError(f"{os.fspath(path)}: cannot read image ({detail}); "
                      "replace or remove the file") from exc


def _load_image(path: str | os.PathLike[str]) -> tuple[Image.Image, int]:
    # From a file object, not a path: PIL then reads raw pixels instead of mapping them
    # into memory, a path that (Pillow 13) lays out a one-band TIFF with a rotating
    # orientation tag (5-8) in the rotated size and scrambles its pixels.
    with open(path, "rb") as fh, Image.open(fh) as img:
        tagged = _orientation(img)  # before loading: PIL's TIFF reader applies its own tag
        img.load()
        if _orientation(img) in _TRANSPOSED:  # not applied yet
            img = ImageOps.exif_transpose(img)
        orientation = tagged or _orientation(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in _DEEP_MODES:
            arr = np.asarray(img, dtype=np.float64)
            scale = 255.0 / _integer_max(img)
            img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB"), orientation
        return img.convert("RGB"), orientation


def _orientation(img: Image.Image) -> int:
    """The image's EXIF (or TIFF, or XMP) orientation tag; 0 when it has none."""
    tag = img.getexif().get(ExifTags.Base.Orientation, 0)
    return tag if isinstance(tag, int) and 0 <= tag <= 0xFFFF else 0


def _integer_max(img: Image.Image) -> int:
    """Full scale of an integer-mode image: from TIFF's BitsPerSample (and SampleFormat:
    signed) where the file has it, else the mode's depth (:data:`_DEEP_MODES`)."""
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) else bits
    if not isinstance(bits, int) or not 1 < bits <= 32:
        return (1 << _DEEP_MODES[img.mode]) - 1
    signed = tags.get(339) in (2, (2,))  # SampleFormat 2: signed integers
    return (1 << (bits - signed)) - 1


def make_transform(
    data_config: Mapping[str, Any], mode: Literal["timm", "resize"] = "timm"
) -> Callable[[Image.Image], torch.Tensor]:
    """Image -> normalised tensor, as the model expects.

    Parameters
    ----------
    data_config : Mapping
        timm data config (``input_size``, ``interpolation``, ``mean``, ``std``,
        ``crop_pct``, ``crop_mode``), e.g. :attr:`LoadedModel.data_config`.
    mode : {"timm", "resize"}
        ``"timm"``: timm's eval transform (resize the short side to
        ``size / crop_pct``, centre crop). ``"resize"``: resize the whole image to
        ``input_size`` (aspect ratio not kept, nothing cropped).

    Returns
    -------
    callable
        PIL image -> float32 tensor ``(C, H, W)``.
    """
    if mode == "timm":
        return timm.data.create_transform(**dict(data_config), is_training=False)
    if mode == "resize":
        _, height, width = data_config["input_size"]
        interpolation = timm.data.transforms.str_to_interp_mode(
            data_config.get("interpolation", "bicubic")
        )
        return transforms.Compose(
            [
                transforms.Resize((int(height), int(width)), interpolation=interpolation),
                transforms.ToTensor(),
                transforms.Normalize(
                    mean=torch.tensor(data_config["mean"]), std=torch.tensor(data_config["std"])
                ),
            ]
        )
    raise ValueError(f"preprocess must be 'timm' or 'resize', got {mode!r}")


class ImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """The images at ``paths``, loaded with :func:`load_oriented` and transformed; each
    item is ``(tensor, EXIF orientation tag)``."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, orientation = load_oriented(self.paths[index])
        return self.transform(image), orientation


class ImageBatches:
    """Batches of transformed images, in the order of ``paths``; while they are iterated,
    :attr:`exif_orientation` receives each image's EXIF orientation tag (0: none).

    Without worker processes, the images are read on a background thread one batch
    ahead of the caller (:func:`_read_ahead`), so that decoding overlaps the forward pass.
    """

    def __init__(self, loader: torch.utils.data.DataLoader[tuple[torch.Tensor, int]],
                 n_images: int):
        self.loader = loader
        self.exif_orientation: NDArray[np.uint16] = np.zeros(n_images, np.uint16)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        start = 0
        batches = iter(self.loader) if self.loader.num_workers else _read_ahead(self.loader)
        for batch, orientation in batches:
            self.exif_orientation[start:start + len(orientation)] = orientation.numpy()
            start += len(orientation)
            yield batch

    @property
    def exif_transposed(self) -> int:
        """How many images were flipped or rotated to their EXIF orientation."""
        return int(np.isin(self.exif_orientation, _TRANSPOSED).sum())


_END = object()


def _read_ahead(batches: Iterator[Any] | torch.utils.data.DataLoader[Any]) -> Iterator[Any]:
    """The items of ``batches``, each produced on a background thread while the caller
    works on the one before; an error there is raised here, at the item it replaced.

    The thread runs its torch operations (a transform's ``ToTensor``, ``Normalize``, the
    batch's ``stack``) on one intra-op thread, its own OpenMP setting: on two threads
    each of these small operations is a parallel region whose second thread is busy with
    the forward pass (on a loaded 2-core machine 30-50 ms per image instead of 1-2 ms).
    The values do not depend on the thread count (elementwise operations and copies).
    Closing the generator stops the thread after the item it is reading.
    """
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()
    started = threading.Event()
    threads = torch.get_num_threads()

    def offer(item: Any, error: BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put((item, error), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            torch.set_num_threads(1)  # this thread's OpenMP setting (and torch's default)
        finally:
            started.set()
        try:
            for item in batches:
                if not offer(item, None):
                    return
            offer(_END, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            offer(_END, exc)

    thread = threading.Thread(target=produce, name="image-reader", daemon=True)
    thread.start()
    started.wait()
    torch.set_num_threads(threads)  # torch's default for new threads, as before
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def image_loader(
    paths: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
) -> ImageBatches:
    """Batches of transformed images, in the order of ``paths``."""
    return ImageBatches(torch.utils.data.DataLoader(
        ImageDataset(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    ), len(paths))
