"""Issue 21 phase 2: the config read in one place (typed sections of ``Study``), one place for
each value (the TSV reader and writer, UTF-8 whatever the locale)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
