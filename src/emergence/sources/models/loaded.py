"""A loaded network: what :func:`emergence.sources.models.spec.load_model` and a factory
(:mod:`emergence.sources.models.factories`) return, and the input size both read.

A leaf (it imports no other model module), so that the spec and the factories import it at
the top, without a cycle; torch is named for type checkers only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from emergence.sources.models.spec import NetworkSpec

__all__ = ["LoadedModel", "input_size"]


@dataclass
class LoadedModel:
    """A model in eval mode plus what is needed to feed and describe it.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in eval mode.
    name : str
        timm model name as given in the spec (e.g. ``"tf_efficientnet_lite0"``), or
        ``python:<factory>``.
    weights : str
        Human-readable provenance of the weights (hub id, checkpoint + sha256, seed, or
        the factory and the sha256 of its state dict).
    data_config : dict
        ``timm.data.resolve_data_config`` output (input_size, interpolation, mean, std,
        crop_pct, crop_mode), with ``input_size`` possibly overridden by the spec; only
        ``input_size`` (the transform's output) when ``transform`` is set.
    spec : NetworkSpec
        The spec the model was loaded from (for provenance).
    transform : callable, optional
        A factory's own transform (PIL image -> tensor), used instead of ``preprocess``.
    """

    model: nn.Module
    name: str
    weights: str
    data_config: dict[str, Any]
    spec: NetworkSpec
    transform: Callable[[Any], Any] | None = None


def input_size(value: Any) -> tuple[int, int, int]:
    """``(c, h, w)`` of a network's ``input_size``: ``s`` (square, 3 channels), ``(h, w)``
    or ``(c, h, w)``."""
    if isinstance(value, bool):
        raise ValueError(f"input_size must be an int, [h, w] or [c, h, w], got {value!r}")
    if isinstance(value, int):
        return (3, value, value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        size = tuple(int(v) for v in value)
        if len(size) == 2:
            return (3, *size)  # type: ignore[return-value]
        if len(size) == 3:
            return size  # type: ignore[return-value]
    raise ValueError(f"input_size must be an int, [h, w] or [c, h, w], got {value!r}")
