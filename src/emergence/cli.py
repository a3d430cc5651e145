"""The ``emergence`` command: ``emergence layers MODEL`` lists a model's hookable modules.

``MODEL`` is a timm name (random init unless ``--pretrained``) or
``python:package.module:function`` (a factory, as ``source: python`` in the config). One
forward pass of a dummy batch (one image of the model's input size, zeros) with a hook on
every module gives each module's output shape; the table lists them in network order, the
path to write in a network's ``layers:``. Outputs ``(batch, tokens, dim)`` are marked: a
layer entry's ``tokens:`` (all, cls, mean) applies to them
(:mod:`emergence.extraction.tokens`).
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ModuleOutput", "layers_table", "main", "module_outputs"]


@dataclass
class ModuleOutput:
    """One module's output in the probe pass.

    Attributes
    ----------
    path : str
        Its path in ``named_modules()`` (``pixels``: the preprocessed input).
    kind : str
        Its class name.
    shape : tuple of int, optional
        Output shape without the batch dimension; ``None`` when the output is not a tensor.
    calls : int
        How often it ran (a layer must run exactly once).
    detail : str
        Not a tensor: the output's type; a token output: the ``tokens:`` choices that
        apply to it.
    layout : str
        A token output: what its tokens are (:class:`~emergence.extraction.tokens.TokenLayout`).
    """

    path: str
    kind: str
    shape: tuple[int, ...] | None = None
    calls: int = 0
    detail: str = ""
    layout: str = ""

    @property
    def hookable(self) -> bool:
        return self.calls == 1 and self.shape is not None

    @property
    def tokens(self) -> bool:
        return self.hookable and self.shape is not None and len(self.shape) == 2 \
            and self.path != "pixels"


def module_outputs(net: Any, input_size: Sequence[int]) -> list[ModuleOutput]:
    """Every module's output for one dummy image of ``input_size`` ``(C, H, W)``, in
    ``named_modules()`` order, after ``pixels``."""
    import torch

    from emergence.extraction.forward import deterministic
    from emergence.extraction.tokens import patch_count, token_layout

    found = {name: ModuleOutput(name, type(module).__name__)
             for name, module in net.named_modules() if name}
    patches: dict[str, int] = {}

    def hook_for(name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            entry = found[name]
            entry.calls += 1
            if isinstance(output, torch.Tensor):
                entry.shape = tuple(int(d) for d in output.shape[1:])
            else:
                entry.detail = f"returns {type(output).__name__}"
            if name.split(".")[-1] == "patch_embed":
                count = patch_count(module, output)
                if count is not None:
                    patches[name] = count
        return hook

    modules = dict(net.named_modules())
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in found]
    try:
        with deterministic(), torch.inference_mode():
            net.eval()(torch.zeros((1, *input_size)))
    finally:
        for handle in handles:
            handle.remove()
    for entry in found.values():
        if entry.tokens:
            assert entry.shape is not None
            layout = token_layout(net, entry.path, entry.shape[0], patches)
            choices = ["all"] + ["cls"] * layout.class_token + \
                ["mean"] * (layout.prefix is not None)
            entry.detail, entry.layout = "|".join(choices), layout.note
    return [ModuleOutput("pixels", "input", tuple(input_size), 1), *found.values()]


def _shape(entry: ModuleOutput) -> str:
    if entry.calls == 0:
        return "(not run)"
    if entry.shape is None:
        return "(not a tensor)"
    return " x ".join(map(str, entry.shape)) or "scalar"


def layers_table(entries: Sequence[ModuleOutput], *, depth: int | None = None,
                 match: str | None = None) -> str:
    """The table: module path, class, output shape, features, and a note (``T``: a token
    output, ``tokens:`` applies; ``-``: not hookable, why)."""
    from emergence.sources.models.layers import _glob

    rows = []
    for entry in entries:
        if depth is not None and entry.path.count(".") >= depth:
            continue
        if match is not None and not (_glob(match, [entry.path])
                                      or fnmatch.fnmatchcase(entry.path, match)):
            continue
        if not entry.hookable:
            note = f"- runs {entry.calls}x per pass, not hookable" if entry.calls > 1 else \
                f"- {entry.detail or 'not run'}, not hookable"
        elif entry.tokens:
            note = f"T  tokens: {entry.detail}"
        else:
            note = ""
        features = str(math.prod(entry.shape)) if entry.hookable and entry.shape else ""
        rows.append((entry.path, entry.kind, _shape(entry), features, note))
    header = ("module", "type", "output (no batch)", "features", "")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _spec(model: str, pretrained: bool, input_size: int | None) -> Any:
    from emergence.sources.models.spec import NetworkSpec

    if model.startswith("python:"):
        return NetworkSpec("layers", source="python", factory=model[len("python:"):],
                           input_size=input_size)
    return NetworkSpec("layers", model, pretrained=pretrained, input_size=input_size)


def _layers(args: argparse.Namespace) -> int:
    from emergence.sources.models.spec import load_model

    loaded = load_model(_spec(args.model, args.pretrained, args.input_size))
    size = tuple(int(d) for d in loaded.data_config["input_size"])
    entries = module_outputs(loaded.model, size)
    print(f"{loaded.name}: {loaded.weights}; input {' x '.join(map(str, size))}")
    print(layers_table(entries, depth=args.depth, match=args.match))
    layouts = dict.fromkeys(e.layout for e in entries if e.tokens)
    if layouts:
        print("\nT: output (batch, tokens, dim): a layer entry's `tokens:` applies (all = "
              "flatten, the default; cls = the class token; mean = the mean of the patch "
              "tokens). Token layouts:")
        print("\n".join(f"  {layout}" for layout in layouts))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emergence", description="semantic-emergence pipeline tools (the workflow "
        "itself runs with snakemake).")
    sub = parser.add_subparsers(dest="command", required=True)
    layers = sub.add_parser(
        "layers", help="list a model's hookable modules and their output shapes",
        description="List the module paths of MODEL with their output shapes for its input "
        "size (one forward pass of a dummy image), for a network's `layers:`.")
    layers.add_argument("model", metavar="MODEL",
                        help="timm model name, or python:package.module:function")
    layers.add_argument("--pretrained", action="store_true",
                        help="timm's pretrained weights (default: random init; the shapes "
                        "are the same)")
    layers.add_argument("--input-size", type=int, metavar="S",
                        help="square input size instead of the model's")
    layers.add_argument("--depth", type=int, metavar="D",
                        help="only module paths with at most D parts (blocks.0 has 2)")
    layers.add_argument("--match", metavar="GLOB",
                        help="only module paths matching GLOB (as in layers: blocks.*)")
    layers.set_defaults(run=_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; errors are one line on stderr and exit status 1."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"emergence {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
