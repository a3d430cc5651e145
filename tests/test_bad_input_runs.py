"""Runs that meet other runs, Ctrl-C, and ties (issue 19, items 9, 10 and 11).

* Item 9: two working directories whose configs name one ``results:`` folder. The start-up
  sweep of a job never deletes a temporary a live process may own (the owner's host and PID
  are in its name), and the second run stops before any job, naming the first run's PID
  and working directory (the results lock).
* Item 10: SIGINT to the Snakemake process alone, then the same command completes
  (``rerun-incomplete`` in the workflow profile) with the outputs of an uninterrupted run.
* Item 11: pairs of the 2 vs 2 test whose two sums are equal (ties, which fail) are counted
  in ``scores.tsv`` as the literal implementation counts them, and warned about.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from emergence import ownership
from emergence.formats.activations import GroupSimilarities
from emergence.io import (
    FOREIGN_MAX_AGE_S,
    read_tsv,
    remove_stale_temporaries,
    stale_reason,
    temporaries_of,
)
from emergence.ownership import (
    HOST,
    LEASE_S,
    LOCK_NAME,
    RUN_ENV,
    ResultsLocked,
    holds_results_lock,
    lock_results,
    process_alive,
    unlock_results,
)
from emergence.stats.measures import MeasureSpec
from emergence.stats.two_vs_two import TwoVsTwo
from emergence.tables.score_table import score_columns, score_rows
from tests import literal
from tests.conftest import ROOT, SNAKEMAKE, error_lines, write_study

DEAD = 2**31 - 1  # a PID no process has
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))


def helper(script: str) -> subprocess.Popen[str]:
    """A Python process running ``script``; it has printed its first line when this returns."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.strip() == "ready", proc.communicate(timeout=60)[1][-3000:]
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Tell a :func:`helper` to go on; its exit status and stderr."""
    _, err = proc.communicate("go\n", timeout=60)
    return proc.returncode, err


# --------------------------------------------------------------------------------------
# item 9 (a): the start-up sweep keeps what a live process may own
# --------------------------------------------------------------------------------------

WRITER = """
import sys
from emergence.io import atomic_path, scratch_dir
out = {out!r}
with scratch_dir(out) as spill, atomic_path(out) as tmp:
    (spill / "0.f32").write_bytes(b"rows")
    tmp.write_text("first half, ")
    print("ready", flush=True)
    sys.stdin.readline()
    with open(tmp, "a") as fh:
        fh.write("second half")
"""


def test_the_sweep_of_a_second_run_keeps_a_live_runs_temporaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: run B's job started while run A's wrote the same output; B's sweep
    deleted A's temporary and A died with a bare FileNotFoundError. Now A's files stay
    (their owner runs on this host) and A finishes its output."""
    monkeypatch.delenv(RUN_ENV, raising=False)  # B does not hold the results lock
    out = tmp_path / "results" / "scores.tsv"
    writer = helper(WRITER.format(out=str(out)))
    live = temporaries_of(out)
    assert sorted(p.name for p in live) == sorted([
        f".scores.tsv.tmp-{HOST}-{writer.pid}",
        *(p.name for p in live if p.name.startswith(f".scores.tsv.spill-{HOST}-{writer.pid}-"))])
    assert len(live) == 2
    kept: list[tuple[Path, str]] = []
    assert remove_stale_temporaries([out], kept=kept) == []
    assert [(p, why) for p, why in kept] == [
        (p, f"its process {writer.pid} is running on this host") for p in live]
    code, err = finish(writer)
    assert code == 0, err[-2000:]
    assert out.read_text() == "first half, second half"
    assert temporaries_of(out) == []


def test_which_temporaries_are_stale(tmp_path: Path) -> None:
    out = tmp_path / "a.h5"
    now = time.time()
    later = now + FOREIGN_MAX_AGE_S + 3600  # a week and an hour on

    def temp(name: str, directory: bool = False, age: float = 0.0) -> Path:
        path = tmp_path / name
        path.mkdir() if directory else path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
        return path

    sleeper = helper("import sys; print('ready', flush=True); sys.stdin.readline()")
    try:
        cases = {  # temporary -> (stale now?, stale a week and an hour later?)
            temp(f".a.h5.tmp-{HOST}-{DEAD}"): (True, True),  # its process is gone
            temp(f".a.h5.spill-{HOST}-{DEAD}-k3x_9q", directory=True): (True, True),
            temp(f".a.h5.tmp-{HOST}-{sleeper.pid}"): (False, False),  # running here
            temp(f".a.h5.spill-{HOST}-{sleeper.pid}-a1", directory=True): (False, False),
            # the PID is a process that started an hour after the file was last written
            temp(f".a.h5.spill-{HOST}-{sleeper.pid}-b2", directory=True, age=3600): (True,
                                                                                     True),
            # another host: its process cannot be looked up; stale only once old
            temp(".a.h5.tmp-node-17.cluster-4242"): (False, True),
            temp(".a.h5.spill-node-17.cluster-4242-zz", directory=True): (False, True),
            # the names of earlier versions: no host
            temp(f".a.h5.tmp-{sleeper.pid}"): (False, False),
            temp(f".a.h5.tmp-{DEAD}"): (False, True),
            temp(".a.h5.spill-x7_ab3kq", directory=True): (False, True),
        }
        assert temporaries_of(out) == sorted(cases)
        for path, (stale_now, stale_later) in cases.items():
            assert (stale_reason(path, "a.h5") == "") is stale_now, path.name
            assert (stale_reason(path, "a.h5", now=later) == "") is stale_later, path.name
            assert stale_reason(path, "a.h5", exclusive=True) == ""
        why = stale_reason(tmp_path / ".a.h5.tmp-node-17.cluster-4242", "a.h5")
        assert why.startswith("it was written by host node-17.cluster 0 min ago and may "
                              "belong to a live job there (removed once 7 days old")
        assert process_alive(sleeper.pid) and not process_alive(DEAD)
        # A file on the same host whose owner is gone: deleted; the rest stays.
        kept: list[tuple[Path, str]] = []
        removed = remove_stale_temporaries([out], kept=kept)
        assert sorted(removed) == sorted(p for p, (s, _) in cases.items() if s)
        assert sorted(p for p, _ in kept) == sorted(p for p, (s, _) in cases.items() if not s)
    finally:
        finish(sleeper)


def test_a_job_of_the_run_holding_the_lock_sweeps_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the run that holds the results lock, no other run can write there: the
    leftovers of a job killed on another node are stale at once."""
    monkeypatch.setenv(RUN_ENV, "")
    results = tmp_path / "results"
    out = results / "x" / "a.h5"
    out.parent.mkdir(parents=True)
    foreign = out.with_name(".a.h5.tmp-node-17-4242")
    foreign.write_bytes(b"x")
    assert remove_stale_temporaries([out]) == []  # no lock: presumed live
    lock_results(results, workdir=tmp_path)
    assert holds_results_lock()
    assert remove_stale_temporaries([out]) == [foreign]
    unlock_results(results)
    assert not (results / LOCK_NAME).exists() and not holds_results_lock()


# --------------------------------------------------------------------------------------
# item 9 (b): the results lock
# --------------------------------------------------------------------------------------

HOLDER = """
import sys
from emergence.ownership import lock_results
lock_results({results!r}, workdir={workdir!r}, command="snakemake --cores 1")
print("ready", flush=True)
sys.stdin.readline()
"""


def test_results_lock_names_the_live_holder_and_takes_over_a_dead_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_ENV, "")
    results, lock = tmp_path / "shared", tmp_path / "shared" / LOCK_NAME
    holder = helper(HOLDER.format(results=str(results), workdir=str(tmp_path / "run A")))
    try:
        with pytest.raises(ResultsLocked) as info:
            lock_results(results, workdir=tmp_path / "run B")
        text = str(info.value)
        assert "\n" not in text and text.startswith(
            f"results folder {results} is in use by another run: PID {holder.pid} on host "
            f"{HOST}, working directory {tmp_path / 'run A'}, started ")
        assert text.endswith("wait for it to finish or set another 'results:' folder")
        unlock_results(results)  # not ours: left alone
        assert json.loads(lock.read_text())["pid"] == holder.pid
    finally:
        assert finish(holder)[0] == 0
    assert not lock.exists()  # released at exit

    # A lock left by a run that was killed (its PID is gone from this host): taken over.
    lock.write_text(json.dumps({"host": HOST, "pid": DEAD, "workdir": "/x", "run": "r"}))
    note = lock_results(results, workdir=tmp_path)
    assert note.startswith(f"took over the lock of results folder {results} from a run that "
                           f"is no longer running (PID {DEAD} on host {HOST}")
    assert json.loads(lock.read_text())["pid"] == os.getpid() and holds_results_lock()
    assert lock_results(results, workdir=tmp_path) == ""  # taking it again: a no-op
    unlock_results(results)
    assert not lock.exists() and sorted(results.iterdir()) == []

    # Held on another host, whose processes cannot be looked up from here: live while it
    # renews the lock (a heartbeat), taken over when it has not for the lease.
    lock.write_text(json.dumps({"host": "login-2", "pid": 4242, "workdir": "/y", "run": "r"}))
    with pytest.raises(ResultsLocked, match=(
            rf"PID 4242 on host login-2, working directory /y, .* \(if it is no longer "
            rf"running there, delete {lock}; it is taken over once not renewed for 15 "
            rf"min\)$")):
        lock_results(results, workdir=tmp_path)
    os.utime(lock, (time.time() - LEASE_S - 60, time.time() - LEASE_S - 60))
    assert "(PID 4242 on host login-2" in lock_results(results, workdir=tmp_path)
    unlock_results(results)
    # Unreadable and a minute old: garbage, taken over.
    lock.write_text("{")
    os.utime(lock, (time.time() - 120, time.time() - 120))
    assert lock_results(results, workdir=tmp_path).startswith("took over the lock")
    unlock_results(results)


def test_the_run_holding_the_results_lock_renews_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_ENV, "")
    monkeypatch.setattr(ownership, "HEARTBEAT_S", 0.05)
    lock_results(tmp_path, workdir=tmp_path)
    lock = tmp_path / LOCK_NAME
    old = time.time() - LEASE_S - 60
    os.utime(lock, (old, old))
    deadline = time.monotonic() + 30
    while lock.stat().st_mtime == old and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - lock.stat().st_mtime < 30
    unlock_results(tmp_path)
    assert not lock.exists()


# --------------------------------------------------------------------------------------
# item 11: ties in the 2 vs 2 test
# --------------------------------------------------------------------------------------


def tie_case(k: int, seed: int, plant: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """W and I of k concepts; with ``plant``, concepts 0 and 1 share a word vector, 2 and 3
    an image, and 4, 5 and 6 a word vector: 1 + 1 + 3 pairs whose two sums are equal."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((k, 4))
    x = latent @ rng.standard_normal((4, 12)) + rng.standard_normal((k, 12))
    y = latent @ rng.standard_normal((4, 9)) + rng.standard_normal((k, 9))
    if plant:
        x[1] = x[0]
        y[3] = y[2]
        x[5] = x[6] = x[4]
    return literal.corr_matrix(x), literal.corr_matrix(y), 5 if plant else 0


@pytest.mark.parametrize(("k", "seed", "plant"), [
    (5, 0, False), (7, 1, True), (9, 2, True), (12, 3, False), (16, 4, True), (30, 5, True),
    (40, 6, False)])
def test_ties_are_counted_as_the_literal_counts_them(k: int, seed: int, plant: bool) -> None:
    w_mat, i_mat, planted = tie_case(k, seed, plant)
    expected = literal.two_vs_two_ties(w_mat, i_mat)
    assert expected == planted
    engine = TwoVsTwo(w_mat)
    assert engine.ties(i_mat) == expected  # the certified float32 engine
    # The float64 definition (the CPU engine declines entries beyond float32's safe range;
    # Pearson correlations of I's rows do not change with its scale), and a batch.
    assert engine.ties(i_mat * 2.0**55) == expected
    batch = np.stack([i_mat, w_mat, np.full_like(i_mat, np.nan)])
    assert np.array_equal(engine.ties(batch), [expected, literal.two_vs_two_ties(w_mat, w_mat),
                                               np.nan], equal_nan=True)
    # Ties fail: the accuracy is the literal's.
    assert float(engine.accuracy(i_mat)) == literal.two_vs_two(w_mat, i_mat)


def test_scores_count_ties_per_layer_and_group_and_warn(
        caplog: pytest.LogCaptureFixture) -> None:
    w_mat = tie_case(9, 3, False)[0]
    plain, tied = tie_case(9, 2, False)[1], tie_case(9, 2, True)[1]  # concepts 2, 3: one image
    assert [literal.two_vs_two_ties(w_mat, m) for m in (plain, tied)] == [0, 1]
    sims = np.stack([plain, tied, np.full_like(plain, np.nan)])
    groups = [GroupSimilarities("net", "model", g, ["stem", "block1", "pixels"], ["m"] * 3,
                                [11] * 3, sims, np.full(9, -1), [""] * 9,
                                [f"{i}.png" for i in range(9)]) for g in ("1", "2")]
    caplog.set_level(logging.WARNING)
    rows = score_rows("w2v", w_mat, groups)
    assert "ties" in score_columns(MeasureSpec())
    assert [(r["group"], r["layer"], r["ties"]) for r in rows if r["layer"] != "pixels"] == [
        ("1", "stem", 0), ("1", "block1", 1), ("2", "stem", 0), ("2", "block1", 1)]
    assert all(np.isnan(r["ties"]) for r in rows if r["layer"] == "pixels")
    warnings = [r.getMessage() for r in caplog.records if "ties" in r.getMessage()]
    assert warnings == [
        f"net, group {g}: ties in the 2 vs 2 test (pairs whose two sums are exactly equal; "
        "they count as fails) in layer(s) block1 (1), of 36 pairs; two concepts with "
        "identical word vectors or identical images tie" for g in ("1", "2")]


# --------------------------------------------------------------------------------------
# items 9 (b), 10 and 11 through the workflow: two runs on one results folder, Ctrl-C
# --------------------------------------------------------------------------------------

TARGET = "two_vs_two/lite/w2v/scores.tsv"


def tiny_study(root: Path) -> dict:
    """conftest's tiny folder study (8 concepts x 2 images of 24 px, an untrained Lite0 at
    32 px), every path absolute, and concepts 0 and 1 given one word vector: one pair of the
    2 vs 2 test ties in every layer."""
    cfg = write_study(root)
    lines = (root / "vectors.txt").read_text().splitlines()
    lines[2] = lines[2].split(" ", 1)[0] + " " + lines[1].split(" ", 1)[1]
    (root / "vectors.txt").write_text("\n".join(lines) + "\n")
    cfg["images"]["path"] = str(root / "images")
    cfg["word_models"]["w2v"]["path"] = str(root / "vectors.txt")
    return cfg


def snakemake(workdir: Path, results: Path, *args: str) -> list[str]:
    """The command a user types in ``workdir``: the study's config, one ``results:``."""
    return [*SNAKEMAKE, "--directory", str(workdir), "--configfile",
            str(workdir / "config.yaml"), "--cores", "1", *args, f"{results}/{TARGET}"]


def temporaries(results: Path) -> list[Path]:
    return [p for p in results.rglob("*") if ".tmp-" in p.name or ".spill-" in p.name]


def wait_for(proc: subprocess.Popen[str], seen: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 600
    while not seen():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_and_a_second_run_on_the_same_results(
        tmp_path: Path) -> None:
    cfg = tiny_study(tmp_path / "data")
    shared, lock = tmp_path / "shared results", tmp_path / "shared results" / LOCK_NAME
    runs = {name: tmp_path / name for name in ("run A", "run B", "reference")}
    for name, workdir in runs.items():
        workdir.mkdir()
        results = tmp_path / "reference results" if name == "reference" else shared
        (workdir / "config.yaml").write_text(yaml.safe_dump(dict(cfg, results=str(results))))
    command, log = snakemake(runs["run A"], shared), tmp_path / "a.log"

    def start() -> subprocess.Popen[str]:
        # SIGINT as in a terminal: a test runner started in the background of a
        # non-interactive shell (`sh -c '... &'`) ignores SIGINT, and Snakemake would inherit that
        with open(log, "w") as fh:
            return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=ENV,
                                    start_new_session=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                     signal.SIG_DFL))

    # Item 10: SIGINT to the Snakemake process alone while a job writes its output.
    run_a = start()
    try:
        wait_for(run_a, lambda: bool(temporaries(shared / "activations")), log)
        # Snakemake's log handler swallows a KeyboardInterrupt that lands while it writes a
        # line (snakemake/logging.py: `except (KeyboardInterrupt, SystemExit): pass`), so a
        # Ctrl-C at a job's start can be lost, as it was once here: press it again, as a
        # user would, until Snakemake says it is stopping
        for _ in range(20):
            os.kill(run_a.pid, signal.SIGINT)
            deadline = time.monotonic() + 3
            while (run_a.poll() is None and time.monotonic() < deadline
                   and "Terminating processes on user request" not in log.read_text()):
                time.sleep(0.05)
            if run_a.poll() is not None or "Terminating processes" in log.read_text():
                break
        assert run_a.wait(timeout=600) != 0
        assert not lock.exists()  # released on the way out
        # The same command again (it stopped with IncompleteFilesException).
        run_a = start()
        wait_for(run_a, lambda: lock.exists() and json.loads(lock.read_text() or "{}").get(
            "pid") == run_a.pid, log)
        # Item 9: while it runs (frozen here, so that it cannot finish first), B, in another
        # working directory whose config names the same results folder, stops before any
        # job; its dry run is not stopped.
        os.kill(run_a.pid, signal.SIGSTOP)
        try:
            b = subprocess.run(snakemake(runs["run B"], shared), capture_output=True,
                               text=True, env=ENV, timeout=600)
            dry = subprocess.run(snakemake(runs["run B"], shared, "-n"), capture_output=True,
                                 text=True, env=ENV, timeout=600)
        finally:
            os.kill(run_a.pid, signal.SIGCONT)
        assert run_a.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if run_a.poll() is None:
            os.killpg(run_a.pid, signal.SIGKILL)
            run_a.wait()
    lines = [ln for ln in error_lines(b.stderr) if ln.startswith("semantic-emergence:")]
    assert b.returncode != 0 and len(lines) == 1, b.stderr[-3000:]
    assert lines[0].startswith(
        f"semantic-emergence: results folder {shared} is in use by another run: "
        f"PID {run_a.pid} on host {HOST}, working directory {runs['run A']}, started ")
    assert not [ln for ln in b.stderr.splitlines() if ln.startswith(("rule ", "localrule "))]
    assert dry.returncode == 0 and "This was a dry-run" in dry.stdout + dry.stderr, \
        dry.stderr[-3000:]

    reference = subprocess.run(snakemake(runs["reference"], tmp_path / "reference results"),
                               capture_output=True, text=True, env=ENV, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    for name in ("images/manifest.tsv", "concepts/w2v.tsv", TARGET):
        assert (shared / name).read_bytes() == \
            (tmp_path / "reference results" / name).read_bytes(), name
    assert temporaries(shared) == [] and not lock.exists()

    # Item 11: concepts 0 and 1 share a word vector: one tie in every layer, and a warning.
    scores = read_tsv(shared / TARGET)
    assert {r["ties"] for r in scores if r["layer"] != "pixels"} == {"1"}
    assert {r["ties"] for r in scores if r["layer"] == "pixels"} == {"nan"}  # not scored
    job_log = (shared / "logs" / "two_vs_two" / "lite" / "w2v.log").read_text()
    assert "ties in the 2 vs 2 test (pairs whose two sums are exactly equal" in job_log
