"""Where the arithmetic runs: ``"auto"`` means CUDA when available, else CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else via ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
