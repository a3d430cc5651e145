"""Token outputs: a layer whose output is ``(batch, tokens, dim)`` and its ``tokens:`` choice.

Vision transformers (and the transformer stages of hybrids) output a sequence of tokens per
image: the patches, after the model has added them, its *prefix tokens* at the start (the
class token first, then distillation or register tokens). A layer entry's ``tokens`` says
which units of such an output are the layer's features:

* ``all`` (the default): every unit, the output flattened, as for any other layer: what the
  paper's "all units" of a layer means. Outputs of another rank are flattened the same way.
* ``cls``: the class token (token 0). An error when the output has no class token: the model
  declares none (timm: ``class_token=False``, ``num_prefix_tokens == 0``, e.g. with
  ``global_pool='avg'``), the output is the patches before the class token is added (the
  patch embedding), or the model does not say (it has none of timm's ``cls_token``,
  ``has_class_token`` or ``num_prefix_tokens``).
* ``mean``: the mean over the *patch* tokens, prefix tokens excluded, as timm's own
  ``global_pool='avg'`` pools: the class and register tokens are not parts of the image
  (a learned start value that attention writes into), and keeping them would weigh a
  distilled model's two prefix tokens differently from a plain one's one. With no prefix
  tokens it is the mean over all tokens.

Which tokens are prefix tokens is read from the model, not guessed: the nearest module at or
above the hooked one that declares timm's attributes (``num_prefix_tokens``,
``has_class_token``, ``cls_token``), and the number of patches its ``patch_embed`` outputs
in the probe pass. An output with that many tokens has no prefix tokens; one with that many
plus ``num_prefix_tokens`` has them first; any other count (a pooled or resampled sequence)
stops ``cls`` and ``mean`` with one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emergence.sources.models.layers import TOKENS

__all__ = ["TokenLayout", "TokenReduction", "patch_embeds", "token_layout"]

#: timm's attributes that say a model has prefix tokens (a class token first).
_DECLARING = ("num_prefix_tokens", "has_class_token", "cls_token")


@dataclass(frozen=True)
class TokenLayout:
    """What the tokens of one ``(tokens, dim)`` output are.

    Attributes
    ----------
    prefix : int or None
        Prefix tokens at the start of this output; ``None``: the count matches neither the
        patches nor the patches plus the prefix tokens (unknown).
    class_token : bool
        Whether token 0 of this output is a class token.
    note : str
        Where that was read from, for messages and the ``emergence layers`` table.
    """

    prefix: int | None
    class_token: bool
    note: str


def _declaring(net: nn.Module, module: str) -> tuple[str, nn.Module] | None:
    """The nearest module at or above ``module`` that declares timm's prefix-token
    attributes, with its path; ``None`` if none does."""
    modules = dict(net.named_modules())
    parts = module.split(".") if module else []
    for k in range(len(parts), -1, -1):
        path = ".".join(parts[:k])
        candidate = modules.get(path)
        if candidate is not None and any(hasattr(candidate, a) for a in _DECLARING):
            return path, candidate
    return None


def _declared(owner: nn.Module) -> tuple[int, bool]:
    """``(num_prefix_tokens, has a class token)`` as the module declares them."""
    if hasattr(owner, "has_class_token"):
        has_cls = bool(owner.has_class_token)
    else:
        has_cls = getattr(owner, "cls_token", None) is not None
    return int(getattr(owner, "num_prefix_tokens", int(has_cls)) or 0), has_cls


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def patch_embeds(net: nn.Module, modules: Sequence[str]) -> dict[str, str]:
    """``{patch_embed path: declaring module path}`` for the declaring modules above
    ``modules`` that have a ``patch_embed``: hook them in the probe pass and hand their
    outputs' patch counts (:func:`patch_count`) to :func:`token_layout`."""
    found: dict[str, str] = {}
    names = dict(net.named_modules())
    for module in modules:
        owner = _declaring(net, module)
        if owner is not None and _join(owner[0], "patch_embed") in names:
            found[_join(owner[0], "patch_embed")] = owner[0]
    return found


def patch_count(patch_embed: nn.Module, output: Any) -> int | None:
    """Patches in a patch embedding's output: ``(B, N, D)``, or ``(B, H, W, D)`` (timm's
    NHWC format) / ``(B, D, H, W)``; ``None`` for anything else."""
    if not isinstance(output, torch.Tensor):
        return None
    if output.ndim == 3:
        return int(output.shape[1])
    if output.ndim == 4:
        nhwc = str(getattr(patch_embed, "output_fmt", "")).endswith("NHWC")
        return int(math.prod(output.shape[1:3] if nhwc else output.shape[2:4]))
    return None


def token_layout(net: nn.Module, module: str, n_tokens: int,
                 patches: Mapping[str, int]) -> TokenLayout:
    """The layout of ``module``'s ``(n_tokens, dim)`` output in ``net``; ``patches``:
    the patch count of each patch embedding of :func:`patch_embeds`, from the probe."""
    owner = _declaring(net, module)
    if owner is None:
        return TokenLayout(0, False, "the model declares no class token (none of timm's "
                                     "num_prefix_tokens, has_class_token, cls_token)")
    path, declaring = owner
    prefix, has_cls = _declared(declaring)
    where = f"module {path!r}" if path else "the model"
    declared = f"{where} has num_prefix_tokens={prefix}, class token: {'yes' if has_cls else 'no'}"
    n_patches = patches.get(_join(path, "patch_embed"))
    if n_patches is None:
        return TokenLayout(prefix, has_cls and prefix > 0, declared)
    if n_tokens == n_patches + prefix:
        return TokenLayout(prefix, has_cls and prefix > 0,
                           f"{declared}; {n_tokens} tokens = {prefix} prefix + {n_patches} patches")
    if n_tokens == n_patches:
        return TokenLayout(0, False, f"{declared}; its {n_tokens} tokens are the patches only "
                                     "(prefix tokens are added after the patch embedding)")
    return TokenLayout(None, False, f"{declared}; {n_tokens} tokens are neither its {n_patches} "
                                    f"patches nor {n_patches} + {prefix} prefix tokens")


class TokenReduction:
    """One layer's ``tokens`` choice applied to its output, decided from the probe's shape.

    Attributes
    ----------
    shape : tuple of int
        The features' shape (without the batch dimension) after the reduction.
    attrs : dict
        The layer attributes recorded in the activations file: ``tokens``, ``output_shape``
        (the hooked output's), and ``prefix_tokens`` (those ``cls``/``mean`` found in it).
    """

    def __init__(self, net: nn.Module, name: str, module: str, tokens: str,
                 output_shape: tuple[int, ...], patches: Mapping[str, int]) -> None:
        if tokens not in TOKENS:
            raise ValueError(f"layer {name!r}: tokens must be one of {', '.join(TOKENS)}, "
                             f"got {tokens!r}")
        self.tokens = tokens
        self.attrs: dict[str, Any] = {"tokens": tokens, "output_shape": list(output_shape)}
        self.prefix = 0
        if tokens == "all":
            self.shape = output_shape
            return
        if len(output_shape) != 2:
            raise ValueError(
                f"layer {name!r}: tokens: {tokens} applies to (batch, tokens, dim) outputs, "
                f"module {module!r} outputs (batch, {', '.join(map(str, output_shape))}); "
                "remove 'tokens' or use tokens: all")
        layout = token_layout(net, module, output_shape[0], patches)
        if layout.prefix is None:
            raise ValueError(f"layer {name!r}: tokens: {tokens} cannot tell the prefix tokens "
                             f"from the patches ({layout.note}); use tokens: all")
        if tokens == "cls" and not layout.class_token:
            raise ValueError(f"layer {name!r}: tokens: cls, but module {module!r}'s output has "
                             f"no class token ({layout.note}); use tokens: mean or all")
        self.prefix = layout.prefix
        self.attrs["prefix_tokens"] = layout.prefix
        self.shape = (output_shape[1],)

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        """The batch's features ``(batch, features)``."""
        if self.tokens == "cls":
            return value[:, 0, :]
        if self.tokens == "mean":
            return value[:, self.prefix:, :].mean(dim=1)
        return value.reshape(value.shape[0], -1)
