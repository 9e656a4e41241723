"""The package imports quietly and cheaply; the console script lists its commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fitpilot.cli import COMMAND_MODULES
from tests.commandline import FITPILOT

HEAVY = ("tensorflow", "keras", "torch", "stable_baselines3")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment; capture its output."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def heavy_modules_after(statement: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` after running ``statement`` in a fresh process."""
    code = (
        f"import sys\n{statement}\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_import_prints_nothing() -> None:
    result = run_python("import fitpilot")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == ""


@pytest.mark.parametrize(
    "statement",
    [
        "import fitpilot",
        "from fitpilot import TrainingTask, TaskData, Split, load_tasks, FitpilotError",
        "import fitpilot.cli",  # `fitpilot --help` stays fast: commands import lazily
    ],
)
def test_import_loads_no_heavy_library(statement: str) -> None:
    assert heavy_modules_after(statement) == []


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [str(FITPILOT), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for name in COMMAND_MODULES:
        assert name in result.stdout


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_each_command_has_help(name: str) -> None:
    from typer.testing import CliRunner

    from fitpilot.cli import app

    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
