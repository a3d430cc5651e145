"""The ``folders`` image source (a folder per concept, the THINGS layout), its concept
table, the shared sampler with ``images_per_average``, the words it hands the word models,
and the image-source interface every source implements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from emergence.errors import ConfigError
from emergence.io import read_tsv
from emergence.sources.common import Concept, read_concepts, read_manifest
from emergence.sources.images.folders import read_concept_table, read_label_map
from emergence.sources.images.groups import sample_groups
from emergence.sources.images.listing import Skipped
from emergence.sources.images.spec import (
    EmojiSource,
    FolderSource,
    ImageNetSource,
    ImageSourceSpec,
)
from emergence.sources.words.lexicon import Lexicon

# concept id -> number of images (few_one has too few for 2 groups x 2 averaged)
TREE = {"aardvark": 5, "bat1": 4, "bat2": 4, "ice_cream": 6, "few_one": 3}


def draw(path: Path, seed: int) -> None:
    """A small distinct drawing: coloured ellipse and rectangle on white."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (40, 32), "white")
    pen = ImageDraw.Draw(img)
    x, y = rng.integers(0, 20, size=2)
    pen.ellipse((int(x), int(y), int(x) + 18, int(y) + 12), fill=tuple(rng.integers(0, 255, 3)))
    pen.rectangle((2, 2, 10, int(y) + 8), fill=tuple(rng.integers(0, 255, 3)))
    img.save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "things"
    seed = 0
    for concept, n in TREE.items():
        (root / concept).mkdir(parents=True)
        for i in range(n):
            draw(root / concept / f"{concept}_{i:02d}{'.jpg' if i % 2 else '.png'}", seed)
            seed += 1
    (root / "aardvark" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    return root


def outputs(tmp_path: Path, spec: ImageSourceSpec) -> dict[str, str]:
    return spec.outputs(str(tmp_path / "results"))


def test_folders_without_table(tree: Path, tmp_path: Path) -> None:
    spec = FolderSource(path=str(tree), images_per_concept=2)
    out = outputs(tmp_path, spec)
    (tmp_path / "results" / "images").mkdir(parents=True)
    rows, skipped = spec.build(out, seed=3)
    assert spec.group_names() == ["1", "2"]
    notes = str(tree / "aardvark" / "notes.txt")
    assert skipped == [Skipped("aardvark", notes, "not a format PIL reads (.txt)")]
    assert [r.wnid for r in rows if r.group == "1"] == sorted(TREE)
    assert {r.wnid: r.concept for r in rows}["ice_cream"] == "ice cream"
    assert {r.wnid: r.concept for r in rows}["bat1"] == "bat1"  # sense digits: the table's job
    assert read_manifest(out["manifest"]) == rows
    assert all(Path(r.path).parent.name == r.wnid for r in rows)
    concepts = read_concepts(out["concepts"])
    assert concepts["ice_cream"] == Concept("ice_cream", "ice cream", "", "")
    assert read_tsv(out["skipped"], ["wnid", "path", "reason"]) == [skipped[0]._asdict()]
    again, _ = spec.build(out, seed=3)
    assert again == rows
    other, _ = spec.build(out, seed=4)
    assert other != rows


def test_folders_average_and_skip(tree: Path, tmp_path: Path) -> None:
    spec = FolderSource(path=str(tree), images_per_concept=2, images_per_average=2)
    out = outputs(tmp_path, spec)
    (tmp_path / "results" / "images").mkdir(parents=True)
    rows, skipped = spec.build(out, seed=1)
    assert skipped[1:] == [("few_one", "", "3 image(s), 4 needed")]
    assert read_tsv(out["skipped"], ["wnid", "path", "reason"])[1:] == [
        {"wnid": "few_one", "path": "", "reason": "3 image(s), 4 needed"}]
    assert len(rows) == 4 * 2 * 2
    for cid in ("aardvark", "bat1"):
        g1 = [r.path for r in rows if r.group == "1" and r.wnid == cid]
        g2 = [r.path for r in rows if r.group == "2" and r.wnid == cid]
        assert len(g1) == len(g2) == 2 and not set(g1) & set(g2)
    assert "few_one" not in read_concepts(out["concepts"])
    assert read_manifest(out["manifest"]) == rows


def test_sampler_per_average_splits_one_draw() -> None:
    images = {"a": [f"/x/a{i}.png" for i in range(9)], "b": [f"/x/b{i}.png" for i in range(7)]}
    concepts = [("a", "a"), ("b", "b")]
    single, _ = sample_groups(images, concepts, 6, seed=5)
    averaged, _ = sample_groups(images, concepts, 2, seed=5, per_average=3)
    # the same seeded draw of 6 images per concept, cut into 2 groups of 3
    assert sorted(r.path for r in single) == sorted(r.path for r in averaged)
    for cid in "ab":
        draw6 = [r.path for r in single if r.wnid == cid]
        assert [r.path for r in averaged if r.wnid == cid and r.group == "1"] == draw6[:3]
        assert [r.path for r in averaged if r.wnid == cid and r.group == "2"] == draw6[3:]
    with pytest.raises(ValueError, match="images per average must be a positive integer"):
        sample_groups(images, concepts, 2, seed=5, per_average=0)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_concept_table_tsv_csv_and_columns(tree: Path, tmp_path: Path) -> None:
    tsv = write(tmp_path / "c.tsv", "concept_id\tword\tdefinition\twnid\n"
                "bat1\tbat\tnocturnal flying mammal\tn02139199\n"
                "ice_cream\tice cream\t\tn07614500\n\n")
    assert read_concept_table(tsv) == [
        Concept("bat1", "bat", "nocturnal flying mammal", "n02139199"),
        Concept("ice_cream", "ice cream", "", "n07614500")]
    csv = write(tmp_path / "things.csv", 'Word,uniqueID,"Definition, long"\n'
                'bat,bat2,"club used for hitting a ball"\naardvark,aardvark,\n')
    cols = {"id": "uniqueID", "word": "Word", "definition": "Definition, long"}
    assert read_concept_table(csv, cols) == [
        Concept("bat2", "bat", "club used for hitting a ball"), Concept("aardvark", "aardvark")]
    # only ids: words from the folder names
    only = write(tmp_path / "ids.tsv", "concept_id\nice_cream\n")
    assert read_concept_table(only) == [Concept("ice_cream", "ice cream")]

    spec = FolderSource(path=str(tree), images_per_concept=2,
                        table={"path": str(csv), **cols})
    assert spec.inputs() == {"table": str(csv)}
    out = outputs(tmp_path, spec)
    (tmp_path / "results" / "images").mkdir(parents=True)
    rows, _ = spec.build(out, seed=0, inputs=spec.inputs())
    assert [(r.wnid, r.concept) for r in rows if r.group == "2"] == [
        ("bat2", "bat"), ("aardvark", "aardvark")]  # table order; other folders left out


@pytest.mark.parametrize(("text", "columns", "match"), [
    ("id\tword\nbat1\tbat\n", None, r"c\.tsv: concept table lacks column\(s\) 'concept_id'"),
    ("concept_id\tname\nbat1\tbat\n", {"word": "Word"}, r"lacks column 'Word' \(images.table.word"),
    ("concept_id\tword\nbat1\tbat\nbat1\tbat\n", None,
     r"c\.tsv:3: duplicate concept id 'bat1' \(first on line 2\)"),
    ("concept_id\tword\nbat1\t\n", None, r"c\.tsv:2: empty word for concept 'bat1'"),
    ("concept_id\twnid\nbat1\tbat.n.01\n", None, r"wnid 'bat.n.01' of concept 'bat1' is not"),
    ("concept_id\tword\n", None, r"c\.tsv: concept table has no rows"),
])
def test_concept_table_errors(tmp_path: Path, text: str, columns: dict[str, str] | None,
                              match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        read_concept_table(write(tmp_path / "c.tsv", text), columns)
    assert "\n" not in str(err.value)


def test_concept_table_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"c\.xlsx: concept table must be .tsv"):
        read_concept_table(write(tmp_path / "c.xlsx", "concept_id\nbat1\n"))


def test_folder_errors(tree: Path, tmp_path: Path) -> None:
    out = outputs(tmp_path, FolderSource(path=str(tree)))
    (tmp_path / "results" / "images").mkdir(parents=True)
    unknown = write(tmp_path / "u.tsv", "concept_id\nbat1\nbat3\n")
    spec = FolderSource(path=str(tree), images_per_concept=2, table={"path": str(unknown)})
    with pytest.raises(ValueError, match=r"u\.tsv: concept id 'bat3' has no folder in .*things"):
        spec.build(out, inputs=spec.inputs())
    (tree / "empty").mkdir()
    with pytest.raises(ValueError, match=r"things/empty: empty concept folder"):
        FolderSource(path=str(tree), images_per_concept=2).build(out)
    draw(tree / "stray.png", 99)
    with pytest.raises(ValueError, match=r"stray.png: image outside a concept folder"):
        FolderSource(path=str(tree), images_per_concept=2).build(out)
    (tree / "stray.png").unlink()
    one = write(tmp_path / "a.tsv", "concept_id\naardvark\n")
    with pytest.raises(ValueError, match="things: no concept has 40 images"):
        FolderSource(path=str(tree), images_per_concept=20, images_per_average=2,
                     table={"path": str(one)}).build(out, inputs={"table": str(one)})
    assert not Path(out["manifest"]).exists()


def test_specs_one_interface(tmp_path: Path) -> None:
    """Every source: its inputs, outputs and rule params from the spec; the existing
    sources' params and files are unchanged by the new keys."""
    emoji = ImageSourceSpec.from_config({"source": "emoji", "concepts": "c.tsv",
                                         "styles": ["twemoji"], "render_size": 64})
    assert emoji.rule_params(7) == {"images": {"source": "emoji", "styles": ["twemoji"],
                                               "render_size": 64}}
    assert emoji.inputs() == {"table": "c.tsv"}
    assert emoji.outputs("r") == {"manifest": "r/images/manifest.tsv", "images": "r/images/png"}
    assert emoji.DIRECTORIES == ("images",)
    net = ImageSourceSpec.from_config({"source": "imagenet-val", "path": "v", "labels": "l.csv",
                                       "images_per_concept": 5, "images_per_average": 1})
    assert net.rule_params(7) == {"images": {"source": "imagenet-val", "path": "v",
                                             "labels": "l.csv", "images_per_concept": 5},
                                  "seed": 7}
    assert net.inputs() == {"labels": "l.csv"}
    assert set(net.outputs("r")) == {"manifest", "skipped"}
    avg = ImageSourceSpec.from_config({"source": "imagenetv2", "images_per_average": 3})
    assert avg.params()["images_per_average"] == 3
    table = {"path": "t.csv", "id": "uniqueID"}
    folders = ImageSourceSpec.from_config({"source": "folders", "path": "things",
                                           "table": table, "images_per_concept": 2})
    assert isinstance(folders, FolderSource)
    assert folders.params() == {"source": "folders", "path": "things", "table": table,
                                "images_per_concept": 2}
    assert ImageSourceSpec.from_params(folders.params()) == folders
    assert set(folders.outputs("r")) == {"manifest", "skipped", "concepts"}
    with pytest.raises(ConfigError, match="'images.images_per_average': source 'emoji'"):
        ImageSourceSpec.from_config({"source": "emoji", "concepts": "c.tsv",
                                     "images_per_average": 2})
    with pytest.raises(ConfigError, match="images.table: needs 'path'"):
        ImageSourceSpec.from_config({"source": "folders", "path": "x", "table": {"id": "a"}})
    with pytest.raises(ConfigError, match=r"'images.path': things does not exist"):
        folders.check_data_paths(tmp_path)
    (tmp_path / "things").mkdir()
    with pytest.raises(ConfigError, match=r"'images.table.path': t.csv does not exist"):
        folders.check_data_paths(tmp_path)
    assert isinstance(net, ImageNetSource) and isinstance(emoji, EmojiSource)


def test_lexicon_of_a_concept_table() -> None:
    lex = Lexicon({"bat1": Concept("bat1", "bat", "nocturnal mammal", ""),
                   "ice_cream": Concept("ice_cream", "ice cream", "", "n07614500"),
                   "thing": Concept("thing", "thing")})
    assert lex.lemmas(["bat1", "ice_cream"]) == {"bat1": [], "ice_cream": ["ice cream",
                                                                           "icecream"]}
    glosses = lex.glosses(["bat1", "ice_cream"])
    assert glosses["bat1"] == "nocturnal mammal"
    assert glosses["ice_cream"].startswith("frozen dessert")
    with pytest.raises(ValueError, match=r"1 concept\(s\) without a definition or wnid .*'thing'"):
        lex.glosses(["bat1", "thing"])
    with pytest.raises(ValueError, match="'nope' is in the manifest but not in the concept"):
        lex.lemmas(["nope"])


def test_label_map(tmp_path: Path) -> None:
    good = write(tmp_path / "m.csv", "label,concept_id\nn02139199,bat1\n3,bat2\nn02140049,bat1\n")
    assert read_label_map(good) == {"n02139199": "bat1", "3": "bat2", "n02140049": "bat1"}
    with pytest.raises(ValueError, match=r"m.tsv:3: label 'n1' listed twice \(first on line 2\)"):
        read_label_map(write(tmp_path / "m.tsv", "label\tconcept_id\nn1\ta\nn1\tb\n"))
    with pytest.raises(ValueError, match=r"label map \(one_vs_two.label_map\) lacks column"):
        read_label_map(write(tmp_path / "m.tsv", "label\tconcept\nn1\ta\n"))


def test_files_pattern_reads_one_folder_per_image_set(tmp_path: Path) -> None:
    """`images.files: "*/{concept_id}.png"`: the demo's layout (a folder per style, files
    named by concept), read through the table; without a table or a match, one line."""
    root = tmp_path / "png"
    ids = ["n01", "n02", "n03", "n04", "n05"]
    for s, style in enumerate(("twemoji", "openmoji")):
        (root / style).mkdir(parents=True)
        for c, cid in enumerate(ids):
            draw(root / style / f"{cid}.png", 10 * s + c)
    table = tmp_path / "table.tsv"
    table.write_text("id\tword\n" + "".join(f"{cid}\tword{c}\n" for c, cid in enumerate(ids)))
    spec = FolderSource.from_config({"source": "folders", "path": str(root),
                                     "files": "*/{concept_id}.png", "images_per_concept": 2,
                                     "table": {"path": str(table), "id": "id"}})
    assert spec.params()["files"] == "*/{concept_id}.png"
    out = outputs(tmp_path, spec)
    rows, skipped = spec.build(out, seed=3, inputs=spec.inputs())
    assert not skipped and len(rows) == 10
    for cid in ids:  # each concept: its two styles, one per group
        mine = sorted((r.group, Path(r.path).parent.name) for r in rows if r.wnid == cid)
        assert [g for g, _ in mine] == ["1", "2"]
        assert {s for _, s in mine} == {"twemoji", "openmoji"}
    assert [r.wnid for r in read_manifest(out["manifest"]) if r.group == "1"] == ids
    no_table = FolderSource.from_config({"source": "folders", "path": str(root),
                                         "files": "*/{concept_id}.png"})
    with pytest.raises(ValueError, match=r"needs images.table"):
        no_table.build(outputs(tmp_path / "b", no_table), seed=3, inputs={})
    (table).write_text("id\tword\nn01\tword0\nn09\tword9\n")
    with pytest.raises(ValueError, match=r"no image matches '\*/n09.png' \(images.files\)"):
        spec.build(outputs(tmp_path / "c", spec), seed=3, inputs=spec.inputs())
