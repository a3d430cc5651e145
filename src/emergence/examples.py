"""Example model factories for ``source: python`` networks (config/custom.yaml).

A factory is any importable function that returns an ``nn.Module`` (or a ``(module,
data_config)`` or ``(module, transform)`` pair, see :mod:`emergence.sources.models.factories`);
the workflow calls it under ``torch.manual_seed(seed)``. This one is a small CNN, random
init, to show the interface without a download.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["tiny_cnn"]


def tiny_cnn() -> tuple[nn.Module, dict[str, Any]]:
    """A four-layer CNN for 64 x 64 RGB input (random init) and its data config: resize the
    whole image to 64 px bilinearly, scale to [-1, 1]. Hookable layers: ``conv1``,
    ``conv2``, ``conv3``, ``fc``."""
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(32, 64, 3, padding=1)), ("relu3", nn.ReLU()),
        ("pool3", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(64, 100)),
    ]))
    data_config = {"input_size": (3, 64, 64), "interpolation": "bilinear",
                   "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 1.0}
    return net.eval(), data_config
