"""Images in, model input out: reading image files, the model's transform, the batch loader."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import timm.data
import torch
from PIL import Image
from torchvision import transforms

__all__ = ["ImageDataset", "image_loader", "load_image", "make_transform"]


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as 8-bit RGB.

    Greyscale, CMYK, YCbCr, 16-bit and palette images are converted; images with
    transparency (RGBA, LA, palette with a transparent colour) are composited on
    white. EXIF orientation is *not* applied (as in timm / torchvision loaders).

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


def _load_image(path: str | os.PathLike[str]) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
            img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


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


class ImageDataset(torch.utils.data.Dataset[torch.Tensor]):
    """The images at ``paths``, loaded with :func:`load_image` and transformed."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_image(self.paths[index]))


def image_loader(
    paths: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
) -> torch.utils.data.DataLoader[torch.Tensor]:
    """Batches of transformed images, in the order of ``paths``."""
    return torch.utils.data.DataLoader(
        ImageDataset(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
