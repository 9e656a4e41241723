"""A user's text classifier (``tests/text_tasks.py``: ``Embedding`` -> pooling -> ``Dense``,
a Keras loss *object*) through everything fitpilot offers, and a benchmark that survives
what goes wrong on the way:

- every strategy of the benchmark on it, from the command line, then ``--resume`` in a
  new process (a loss object's ``repr`` holds a memory address: stores compare by value);
- a run that raises is a result: stored as failed, counted as untrained, the others go
  on; the command ends with one line on them, and fails only if every run failed;
  ``--resume`` runs them again;
- a store written before tasks were described by value still resumes; a refusal names
  the one field that differs;
- ``fitpilot train`` on it for a few steps;
- the range test, Prodigy and the learned controller (weight features) on it, on the
  TensorFlow backend here and on JAX and torch in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from fitpilot.experiments.settings import RunKey, RunRecord, Settings, TaskInfo
from fitpilot.experiments.store import ResultsStore, read_store
from fitpilot.experiments.strategies import ORACLE, strategy_names
from tests.benchmark_tasks import FAIL_WITH_A_SCHEDULE
from tests.commandline import run_fitpilot
from tests.other_backends import OTHER_BACKENDS, run_on_backend
from tests.text_tasks import loss, text_classifier, text_data, text_task

ROOT = Path(__file__).resolve().parents[1]
TEXT = "tests.text_tasks:TASKS"


# --- the benchmark ------------------------------------------------------------------------


@pytest.mark.slow
def test_every_strategy_trains_the_text_model_and_the_store_resumes_in_a_new_process(
    tmp_path: Path,
) -> None:
    out = tmp_path / "text"
    args = ("benchmark", "--controller", "pretrained", "--tasks", TEXT, "--seeds", "1",
            "--lr-factors", "0.1,1", "--oracle-grid", "3", "--out", str(out), "--no-progress")
    first = run_fitpilot(*args, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "warning: " not in first.stderr, first.stderr
    contents = read_store(out)
    assert {r.strategy for r in contents.runs} == {*strategy_names(), ORACLE}
    assert not [r for r in contents.runs if r.counts_as_untrained], [
        (r.key.label(), r.error) for r in contents.runs if r.counts_as_untrained]
    learned = [r for r in contents.runs if r.strategy == "learned"]
    assert all(r.decisions for r in learned)  # the v2 bundle read the embedding's weights
    loss_description = contents.settings.tasks[0].loss
    assert "SparseCategoricalCrossentropy" in loss_description and "0x" not in loss_description

    again = run_fitpilot(*args, "--resume", timeout=600)  # a new process: a new loss object
    assert again.returncode == 0, again.stderr[-3000:]
    planned = len(contents.settings.run_keys())
    assert f"resuming: {planned} of {planned} runs already" in again.stderr, again.stderr


@pytest.mark.slow
def test_a_failed_run_is_a_result_and_resume_runs_it_again(tmp_path: Path) -> None:
    out = tmp_path / "fails"
    args = ("benchmark", "--tasks", "tests.benchmark_tasks:SCHEDULE_FAILS", "--strategies",
            "constant,cosine,prodigy", "--seeds", "1", "--lr-factors", "1", "--oracle-grid",
            "3", "--out", str(out), "--no-progress")
    failing = run_fitpilot(*args, env={FAIL_WITH_A_SCHEDULE: "1"}, timeout=600)
    assert failing.returncode == 0, failing.stderr[-3000:]  # not every run failed
    assert "Traceback" not in failing.stderr
    line = next(x for x in failing.stderr.splitlines() if x.startswith("warning: "))
    assert line.startswith("warning: 1 run(s) failed (cosine 1); first: schedule_fails seed 0 "
                           "lr x1 cosine: TypeError:"), line
    runs = {r.strategy: r for r in read_store(out).runs}
    assert runs["cosine"].failed and runs["cosine"].untrained_test_loss is not None
    assert not runs["constant"].failed and not runs["prodigy"].failed  # the others went on
    report = (out / "report.md").read_text()
    assert "## Diverged and failed runs" in report and "cosine: TypeError" in report

    fixed = run_fitpilot(*args, "--resume", timeout=600)  # the cause is gone: it runs again
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "warning: " not in fixed.stderr, fixed.stderr
    runs = {r.strategy: r for r in read_store(out).runs}
    assert not runs["cosine"].failed and runs["cosine"].epochs == 4


@pytest.mark.slow
def test_the_command_fails_only_when_every_run_failed(tmp_path: Path) -> None:
    result = run_fitpilot(
        "benchmark", "--tasks", "tests.benchmark_tasks:ALWAYS_FAILS", "--strategies",
        "constant,reduce_lr", "--seeds", "1", "--lr-factors", "1", "--oracle-grid", "3",
        "--out", str(tmp_path / "all"), "--no-progress", timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "run(s) failed" in result.stderr and "this layer cannot train" in result.stderr
    assert (tmp_path / "all" / "report.md").is_file()


# --- stores compare tasks by value ---------------------------------------------------------


def text_settings(task_info: TaskInfo, **changes) -> Settings:
    values = dict(tasks=(task_info,), strategies=("constant",), lr_factors=(1.0,), seeds=1,
                  oracle_grid=3, controller=None, fitpilot_version="0.1.0")
    return Settings(**{**values, **changes})


def test_a_loss_object_is_described_by_value_and_a_refusal_names_the_field(
    tmp_path: Path,
) -> None:
    task = text_task()
    first, second = TaskInfo.of(task), TaskInfo.of(text_task())  # two loss objects
    assert first == second and "0x" not in first.loss
    ResultsStore.open(tmp_path, text_settings(first)).close()
    ResultsStore.open(tmp_path, text_settings(second), resume=True).close()  # same by value

    other = dataclasses.replace(task, loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError) as caught:
        ResultsStore.open(tmp_path, text_settings(TaskInfo.of(other)), resume=True)
    message = str(caught.value)
    assert "(task tiny_text: loss: store " in message and message.count("store ") == 1
    assert '"from_logits": true' in message and '"from_logits": false' in message


def test_a_store_that_described_tasks_by_repr_still_resumes(tmp_path: Path) -> None:
    """Stores before this change wrote ``str(loss)``, memory address and all."""
    task = text_task()
    info = TaskInfo.of(task)
    header = text_settings(info, protocol=2).to_dict()
    del header["descriptions"]
    header["tasks"][0].update(loss=str(loss()), optimizer="adam",
                              metrics=[str(m) for m in task.metrics])
    assert " at 0x" in header["tasks"][0]["loss"]  # what made them refuse themselves
    (tmp_path / "runs.jsonl").write_text(json.dumps({"type": "header", "settings": header}) + "\n")
    record = RunRecord("tiny_text", 0, 1.0, ORACLE, 0.01, 6, 6, 1.0, 0.5)
    with ResultsStore.open(tmp_path, text_settings(info), resume=True) as store:
        store.append(record)
    assert read_store(tmp_path).runs == [record]
    assert RunKey("tiny_text", 0, 1.0, ORACLE) == record.key

    other = text_task(epochs=9)
    with pytest.raises(ValueError, match=r"task tiny_text: epochs: store 6, now 9\)"):
        ResultsStore.open(tmp_path, text_settings(TaskInfo.of(other)), resume=True)


# --- training --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fitpilot_train_runs_on_the_text_task(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_fitpilot(
        "train", "--tasks", TEXT, "--timesteps", "64", "--n-envs", "1", "--hp", "n_steps=32",
        "--hp", "batch_size=32", "--env", "featurizer.version=2", "--eval-every", "0",
        "--out", str(out), "--no-progress", timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "controller.zip").is_file()


# --- the public tools on the text model, on each backend -------------------------------------


def check_tools_on_the_text_model() -> None:
    """On the Keras backend in force: the range test restores the text model exactly and
    suggests a rate; the pretrained controller (featurizer v2: weight features) decides in a
    fit of it. Run here (TensorFlow) and by :func:`test_the_tools_on_other_backends`."""
    from fitpilot import LearnedController, find_learning_rate

    data = text_data()
    model = text_classifier()
    model.compile(keras.optimizers.Adam(0.01), loss())
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]
    result = find_learning_rate(model, data.train.x, data.train.y, batch_size=16,
                                max_batches=40, seed=0)
    assert result.suggestion is not None, result.warning
    for old, new in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))

    controller = LearnedController.pretrained()
    assert controller.featurizer.config.uses_weights
    model.fit(data.train.x, data.train.y, batch_size=16, epochs=4, verbose=0,
              validation_data=(data.validation.x, data.validation.y), callbacks=[controller])
    assert len(controller.decisions) >= 1
    assert all(np.isfinite(r.lr_after) for r in controller.decisions)


def test_the_tools_on_the_text_model() -> None:
    check_tools_on_the_text_model()


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_tools_on_other_backends(backend: str) -> None:
    run_on_backend(backend, "tests.test_text_model:check_tools_on_the_text_model")
