"""The train_v2 and validation suites, their tuned rates, and the env's tuned start distribution.

Every built-in task's check and one-epoch fit is in ``test_tasks.py``.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fitpilot.agents.config import EnvSettings, TrainError, build_config
from fitpilot.envs.env import TUNED_SPREAD, KerasTrainingEnv
from fitpilot.envs.runner import make_runner
from fitpilot.envs.suites import SUITES, TUNED_LEARNING_RATES, train_v2_extra
from fitpilot.envs.tasks import TaskError, TrainingTask
from fitpilot.experiments.reference_rate import best_factor
from fitpilot.experiments.settings import oracle_factors
from fitpilot.experiments.tune_suite import extension
from tests.test_tasks import layer_types

ROOT = Path(__file__).resolve().parents[1]


def dataset(task: TrainingTask) -> str:
    """The dataset a built-in task loads: its sklearn loader or generator, or its data function."""
    load = task.load_data
    if isinstance(load, partial):
        names = [arg for arg in load.args if isinstance(arg, str)]
        return names[0] if names else load.func.__name__.replace("_rows", "")
    return load.__name__


def suite(name: str) -> list[TrainingTask]:
    return SUITES[name]()


def test_train_v2_is_train_plus_new_tasks_and_has_the_issue_mix() -> None:
    train, train_v2 = suite("train"), suite("train_v2")
    assert len(train) == 10 and len(train_v2) >= 24
    for old, kept in zip(train, train_v2, strict=False):  # the shipped recipe's tasks, unchanged
        assert (old.name, old.learning_rate, old.batch_size, old.epochs, old.optimizer) == (
            kept.name, kept.learning_rate, kept.batch_size, kept.epochs, kept.optimizer
        )
    assert len({t.name for t in train_v2}) == len(train_v2)
    assert {t.optimizer for t in train_v2} >= {"sgd", "adam", "adamw", "rmsprop"}
    assert any(t.optimizer == "sgd" and t.optimizer_kwargs.get("momentum") for t in train_v2)
    assert min(t.epochs for t in train_v2) == 20 and max(t.epochs for t in train_v2) == 100
    assert len({t.batch_size for t in train_v2}) >= 4
    assert len({dataset(t) for t in train_v2}) >= 12
    layers = [layer_types(t) for t in train_v2_extra()]
    assert any("Dropout" in kinds for kinds in layers)
    assert any("BatchNormalization" in kinds for kinds in layers)


def test_validation_is_disjoint_from_train_and_holdout() -> None:
    validation = suite("validation")
    assert len(validation) >= 6
    others = suite("train_v2") + suite("holdout")
    assert not {t.name for t in validation} & {t.name for t in others}
    assert not {dataset(t) for t in validation} & {dataset(t) for t in others}
    assert {t.kind for t in validation} == {"classification", "regression"}
    assert not {t.name for t in suite("train_v2")} & {t.name for t in suite("holdout")}
    # Holdout differs from every train_v2 task in its dataset or its layers.
    seen = {(dataset(t), frozenset(layer_types(t))) for t in suite("train_v2")}
    assert not {(dataset(t), frozenset(layer_types(t))) for t in suite("holdout")} & seen


def test_train_v2_and_validation_carry_their_tuned_rates() -> None:
    tuned = suite("train_v2") + suite("validation")
    assert {t.name for t in tuned} == set(TUNED_LEARNING_RATES)
    for task in tuned:
        assert task.tuned_learning_rate == TUNED_LEARNING_RATES[task.name]
    assert all(t.tuned_learning_rate is None for t in suite("train") + suite("holdout"))


@pytest.mark.parametrize("name", ["clf_bn_adamw", "cancer_dropout_sgdm"])
def test_env_runner_resets_batch_norm_and_dropout_tasks_exactly(name: str) -> None:
    task = next(t for t in suite("train_v2") if t.name == name)
    runner = make_runner(task)
    try:
        runs = []
        for _ in range(2):
            runner.reset(seed=7, learning_rate=task.learning_rate)
            runs.append([runner.run_epoch() for _ in range(2)])
        assert runs[0] == runs[1]
        assert all(math.isfinite(logs["val_loss"]) for logs in runs[0])
    finally:
        runner.close()


# --- the starting-rate distribution ------------------------------------------------------


def toy_task(tuned: float | None = 0.02) -> TrainingTask:
    return TrainingTask(
        "toy", kind="regression", build_model=lambda: None, load_data=lambda: None, loss="mse",
        learning_rate=1e-3, tuned_learning_rate=tuned,
    )


def draws(env: KerasTrainingEnv, task: TrainingTask, count: int) -> np.ndarray:
    env.np_random = np.random.default_rng(0)
    return np.array([env.sample_learning_rate(task) for _ in range(count)])


def test_tuned_distribution_proportions() -> None:
    task = toy_task(tuned=0.02)
    env = KerasTrainingEnv(tasks=[task], lr_distribution="tuned", tuned_fraction=1 / 3)
    log_factor = np.log10(draws(env, task, 6000) / 0.02)
    near = np.abs(log_factor) <= math.log10(TUNED_SPREAD) + 1e-12
    # A third near the tuned rate, plus the part of the log-uniform rest that falls there.
    expected_near = 1 / 3 + 2 / 3 * 2 * math.log10(1.5) / 4
    assert near.mean() >= 1 / 3
    assert near.mean() == pytest.approx(expected_near, abs=0.025)
    assert log_factor.min() >= -2 - 1e-9 and log_factor.max() <= 2 + 1e-9
    far = log_factor[~near]  # log-uniform over [-2, 2] outside the near band
    assert np.mean(far < -1) == pytest.approx(np.mean(far > 1), abs=0.03)
    assert np.mean(far < -1) == pytest.approx(1 / (4 - 2 * math.log10(1.5)), abs=0.03)


def test_default_distribution_draws_as_before() -> None:
    """The shipped recipe's draws: default x exp(uniform(log low, log high)), one draw each."""
    task = toy_task()
    env = KerasTrainingEnv(tasks=[task], lr_factor_range=(0.05, 20.0))
    rng = np.random.default_rng(0)
    low, high = np.log((0.05, 20.0))
    expected = [task.learning_rate * float(np.exp(rng.uniform(low, high))) for _ in range(50)]
    assert draws(env, task, 50).tolist() == expected


def test_tuned_distribution_needs_tuned_rates() -> None:
    task = toy_task(tuned=None)
    env = KerasTrainingEnv(tasks=[task], lr_distribution="tuned")
    with pytest.raises(TaskError, match=r"'toy' has no tuned_learning_rate.*lr_distribution"):
        env.sample_learning_rate(task)
    with pytest.raises(ValueError, match="lr_distribution must be one of default, tuned"):
        KerasTrainingEnv(tasks=[task], lr_distribution="uniform")
    with pytest.raises(TaskError, match="tuned_learning_rate must be positive"):
        toy_task(tuned=0.0)


def test_env_settings_pass_the_distribution_to_the_env() -> None:
    config = build_config({"env": {"lr_distribution": "tuned", "tuned_fraction": 0.5}})
    kwargs = config.env.env_kwargs()
    assert (kwargs["lr_distribution"], kwargs["tuned_fraction"]) == ("tuned", 0.5)
    env = KerasTrainingEnv(tasks=[toy_task()], **kwargs)
    assert (env.lr_distribution, env.tuned_fraction) == ("tuned", 0.5)
    assert EnvSettings().lr_distribution == "default"
    with pytest.raises(TrainError, match="env.lr_distribution must be one of default, tuned"):
        build_config({"env": {"lr_distribution": "tunned"}})
    with pytest.raises(TrainError, match=r"env.tuned_fraction must be in \[0, 1\]"):
        build_config({"env": {"tuned_fraction": 1.5}})


# --- the tuning grid (experiments/tune_suite.py) ---------------------------------------------


def test_tuning_grid_extends_at_an_edge_by_its_step_for_two_decades() -> None:
    for sign, expected in ((1, [0.002154, 0.0004642, 0.0001]), (-1, [464.2, 2154.0, 10000.0])):
        scores = {f: sign * f for f in oracle_factors(7)}  # the winner is always the edge
        added = []
        while (factor := extension(scores)) is not None:
            added.append(factor)
            scores[factor] = sign * factor
        assert added == expected
    inside = {f: abs(math.log(f / 4.642)) for f in oracle_factors(7)}
    assert extension(inside) is None and best_factor(inside) == 4.642


def test_tuning_grid_ties_and_divergence() -> None:
    assert best_factor({0.2154: 1.0, 21.54: 1.0, 100.0: 2.0}) == 0.2154  # the nearer to x1
    assert best_factor({0.01: math.nan, 1.0: math.inf}) == 1.0  # all diverged: the default
    assert extension({f: math.inf for f in oracle_factors(7)}) is None
    assert best_factor({0.01: 0.5, 1.0: math.inf, 100.0: math.nan}) == 0.01


def test_the_suites_tuned_rates_are_the_measured_ones() -> None:
    """``envs/suites.py`` carries each task's tuned rate by hand; they must equal what
    ``experiments/tune_suite.py`` measured (``experiments/tuned_rates.json``)."""
    import json

    from fitpilot.envs.suites import TUNED_LEARNING_RATES

    measured = json.loads((ROOT / "experiments" / "tuned_rates.json").read_text())
    renamed = measured["settings"].get("renamed_after_measuring", {})
    rates = {renamed.get(name, name): figures["tuned_learning_rate"]
             for name, figures in measured["tasks"].items()}
    assert {name: rates.get(name) for name in TUNED_LEARNING_RATES} == TUNED_LEARNING_RATES
