"""The command line run as a user runs it: the console script, in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from fitpilot.controller.bundle import load_bundle
from tests.commandline import run_fitpilot

TINY_TASK = "tests.user_tasks:ONE"  # 40 rows, 4 features: an epoch takes a millisecond
# A few steps, one rollout, no holdout evaluation: seconds beyond the imports.
TINY_RUN = ("--tasks", TINY_TASK, "--n-envs", "1", "--eval-every", "0", "--hp", "n_steps=64")


@pytest.mark.slow
def test_train_with_its_progress_bar_writes_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_fitpilot("train", *TINY_RUN, "--timesteps", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr  # SB3's progress bar needs tqdm and rich
    assert load_bundle(out / "controller.zip").metadata["timesteps"] == 64
