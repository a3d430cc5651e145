"""Concept selection: images in every group, one vector per sense of a word, every word model."""

from __future__ import annotations

from emergence.concepts import select_concepts
from emergence.sources.common import ManifestRow


def rows(spec: list[tuple[str, str, list[str]]]) -> list[ManifestRow]:
    return [ManifestRow(g, w, c, f"{g}/{w}.png", "test") for w, c, groups in spec for g in groups]


def coverage(found: dict[str, bool]) -> list[dict[str, str]]:
    return [{"wnid": w, "found": "true" if f else "false", "reason": "" if f else "absent",
             "lemma": w, "token": w, "how": "exact"} for w, f in found.items()]


def test_kept_only_with_images_in_every_group_and_in_every_model() -> None:
    manifest = rows([("n1", "cat", ["1", "2"]), ("n2", "dog", ["1"]), ("n3", "crane", ["1", "2"]),
                     ("n4", "crane", ["1", "2"]), ("n5", "fox", ["1", "2"])])
    cov = {"a": coverage({"n1": True, "n2": True, "n3": True, "n4": True, "n5": True}),
           "b": coverage({"n1": True, "n2": True, "n3": True, "n4": True, "n5": False})}
    for record in (r for recs in cov.values() for r in recs if r["wnid"] in ("n3", "n4")):
        record["token"] = "crane"  # static vectors: one vector for both senses
    out = {r["wnid"]: r for r in select_concepts(manifest, ["1", "2"], "a", cov, intersect=True)}
    assert [w for w, r in out.items() if r["kept"]] == ["n1", "n3"]
    assert [out[w]["index"] for w in ("n1", "n3")] == [0, 1]
    assert out["n2"]["reason"] == "no image in group 2"
    assert out["n4"]["reason"] == "same vector as n3 in a (token 'crane')"
    assert out["n5"]["reason"] == "not in b: absent"
    # Without the intersection, model a's own coverage decides.
    own = {r["wnid"]: r for r in select_concepts(manifest, ["1", "2"], "a", cov, intersect=False)}
    assert own["n5"]["kept"] and own["n5"]["index"] == 2
