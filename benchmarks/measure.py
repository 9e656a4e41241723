"""Helpers the speed scripts share (imported as ``measure`` when a script runs from here)."""

from __future__ import annotations

import os


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size of process ``pid`` (default: this one) so far, in MB."""
    return _status_mb("VmHWM", pid)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of process ``pid`` (default: this one) now, in MB."""
    return _status_mb("VmRSS", pid)


def pss_mb(pid: int | str = "self") -> float:
    """Proportional set size of process ``pid`` now, in MB: its resident pages, each
    shared one divided among the processes sharing it (sums over processes to the RAM
    they hold together, which a sum of RSS overstates by the shared libraries)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _status_mb(field: str, pid: int | str) -> float:
    """``/proc/<pid>/status``'s ``field`` (a size in kB) in MB; NaN where there is none."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(venv: object) -> list[int]:
    """The pids of a VecEnv's worker processes (``SubprocVecEnv``, ``ProcessGroupsVecEnv``);
    none for an in-process one."""
    return [process.pid for process in getattr(venv, "processes", [])]


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
