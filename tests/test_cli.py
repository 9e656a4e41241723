"""The command line run as a user runs it: the console script, in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fitpilot.cli import app
from fitpilot.commands import check_writable, command_flags, flag_wording
from fitpilot.commands.report import report
from fitpilot.commands.train import train
from fitpilot.controller.bundle import load_bundle
from fitpilot.errors import FitpilotError
from tests.commandline import one_error_line, run_fitpilot

TINY_TASK = "tests.user_tasks:ONE"  # 40 rows, 4 features: an epoch takes a millisecond
# A few steps, one rollout, no holdout evaluation: seconds beyond the imports.
TINY_RUN = ("--tasks", TINY_TASK, "--n-envs", "1", "--eval-every", "0", "--hp", "n_steps=64")


@pytest.mark.slow
def test_train_with_its_progress_bar_writes_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_fitpilot("train", *TINY_RUN, "--timesteps", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr  # SB3's progress bar needs tqdm and rich
    assert load_bundle(out / "controller.zip").metadata["timesteps"] == 64


# --- bad input: one line, exit status 2, nothing written -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_a_task_whose_model_does_not_fit_its_data_is_refused_before_anything_is_written(
    command: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_fitpilot(command, "--tasks", "tests.user_tasks:TOO_FEW_CLASSES", "--out", str(out))
    assert "too_few_classes" in one_error_line(result).lower()  # as `fitpilot tasks` reports it
    assert not out.exists()  # no config.yaml (or store) that would need --force next time


@pytest.mark.parametrize("command", ["train", "benchmark", "report"])
@pytest.mark.parametrize("where", ["a file", "inside a file", "/proc"])
def test_an_unwritable_out_is_refused_up_front(command: str, where: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = {
        "a file": tmp_path / "file",
        "inside a file": tmp_path / "file" / "out",
        "/proc": Path("/proc/fitpilot-out"),
    }[where]
    args = [str(out)] if command == "report" else ["--out", str(out)]
    message = one_error_line(run_fitpilot(command, *args))
    assert str(out) in message and ("a file, not a folder" in message) == (where != "/proc")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["train", "benchmark", "report"])
def test_a_read_only_out_is_refused_up_front(command: str, tmp_path: Path) -> None:
    out = tmp_path / "read-only"
    out.mkdir(mode=0o555)
    args = [str(out)] if command == "report" else ["--out", str(out)]
    assert "is not writable" in one_error_line(run_fitpilot(command, *args))


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "out", "--out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FitpilotError, match=r"--out /proc/x is not writable \("):
        check_writable(Path("/proc/x"), "--out")


# --- library messages name parameters; the command line names its flags ----------------------


def test_parameters_in_library_messages_read_as_the_commands_flags() -> None:
    flags = command_flags(train)
    message = (
        "pass `resume=True` or `force=True`, not both; `n_envs` must be >= 1; "
        "`progress=False`; use `algo='ppo'`; `eval_every` and `worker_memory`; "
        "`gamma` and `out_dir` are not parameters of the command"
    )
    assert flag_wording(message, flags) == (
        "pass --resume or --force, not both; --n-envs must be >= 1; "
        "--no-progress; use --algo ppo; --eval-every and --worker-memory; "
        "`gamma` and `out_dir` are not parameters of the command"
    )
    assert flag_wording("`directory` holds no runs.jsonl", command_flags(report)) == (
        "DIRECTORY holds no runs.jsonl"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker-cpus", "2"], "--worker-cpus is for --backend ray; add --backend ray, or"),
        (["--backend", "spark"], "unknown --backend 'spark'"),
        (["--suite", "train", "--tasks", TINY_TASK], "give --suite or --tasks, not both"),
        (["--n-envs", "0"], "--n-envs must be >= 1, got 0"),
        (["--resume", "--force"], "pass --resume or --force, not both"),
        (["--algo", "dqn", "--stop-bias", "-3"], "--stop-bias applies to PPO and A2C"),
    ],
)
def test_the_train_command_names_its_flags(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}"), result.output


def test_vec_is_refused_on_the_ray_backend(tmp_path: Path) -> None:
    result = run_fitpilot(
        "train", *TINY_RUN, "--backend", "ray", "--vec", "batched", "--out", str(tmp_path / "r")
    )
    assert "--vec batched is for the local backend" in one_error_line(result)
    assert not (tmp_path / "r").exists()
