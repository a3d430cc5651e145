"""Issue 21 phase 2: the config read in one place (typed sections of ``Study``), one place for
each value (the TSV reader and writer, UTF-8 whatever the locale)."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from emergence.config import (
    Concepts,
    Extraction,
    Figures,
    Intervals,
    OneVsTwo,
    Permutations,
    check_config,
)
from emergence.stats.measures import MeasureSpec
from tests.conftest import ROOT, small_config
from tests.test_workflow import planned

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def test_tables_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Under the C locale with UTF-8 mode off (the locale's encoding is ASCII), a concept
    name outside ASCII is written and read back as UTF-8 bytes."""
    script = textwrap.dedent(f"""
        import locale
        from emergence.io import read_tsv, write_tsv
        assert locale.getpreferredencoding(False).lower() not in ("utf-8", "utf8")
        name = "caf\\u00e9"
        write_tsv({str(tmp_path / "t.tsv")!r}, [{{"concept": name, "n": 1}}], ["concept", "n"])
        print(read_tsv({str(tmp_path / "t.tsv")!r})[0]["concept"] == name)
    """)
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0",
               PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONUTF8", None)
    proc = subprocess.run([sys.executable, "-X", "utf8=0", "-c", script], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True"]
    assert (tmp_path / "t.tsv").read_bytes() == "concept\tn\ncafé\t1\n".encode()


# --- the config's plain sections, typed in Study -------------------------------------------

SECTIONS = {"permutations": Permutations, "intervals": Intervals, "extraction": Extraction,
            "one_vs_two": OneVsTwo, "figures": Figures, "concepts": Concepts}


def test_every_schema_key_of_a_section_is_a_typed_field() -> None:
    """A key added to the schema without its field in the section would be a setting the
    rules cannot read through the study."""
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    for name, cls in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)} - {"order"}
        assert fields == set(schema[name]["properties"]), name


def test_sections_hold_the_filled_config(tmp_path: Path) -> None:
    """Each section equals its slice of the config as the schema filled it in, for the
    shipped configs, the test config and one that leaves every section to its defaults."""
    configs = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / "config").glob("*.yaml")}
    configs["small"] = small_config(tmp_path)
    configs["sparse"] = {k: v for k, v in small_config(tmp_path).items()
                         if k in ("results", "images", "networks", "word_models")}
    for label, cfg in configs.items():
        study = check_config(cfg, SCHEMA)
        for name in SECTIONS:
            section = getattr(study, name)
            assert {k: getattr(section, k) for k in cfg[name]} == cfg[name], (label, name)
        assert study.seed == cfg["seed"]
        assert study.label_map == cfg["one_vs_two"].get("label_map")


def test_measures_come_from_the_schema_defaults(tmp_path: Path) -> None:
    """Without `measures` or `two_vs_two` the MeasureSpec is what the schema's defaults say
    (config.py passes them; MeasureSpec restates none)."""
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    cfg = {k: v for k, v in small_config(tmp_path).items()
           if k not in ("measures", "two_vs_two")}
    measures = check_config(cfg, SCHEMA).measures
    props = schema["measures"]["properties"]
    assert measures == MeasureSpec(tuple(props["names"]["default"]),
                                   schema["two_vs_two"]["properties"]["rsa_method"]["default"],
                                   props["mutual_knn_k"]["default"])
    cfg = small_config(tmp_path)
    cfg["measures"], cfg["two_vs_two"] = {"names": ["two_vs_two", "mutual_knn"],
                                          "mutual_knn_k": 4}, {"rsa_method": "kendall"}
    assert check_config(cfg, SCHEMA).measures == MeasureSpec(("two_vs_two", "mutual_knn"),
                                                             "kendall", 4)


def test_a_section_param_keeps_the_config_order(tmp_path: Path) -> None:
    """Snakemake compares params by repr: a section handed to a rule whole is the config's
    own mapping (its key order, the defaults after), less `permutations.alpha`, which no
    shard depends on."""
    cfg = small_config(tmp_path)
    cfg["permutations"] = {"device": "cpu", "shards": 2, "n": 10}
    cfg["extraction"] = {"threads": 1, "batch_size": 4}
    study = check_config(cfg, SCHEMA)
    assert repr(study.permutations.params()) == repr(
        {"device": "cpu", "shards": 2, "n": 10, "batch_size": 8})
    assert study.permutations.alpha == 0.05
    assert repr(study.extraction.params()) == repr(cfg["extraction"])
    assert list(study.extraction.params())[:2] == ["threads", "batch_size"]


def test_no_rule_file_reads_the_config() -> None:
    """The rule files read the config through the study (common.smk's STUDY) only."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk")),
             ROOT / "workflow" / "Snakefile"]
    reads = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for path in files for i, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bconfig(\[|\.get\(|\.items\()", line)]
    assert reads == []


# --- a figure setting reruns figures only ---------------------------------------------------

FIGURES = {"fig1_word_models", "fig2_layers", "fig4_one_vs_two", "overview"}


def test_alpha_of_the_figures_reruns_figures_only(study: tuple[Path, dict],
                                                  tmp_path: Path) -> None:
    """On a finished study: `figures.alpha` plans the figure jobs and nothing else;
    `permutations.alpha` (the table's `significant` column) the significance table and what
    reads it, never a shard; the same config, nothing."""
    src, cfg = study
    root = tmp_path / "study"
    shutil.copytree(src, root, symlinks=True)
    assert planned(root, cfg) == {}
    figures = copy.deepcopy(cfg)
    figures.setdefault("figures", {})["alpha"] = 0.01
    assert set(planned(root, figures)) - {"default"} == FIGURES
    table = copy.deepcopy(cfg)
    table["permutations"]["alpha"] = 0.01
    assert set(planned(root, table)) - {"default"} == {
        "significance", "summary_two_vs_two", "fig1_word_models", "fig2_layers", "overview"}
