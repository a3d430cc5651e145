"""Image files as a user leaves them (issue #19, items 1, 3 and 6).

* The image files are inputs of the DAG: an image overwritten, added or removed after a
  finished run reruns the images rule and what reads its manifest; an unreadable image the
  user removed is gone from the rebuilt manifest (the images rule's ``listing`` param,
  :meth:`~emergence.sources.images.spec.ImageSourceSpec.fingerprint`).
* Nothing is skipped without a word: every format PIL reads is an image; broken links,
  other files and second names of a file are recorded in ``images/skipped.tsv`` and on the
  console; a broken concept-folder link or one folder for two concepts stops with one line.
* Names in Unicode NFC: a folder named decomposed (as macOS writes it) is the table's
  composed concept id; names that differ only in normalisation are an error showing both
  as code points.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emergence.io import read_tsv
from emergence.sources.common import code_points, imagenet_classes, read_manifest
from emergence.sources.images.folders import read_concept_table, read_label_map
from emergence.sources.images.imagenet import scan_images
from emergence.sources.images.listing import Skipped, image_suffixes
from emergence.sources.images.spec import FolderSource, ImageNetSource, ImageSourceSpec
from emergence.sources.words.matching import match_concept
from emergence.sources.words.vector_files import load_keyed_vectors
from tests.conftest import error_lines, run_snakemake

CREME = "crème brûlée"  # NFC, as typed in a table
CREME_NFD = unicodedata.normalize("NFD", CREME)  # as macOS names the folder


def draw(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> Path:
    """A small random RGB picture, in the format of ``path``'s suffix."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def later(path: Path, seconds: int = 5) -> None:
    """Move ``path``'s mtime on, as an edit made later than the first listing would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def tree(root: Path, concepts: dict[str, int], suffix: str = ".png") -> Path:
    seed = 0
    for concept, n in concepts.items():
        for i in range(n):
            draw(root / concept / f"{i:02d}{suffix}", seed)
            seed += 1
    return root


def plan_paths(spec: ImageSourceSpec, seed: int) -> list[str]:
    return [r.path for r in spec.plan(seed)[0]]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------
# 1. The image files are inputs of the DAG


def test_fingerprint_follows_the_images_the_manifest_draws(tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {"apple": 4, "dog": 3, "few": 1}, ".bmp")
    spec = FolderSource(path=str(root), images_per_concept=2)
    first = spec.fingerprint(seed=3)
    assert first is not None and len(first) == 64
    assert spec.fingerprint(seed=3) == first  # nothing changed: nothing reruns
    drawn = plan_paths(spec, 3)
    unused = sorted({str(p) for p in root.rglob("*.bmp")} - set(drawn)
                    - {str(root / "few" / "00.bmp")})
    assert unused

    # an image drawn, overwritten by another picture of the same size (BMP: same bytes)
    target = Path(drawn[0])
    size = target.stat().st_size
    draw(target, 99)
    later(target)
    assert target.stat().st_size == size
    second = spec.fingerprint(seed=3)
    assert second != first
    # ... by one of another size
    draw(target, 98, (20, 20))
    later(target, 10)
    third = spec.fingerprint(seed=3)
    assert third not in (first, second)

    # an image the seeded draw does not pick: no result depends on it, nothing reruns
    draw(Path(unused[0]), 97)
    later(Path(unused[0]), 20)
    assert spec.fingerprint(seed=3) == third

    # added: the concept that had too few images enters the manifest
    draw(root / "few" / "01.bmp", 96)
    fourth = spec.fingerprint(seed=3)
    assert fourth != third and any("/few/" in p for p in plan_paths(spec, 3))

    # removed (the user's answer to "cannot read image ... remove the file"): the new
    # manifest draws from what is there
    target.unlink()
    assert spec.fingerprint(seed=3) != fourth
    assert str(target) not in plan_paths(spec, 3)
    assert all(Path(p).is_file() for p in plan_paths(spec, 3))


def test_fingerprint_of_every_user_image_source(tmp_path: Path) -> None:
    """imagenet-folders and imagenet-val are listed the same way; emoji (the package's
    drawings) and imagenetv2 (a checksummed download) are not user files."""
    wnids = [w for w, _ in imagenet_classes()[:2]]
    root = tmp_path / "train"
    for k, wnid in enumerate(wnids):
        for i in range(2):
            draw(root / wnid / f"{wnid}_{i}.JPEG", 10 * k + i)
    folders = ImageNetSource(source="imagenet-folders", path=str(root), images_per_concept=2,
                             max_concepts=2)
    before = folders.fingerprint(seed=1)
    assert before is not None and not before.startswith("not listed")
    gone = root / wnids[1] / f"{wnids[1]}_0.JPEG"
    gone.unlink()
    assert folders.fingerprint(seed=1) != before

    val = tmp_path / "val"
    labels = tmp_path / "labels.txt"
    lines = []
    for i in range(4):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        draw(val / name, i)
        lines.append(f"{name} {wnids[i % 2]}\n")
    labels.write_text("".join(lines))
    flat = ImageNetSource(source="imagenet-val", path=str(val), labels=str(labels),
                          images_per_concept=2, max_concepts=2)
    before = flat.fingerprint(seed=1)
    draw(val / "ILSVRC2012_val_00000001.JPEG", 50, (30, 30))
    assert flat.fingerprint(seed=1) != before

    emoji = ImageSourceSpec.from_config({"source": "emoji", "concepts": "c.tsv"})
    v2 = ImageSourceSpec.from_config({"source": "imagenetv2", "path": str(tmp_path / "v2")})
    assert not emoji.listed() and emoji.fingerprint(1) is None
    assert not v2.listed() and v2.fingerprint(1) is None  # and nothing was downloaded
    assert not (tmp_path / "v2").exists()


def test_an_unlistable_folder_gives_a_fingerprint_the_job_then_explains(tmp_path: Path) -> None:
    spec = FolderSource(path=str(tmp_path / "nowhere"), images_per_concept=2)
    assert spec.fingerprint(seed=1) == (f"not listed: {tmp_path / 'nowhere'}: image folder not "
                                        "found (folders: one sub-folder of images per concept)")


def study(root: Path) -> dict:
    """A tiny folder study (4 concepts x 3 images, one folder named decomposed, a note and
    a broken image link) with a word2vec text file and a 64 px random CNN."""
    words = {"apple": "apple", "dog": "dog", "cat": "cat", CREME_NFD: CREME}
    rng = np.random.default_rng(0)
    for c, folder in enumerate(words):
        for i in range(3):
            draw(root / "images" / folder / f"{i}.png", 10 * c + i)
    (root / "images" / "dog" / "notes.txt").write_text("where the photos come from\n")
    (root / "images" / "cat" / "3.png").symlink_to(root / "gone" / "3.png")
    with open(root / "vectors.txt", "w") as fh:
        fh.write(f"{len(words)} 8\n")
        for word in words.values():
            vec = " ".join(f"{v:.5f}" for v in rng.standard_normal(8))
            fh.write(f"{word.replace(' ', '_')} {vec}\n")
    return {
        "seed": 3,
        "results": "results",
        "images": {"source": "folders", "path": "images", "images_per_concept": 2},
        "networks": {"cnn": {"source": "python", "factory": "emergence.examples:tiny_cnn",
                             "layers": ["pixels", "conv1"]}},
        "word_models": {"w2v": {"type": "keyedvectors", "path": "vectors.txt",
                                "format": "word2vec-text"}},
        "extraction": {"batch_size": 8, "device": "cpu", "threads": 1},
        "permutations": {"n": 4, "shards": 1, "batch_size": 4},
        "intervals": {"method": "none"},
        "one_vs_two": {"n_permutations": 4},
        "figures": {"formats": ["png"]},
    }


def planned_rules(root: Path, cfg: dict, *targets: str) -> list[str]:
    """The rules `snakemake -n` would run for ``targets``, sorted ([] for nothing)."""
    proc = run_snakemake(root, cfg, "-n", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return []
    rules = []
    for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        rules.append(parts[0])
    return sorted(rules)


@pytest.mark.slow
def test_workflow_reruns_on_changed_images_and_recovers_from_a_removed_one(
        tmp_path: Path) -> None:
    """The issue's run (five Snakemake calls): after a finished run, nothing is planned
    again; an image overwritten is (images and what reads the manifest); an unreadable image
    stops its job, and once the user removes the file the same command works. On the way:
    the broken link and the note are on the console and in skipped.tsv, the decomposed
    folder is the word model's composed word."""
    cfg = study(tmp_path)
    res = tmp_path / "results"
    act = "results/activations/cnn/1.h5"
    vectors = "results/words/w2v/vectors.h5"
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", act, vectors)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    broken = tmp_path / "images" / "cat" / "3.png"
    assert [ln for ln in lines if ln.startswith(f"images: left out images/cat/3.png: broken "
                                                f"symbolic link (to {tmp_path}/gone/3.png)")]
    assert [ln for ln in lines if ln.startswith("images: 2 file(s) left out (1 broken symbolic "
                                                "link, 1 not a format PIL reads), 0 concept")]
    skipped = read_tsv(res / "images" / "skipped.tsv", ["wnid", "path", "reason"])
    assert [(s["wnid"], s["path"]) for s in skipped] == [("cat", str(broken.relative_to(tmp_path))),
                                                         ("dog", "images/dog/notes.txt")]
    manifest = read_manifest(res / "images" / "manifest.tsv")
    assert sorted({r.wnid for r in manifest}) == sorted(["apple", "cat", CREME, "dog"])
    coverage = read_tsv(res / "words" / "w2v" / "coverage.tsv")
    assert all(r["token"] for r in coverage), coverage  # crème brûlée found by its NFC word

    both = [act, vectors]
    assert planned_rules(tmp_path, cfg, *both) == []  # the listing is the same each time
    drawn = tmp_path / manifest[0].path  # group 1, read by the activations job
    draw(drawn, 78)
    later(drawn)
    assert planned_rules(tmp_path, cfg, *both) == ["activations", "images", "word_vectors"]

    # an unreadable image in group 1: its job stops and says to remove it
    drawn.write_bytes(drawn.read_bytes()[:60])
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", act)
    assert proc.returncode != 0
    assert [ln for ln in error_lines(proc.stderr)
            if f"{manifest[0].path}: cannot read image" in ln and "remove the file" in ln]
    drawn.unlink()  # (without the listing in the DAG: "image file not found")
    proc = run_snakemake(tmp_path, cfg, "--cores", "1", act)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = read_manifest(res / "images" / "manifest.tsv")
    assert manifest[0].path not in {r.path for r in again}
    assert all((tmp_path / r.path).is_file() for r in again)


# ------------------------------------------------------------------------------------------
# 3. No silent skipping


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".tif", ".tiff", ".bmp", ".JPG", ".jpeg"])
def test_every_format_pil_reads_is_an_image(tmp_path: Path, suffix: str) -> None:
    root = tree(tmp_path / "img", {"apple": 2, "dog": 2}, suffix)
    rows, skipped, _ = FolderSource(path=str(root), images_per_concept=2).plan(seed=1)
    assert skipped == [] and len(rows) == 4
    assert {Path(r.path).suffix for r in rows} == {suffix}


def test_image_suffixes_are_those_pil_decodes() -> None:
    suffixes = image_suffixes()
    assert {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".bmp", ".ppm"} <= suffixes
    # identified by PIL but not decoded here (stubs, no decoder, Ghostscript), or write-only
    assert not suffixes & {".h5", ".grib", ".bufr", ".wmf", ".mpg", ".eps", ".pdf", ".txt"}


def test_what_is_left_out_is_recorded_with_its_reason(tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {"apple": 3, "dog": 3, "cat": 2})
    (root / "apple" / "notes.txt").write_text("a note")
    (root / "apple" / ".DS_Store").write_text("hidden: not read, not recorded")
    (root / "apple" / "raw").mkdir()
    (root / "cat" / "02.png").symlink_to(tmp_path / "unmounted" / "cat.png")
    (root / "dog" / "03.png").symlink_to(root / "dog" / "00.png")  # a second name
    os.link(root / "apple" / "00.png", root / "cat" / "09.png")  # the same file, two concepts
    (root / "README").write_text("beside the concept folders")
    spec = FolderSource(path=str(root), images_per_concept=3)
    out = spec.outputs(str(tmp_path / "results"))
    rows, skipped = spec.build(out, seed=2)
    assert skipped == [
        Skipped("", str(root / "README"), "not a concept folder"),
        Skipped("apple", str(root / "apple" / "notes.txt"), "not a format PIL reads (.txt)"),
        Skipped("apple", str(root / "apple" / "raw"),
                "a folder (images are read one level deep)"),
        Skipped("cat", str(root / "cat" / "02.png"),
                f"broken symbolic link (to {tmp_path / 'unmounted' / 'cat.png'})"),
        Skipped("cat", str(root / "cat" / "09.png"),
                f"the same file as {root / 'apple' / '00.png'}"),
        Skipped("dog", str(root / "dog" / "03.png"),
                f"the same file as {root / 'dog' / '00.png'}"),
        Skipped("cat", "", "2 image(s), 3 needed"),
    ]
    assert read_tsv(out["skipped"], ["wnid", "path", "reason"]) == [s._asdict() for s in skipped]
    assert sorted({r.wnid for r in rows}) == ["apple", "dog"]


def test_report_names_links_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from emergence.sources.images.listing import report_skipped

    skipped = [Skipped("a", "img/a/x.png", "broken symbolic link (to /mnt/x.png)"),
               Skipped("a", "img/a/n.txt", "not a format PIL reads (.txt)"),
               Skipped("b", "img/b/y.png", "the same file as img/a/y.png"),
               Skipped("a", "", "1 image(s), 2 needed")]
    log = logging.getLogger("emergence.test_report")
    with caplog.at_level(logging.INFO, logger=log.name):
        report_skipped(log, skipped, "results/images/skipped.tsv")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "left out img/a/x.png: broken symbolic link (to /mnt/x.png)",
        "left out img/b/y.png: the same file as img/a/y.png",
        "3 file(s) left out (1 broken symbolic link, 1 not a format PIL reads, 1 the same "
        "file as another), 1 concept(s) with too few images: see results/images/skipped.tsv"]
    assert sum("left out:" in r.getMessage() for r in caplog.records) == 4  # each, in the log


WARNING_JOB = """
import logging
from types import SimpleNamespace
from emergence.runner import start

log = start(SimpleNamespace(log=[{log!r}], output=[], threads=1, rule="images",
                            wildcards={{}}))
log.info("only in the log")
log.warning("left out img/a/x.png: broken symbolic link (to /mnt/x.png)")
"""


def test_a_jobs_warnings_are_one_line_each_on_the_console(tmp_path: Path) -> None:
    """What the images job reports with `report_skipped` reaches Snakemake's output."""
    log = tmp_path / "job.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"),
         *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", WARNING_JOB.format(log=str(log))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "images: left out img/a/x.png: broken symbolic link (to /mnt/x.png)"]
    assert "only in the log" in log.read_text() and "broken symbolic link" in log.read_text()


def test_a_broken_concept_folder_link_stops_with_one_line(tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {"apple": 2, "dog": 2})
    (root / "bird").symlink_to(tmp_path / "usb" / "bird")  # the drive is not mounted
    with pytest.raises(ValueError) as err:
        FolderSource(path=str(root), images_per_concept=2).plan(seed=1)
    assert str(err.value) == (f"{root / 'bird'}: broken symbolic link (to {tmp_path}/usb/bird) "
                              "in place of a concept folder (an unmounted drive?): mount it or "
                              "remove the link")


def test_two_concepts_in_one_folder_stop_with_one_line(tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {"dog": 2, "cat": 2})
    (root / "bird").symlink_to(root / "dog")
    with pytest.raises(ValueError) as err:
        FolderSource(path=str(root), images_per_concept=2).plan(seed=1)
    assert str(err.value) == (f"{root / 'bird'} and {root / 'dog'}: one folder "
                              f"({os.path.realpath(root / 'dog')}) for concepts 'bird' and "
                              "'dog', which would have the same images: give each concept its "
                              "own folder")
    wnids = [w for w, _ in imagenet_classes()[:2]]
    net = tree(tmp_path / "train", {wnids[0]: 2})
    (net / wnids[1]).symlink_to(net / wnids[0])
    with pytest.raises(ValueError, match=r"one folder .* for classes 'n\d+' and 'n\d+'"):
        scan_images("imagenet-folders", net)


def test_imagenet_sources_record_what_they_leave_out(tmp_path: Path) -> None:
    wnids = [w for w, _ in imagenet_classes()[:2]]
    val = tmp_path / "val"
    lines = []
    for i in range(4):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        draw(val / name, i)
        lines.append(f"{name} {wnids[i % 2]}\n")
    (val / "ILSVRC2012_val_00000005.JPEG").symlink_to(tmp_path / "gone.JPEG")
    lines.append(f"ILSVRC2012_val_00000005.JPEG {wnids[1]}\n")
    (val / "LOC_val_solution.csv").write_text("the label file beside the images\n")
    (val / "labels.txt").write_text("".join(lines))
    images, skipped = scan_images("imagenet-val", val, val / "labels.txt")
    assert [len(images[w]) for w in wnids] == [2, 2]
    assert skipped == [Skipped(wnids[1], str(val / "ILSVRC2012_val_00000005.JPEG"),
                               f"broken symbolic link (to {tmp_path / 'gone.JPEG'})")]


# ------------------------------------------------------------------------------------------
# 6. Unicode normalisation


def test_a_decomposed_folder_name_is_the_tables_composed_id(tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {CREME_NFD: 2, "apple": 2})
    assert {p.name for p in root.iterdir()} == {CREME_NFD, "apple"}  # kept as written
    table = tmp_path / "concepts.tsv"
    table.write_text(f"concept_id\tword\n{CREME}\t{CREME}\napple\tapple\n")
    spec = FolderSource(path=str(root), images_per_concept=2, table={"path": str(table)})
    rows, _, kept = spec.plan(seed=1, inputs=spec.inputs())
    assert [c.concept_id for c in kept] == [CREME, "apple"]
    assert {r.wnid for r in rows} == {CREME, "apple"}
    assert all(Path(r.path).is_file() for r in rows)  # the path as on disk
    # without a table: the concept id and its word are NFC too (found in a vector file)
    rows, _, kept = FolderSource(path=str(root), images_per_concept=2).plan(seed=1)
    assert (kept[0].concept_id, kept[0].word) == ("apple", "apple")
    assert (kept[1].concept_id, kept[1].word) == (CREME, CREME)
    # a files pattern finds the decomposed name too
    flat = tmp_path / "flat"
    draw(flat / "a" / f"{CREME_NFD}.png", 1)
    draw(flat / "b" / f"{CREME_NFD}.png", 2)
    pattern = FolderSource(path=str(flat), images_per_concept=2, files="*/{concept_id}.png",
                           table={"path": str(table)})
    table.write_text(f"concept_id\n{CREME}\n")
    rows, _, _ = pattern.plan(seed=1, inputs=pattern.inputs())
    assert len(rows) == 2 and {r.wnid for r in rows} == {CREME}


def test_names_equal_but_for_normalisation_are_an_error_with_code_points(
        tmp_path: Path) -> None:
    root = tree(tmp_path / "img", {CREME: 2, CREME_NFD: 2})
    if len(list(root.iterdir())) == 1:  # pragma: no cover - a normalising file system
        pytest.skip("this file system stores one name for both forms")
    with pytest.raises(ValueError) as err:
        FolderSource(path=str(root), images_per_concept=2).plan(seed=1)
    message = str(err.value)
    assert "\n" not in message and "differ only in Unicode normalisation" in message
    assert code_points(CREME) in message and code_points(CREME_NFD) in message
    assert "U+00E8" in message and "U+0065 U+0300" in message

    table = tmp_path / "t.tsv"
    table.write_text(f"concept_id\n{CREME}\n{CREME_NFD}\n")
    with pytest.raises(ValueError) as err:
        read_concept_table(table)
    assert str(err.value) == (
        f"{table}:3: concept ids (line 2 and 3) {CREME!r} ({code_points(CREME)}) and "
        f"{CREME_NFD!r} ({code_points(CREME_NFD)}) differ only in Unicode normalisation "
        "(NFC/NFD): rename one")


def test_vector_file_and_label_map_words_in_nfc(tmp_path: Path) -> None:
    vec = tmp_path / "v.txt"
    vec.write_text(f"2 3\n{CREME_NFD.replace(' ', '_')} 1 2 3\ncafé 4 5 6\n")
    kv = load_keyed_vectors(vec)
    match = match_concept(kv, [CREME])
    assert match is not None and match.vector.tolist() == [1.0, 2.0, 3.0]
    assert len(kv) == 2
    labels = tmp_path / "m.tsv"
    labels.write_text(f"label\tconcept_id\n3\t{CREME_NFD}\n")
    assert read_label_map(labels) == {"3": CREME}
