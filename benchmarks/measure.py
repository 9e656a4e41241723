"""Helpers the speed scripts share (imported as ``measure`` when a script runs from here)."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux ``/proc``)."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux ``/proc``)."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    """``/proc/self/status``'s ``field`` (a size in kB) in MB; NaN where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")
