"""Test helper: run the ``fitpilot`` console script of this venv in a subprocess, as a user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FITPILOT = Path(sys.executable).with_name("fitpilot")  # the console script of this venv
REPO = Path(__file__).resolve().parent.parent  # `tests.user_tasks:...` imports from here


def run_fitpilot(
    *args: str, cwd: str | Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``fitpilot ARGS`` in ``cwd``, one TensorFlow thread, extra ``env``; output captured."""
    variables = {**os.environ, "FITPILOT_THREADS": "1", **(env or {})}
    return subprocess.run(
        [str(FITPILOT), *args],
        cwd=cwd,
        env=variables,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a command that must fail with exit status 2 and one ``error:`` line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr
