"""Export a network's layer features in thingsvision's layout (``emergence export-features``).

The features a ``source: features`` network reads (:mod:`emergence.sources.models.features`),
written from this pipeline's own forward pass: ``<out>/<layer>/features.npy`` (float32, one
row per image) for each layer and ``<out>/file_names.txt`` (the image of each row, one path
per line, as the manifest names it), as thingsvision's ``save_features`` writes them.

The forward pass is the activations job's own
(:func:`~emergence.extraction.extract.extract_statistics`, its raw rows kept), run group by
group over the manifest's images with the same batch size, device and threads: on the
CPU every row is then the very float32 vector the activations job reduced, so a network of
these features gives bit-identical statistics (``tests/test_features_network.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emergence.io import atomic_path
from emergence.sources.common import ManifestRow, group_rows
from emergence.sources.models.features import FILE_NAMES

__all__ = ["export_features"]


def export_features(spec: Any, rows: Sequence[ManifestRow], groups: Sequence[str],
                    out: str | os.PathLike[str], extraction: Mapping[str, Any],
                    *, progress: bool = False) -> dict[str, tuple[int, int]]:
    """Run ``spec``'s network (a :class:`~emergence.sources.models.spec.NetworkSpec`) over the
    manifest ``rows`` of ``groups`` and write each layer's features under ``out``.

    ``extraction`` is the config's ``extraction`` section (``batch_size``, ``device``,
    ``threads``, ``ram_budget_mb``, ``reuse_freed_memory``). An image in several groups is
    written once (its first group's row). The raw rows wait in one HDF5 file per group in a
    scratch folder under ``out`` (on disk: the demo's lite0 has ~3.7 MB of features per
    image at 224 px); each layer's ``features.npy`` is then written atomically, one layer
    in memory at a time.
    Returns each layer's ``(rows, F)``.
    """
    from emergence.device import job_device, uses_cuda
    from emergence.extraction.extract import extract_statistics
    from emergence.sources.models.layers import resolve_layers
    from emergence.sources.models.spec import load_model

    if spec.source == "features":
        raise ValueError(f"network {spec.name!r} is itself precomputed features (source: "
                         "features): export a network with a model")
    model = load_model(spec)
    layers = resolve_layers(model, spec.layers)
    device = job_device(extraction["device"], int(uses_cuda(extraction["device"])))
    names: list[str] = []
    picked: list[tuple[Path, list[int]]] = []  # each group's file and its new rows
    shapes = {}
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target) as scratch:
        for group in groups:
            selected = group_rows(rows, group)
            file = Path(scratch) / f"{group}.h5"
            extract_statistics(
                model, [r.path for r in selected], layers, file,
                batch_size=extraction["batch_size"], device=device,
                preprocess=spec.preprocess, keep_raw_max_features=np.iinfo(np.int64).max,
                ram_budget_bytes=extraction["ram_budget_mb"] << 20,
                threads=extraction["threads"],
                reuse_freed_memory=extraction["reuse_freed_memory"], progress=progress)
            seen = set(names)
            new = [i for i, r in enumerate(selected) if r.path not in seen]
            names += [selected[i].path for i in new]
            picked.append((file, new))
        for layer in layers:  # one layer in memory at a time
            parts = []
            for file, new in picked:
                with h5py.File(file, "r") as f:
                    parts.append(f[f"layers/{layer.name}/activations"][()][new])
            values = np.concatenate(parts)
            (target / layer.name).mkdir(exist_ok=True)
            with atomic_path(target / layer.name / "features.npy") as tmp, \
                    open(tmp, "wb") as fh:
                np.save(fh, values)
            shapes[layer.name] = (int(values.shape[0]), int(values.shape[1]))
    with atomic_path(target / FILE_NAMES) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return shapes
