"""A benchmark killed or interrupted with ``--jobs 2`` leaves no worker behind (issue 12, item 3).

Each test runs the ``fitpilot`` command line in a subprocess, as a user would,
kills it once a few runs are stored, and checks in ``/proc`` that every process
it started is gone and that the finished runs are kept; after the SIGKILL,
``--resume`` completes the benchmark (tests/test_benchmark.py resumes after a
kill of the whole process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fitpilot.experiments.store import read_store

REPO = Path(__file__).resolve().parents[1]
FITPILOT = str(Path(sys.executable).with_name("fitpilot"))
ARGS = [
    "benchmark",
    "--tasks",
    "tests.benchmark_tasks:LONGER",
    "--strategies",
    "constant,reduce_lr,cosine",
    "--seeds",
    "3",
    "--lr-factors",
    "0.1,1,10",
    "--oracle-grid",
    "0",
    "--lr-reference",
    "default",
    "--jobs",
    "2",
]
PLANNED = 3 * 3 * 3

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _children(pid: int) -> set[int]:
    """Every living descendant of ``pid`` (from ``/proc/*/stat``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _default_sigint() -> None:
    """In the child, before exec: SIGINT's default action, so Python installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _started(out: Path) -> Iterator[tuple[subprocess.Popen[str], set[int]]]:
    """The benchmark and its worker processes once 2+ runs are stored; whatever of them is
    still alive at the end of the block is killed."""
    process = subprocess.Popen(
        [FITPILOT, *ARGS, "--out", str(out)],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As at a terminal: Ctrl-C is not ignored. A shell that starts pytest in the background
        # without job control (`cmd &` in a script) ignores SIGINT, and its children inherit that.
        preexec_fn=_default_sigint,
    )
    store = out / "runs.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists() and store.read_bytes().count(b"\n") >= 3:  # header + 2 runs
            break
        time.sleep(0.05)
    assert process.poll() is None, "the benchmark ended before it could be killed"
    workers = _children(process.pid)
    try:
        assert len(workers) >= 2, workers
        yield process, workers
    finally:
        for pid in _children(process.pid) | workers | {process.pid}:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = {pid for pid in pids if _alive(pid)}
        if not alive:
            return set()
        time.sleep(0.1)
    return {pid for pid in pids if _alive(pid)}


def _resume_completes(out: Path, kept: bytes) -> None:
    process = subprocess.run(
        [FITPILOT, *ARGS, "--out", str(out), "--resume"],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    after = (out / "runs.jsonl").read_bytes()
    assert after.startswith(kept), "a finished run was lost or rewritten"
    contents = read_store(out)
    assert len(contents.runs) == PLANNED and not contents.skipped


@pytest.mark.slow
def test_sigkill_of_the_parent_ends_its_workers(tmp_path: Path) -> None:
    with _started(tmp_path) as (process, workers):
        os.kill(process.pid, signal.SIGKILL)  # the parent only, as the OOM killer does
        process.communicate(timeout=30)
        survivors = _wait_gone(workers, 15)
        assert not survivors, f"workers {survivors} outlived their killed parent"
    kept = (tmp_path / "runs.jsonl").read_bytes()
    _resume_completes(tmp_path, kept[: kept.rfind(b"\n") + 1])


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_at_once_and_keep_finished_runs(
    tmp_path: Path, how: signal.Signals
) -> None:
    with _started(tmp_path) as (process, workers):
        stopped = time.monotonic()
        if how == signal.SIGINT:
            os.killpg(process.pid, how)  # Ctrl-C reaches the whole foreground group
        else:
            os.kill(process.pid, how)
        output, _ = process.communicate(timeout=60)
        seconds = time.monotonic() - stopped
        assert process.returncode == 130, output
        assert "interrupted" in output and "Traceback" not in output, output
        assert seconds < 15, f"took {seconds:.1f} s to stop"  # it was 25-45 s
        survivors = _wait_gone(workers, 5)
        assert not survivors, f"workers {survivors} outlived the interrupted benchmark"
    kept = (tmp_path / "runs.jsonl").read_bytes()
    assert kept.endswith(b"\n") and 3 <= kept.count(b"\n") <= PLANNED  # no line cut short
    contents = read_store(tmp_path)
    assert len(contents.runs) == kept.count(b"\n") - 1 and not contents.skipped
