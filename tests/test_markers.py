"""`make test-fast` (pytest -m "not slow"): the tests that use an end-to-end fixture are
marked slow by tests/conftest.py, whatever their file says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import END_TO_END

ROOT = Path(__file__).resolve().parents[1]


def collected(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("[")[0] for line in proc.stdout.splitlines() if "::" in line}


def test_tests_that_use_the_demo_run_are_slow() -> None:
    """tests/test_stats_measures.py has no @slow: its demo_run tests are left out all the same,
    its unit tests stay."""
    path = "tests/test_stats_measures.py"
    fast = collected("-m", "not slow", path)
    slow = collected("-m", "slow", path)
    assert f"{path}::test_measure_spec_orders_and_checks" in fast
    assert f"{path}::test_scores_equal_the_literal_measures" in slow
    assert not fast & slow and len(slow) >= 4


def test_every_end_to_end_fixture_exists() -> None:
    """A renamed fixture would silently make its tests fast."""
    sources = "".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    for name in END_TO_END:
        assert re.search(rf"@pytest\.fixture\(scope=\"(session|module)\"\)\ndef {name}\(",
                         sources), name
