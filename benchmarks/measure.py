"""Helpers the speed scripts share (imported as ``measure`` when a script runs from here)."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux ``/proc``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
