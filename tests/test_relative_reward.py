"""The relative reward: progress beyond a ``ReduceLROnPlateau`` reference run of the same cell."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from fitpilot.agents.config import EnvSettings, TrainConfig, TrainError
from fitpilot.controller.actions import DiscreteActions
from fitpilot.envs.env import EnvError, KerasTrainingEnv
from fitpilot.envs.plateau_run import ReferenceCurves, reduce_lr_on_plateau, reference_curve
from tests.user_tasks import TASKS

ACTIONS = DiscreteActions.v2()  # x1/2, x1, x1.5, x2, stop, rollback
HALVE, KEEP, STOP = 0, 1, 4


class ScriptedRunner:
    """An ``EpochRunner`` whose validation losses are given; records the rate of each epoch."""

    def __init__(self, val_losses: list[float]) -> None:
        self.val_losses, self.rates, self.learning_rate, self.epoch = val_losses, [], 0.0, 0

    def reset(self, seed: int, learning_rate: float) -> None:
        self.learning_rate, self.epoch, self.rates = learning_rate, 0, []

    def run_epoch(self) -> dict[str, float]:
        self.rates.append(self.learning_rate)
        value = self.val_losses[self.epoch]
        self.epoch += 1
        return {"loss": value, "val_loss": value}


def test_reference_curve_follows_keras_reduce_lr_on_plateau() -> None:
    losses = [1.0, 0.8, 0.9, 0.9, 0.9, 0.85, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    runner = ScriptedRunner(losses)
    curve = reference_curve(runner, seed=0, learning_rate=0.1, epochs=len(losses))
    np.testing.assert_allclose(curve, np.minimum.accumulate(losses))
    # Keras' own callback on the same losses, with a stand-in optimizer, sets the same rates.
    optimizer = SimpleNamespace(learning_rate=0.1)
    callback = reduce_lr_on_plateau()
    callback.set_model(SimpleNamespace(optimizer=optimizer))
    callback.on_train_begin()
    expected = []
    for epoch, loss in enumerate(losses):
        expected.append(optimizer.learning_rate)
        callback.on_epoch_end(epoch, {"val_loss": loss})
    assert runner.rates == expected
    assert runner.rates[4] == 0.1 and runner.rates[5] == 0.05  # patience 3: halved after epoch 5
    assert min(runner.rates) < 0.05  # and again after the cooldown


def test_a_diverging_reference_keeps_its_best_value() -> None:
    runner = ScriptedRunner([1.0, 0.5, math.nan, 0.1])
    curve = reference_curve(runner, seed=0, learning_rate=0.1, epochs=4)
    np.testing.assert_array_equal(curve, [1.0, 0.5, 0.5, 0.5])
    assert runner.epoch == 3  # stopped at the divergence


def test_reference_curves_are_trained_once_per_cell() -> None:
    curves = ReferenceCurves(max_cells=2)
    runner = ScriptedRunner([1.0, 0.9, 0.8])
    first = curves.get("a", runner, seed=1, learning_rate=0.1, epochs=3)
    assert curves.get("a", runner, seed=1, learning_rate=0.1, epochs=3) is first
    curves.get("a", runner, seed=2, learning_rate=0.1, epochs=3)
    curves.get("b", runner, seed=1, learning_rate=0.1, epochs=3)  # evicts the oldest cell
    curves.get("a", runner, seed=1, learning_rate=0.1, epochs=3)
    assert curves.computed == 4
    assert not first.flags.writeable


@pytest.fixture(scope="module")
def env() -> KerasTrainingEnv:
    environment = KerasTrainingEnv(
        tasks=[TASKS[1]], actions=ACTIONS, reward="relative", epoch_cost=0.01
    )
    yield environment
    environment.close()


def plateau_policy_episode(env: KerasTrainingEnv, seed: int) -> tuple[list[float], dict]:
    """Replay the reference's own decisions through the env's actions: lower x1/2 or keep."""
    optimizer = SimpleNamespace(learning_rate=0.01)
    callback = reduce_lr_on_plateau()
    callback.set_model(SimpleNamespace(optimizer=optimizer))
    callback.on_train_begin()
    _, info = env.reset(seed=seed, options={"learning_rate": 0.01})
    rewards, terminated = [], False
    while not terminated:
        before = optimizer.learning_rate
        callback.on_epoch_end(info["epoch"] - 1, dict(info["logs"]))
        action = HALVE if optimizer.learning_rate < before else KEEP
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
    return rewards, info


def test_matching_the_heuristic_earns_only_the_epoch_cost(env: KerasTrainingEnv) -> None:
    rewards, info = plateau_policy_episode(env, seed=5)
    budget = TASKS[1].epochs
    assert info["epoch"] == budget and len(rewards) == budget - 1
    np.testing.assert_allclose(rewards, -env.epoch_cost, atol=1e-6)
    assert info["best"] == pytest.approx(env._reference[-1], rel=1e-6)


def test_rewards_add_up_to_the_log_ratio_to_the_reference(env: KerasTrainingEnv) -> None:
    budget = TASKS[1].epochs
    for seed, actions in [(3, [KEEP] * budget), (4, [3, 3, 0, KEEP, STOP])]:
        _, info = env.reset(seed=seed, options={"learning_rate": 0.01})
        total, terminated = 0.0, False
        for action in actions:
            _, reward, terminated, _, info = env.step(action)
            total += reward
            if terminated:
                break
        assert terminated
        epochs = info["epoch"]
        final_reference = env._reference[-1]
        expected = math.log(final_reference / info["best"]) - env.epoch_cost * (epochs - 1)
        assert total == pytest.approx(expected, abs=1e-5)


def test_a_divergence_pays_the_reference_progress_it_forfeits() -> None:
    env = KerasTrainingEnv(
        tasks=[TASKS[1]], reward="relative", divergence_penalty=0.5, max_lr=1e30
    )
    try:
        _, info = env.reset(seed=0, options={"learning_rate": 0.01})
        total, terminated = 0.0, False
        while not terminated:
            _, reward, terminated, _, info = env.step(2)  # raise x3 every epoch
            total += reward
        assert info["diverged"] and info["epoch"] < TASKS[1].epochs
        charged = info["epoch"] - 2  # epochs 2 .. t-1 (the divergent one costs the penalty)
        expected = (
            math.log(env._reference[-1] / info["best"]) - env.epoch_cost * charged - 0.5
        )
        assert total == pytest.approx(expected, abs=1e-5)
    finally:
        env.close()


def test_the_absolute_reward_is_unchanged_by_the_option() -> None:
    absolute = KerasTrainingEnv(tasks=[TASKS[1]])
    try:
        absolute.reset(seed=2, options={"learning_rate": 0.01})
        assert absolute._reference is None and absolute.reference_curves.computed == 0
    finally:
        absolute.close()
    with pytest.raises(EnvError, match="reward must be one of absolute, relative"):
        KerasTrainingEnv(tasks=[TASKS[1]], reward="relativ")


def test_reference_runs_are_reused_for_a_repeated_cell(env: KerasTrainingEnv) -> None:
    env.reset(seed=11, options={"learning_rate": 0.01})
    computed = env.reference_curves.computed
    env.reset(seed=11, options={"learning_rate": 0.01})
    assert env.reference_curves.computed == computed


def test_batched_training_refuses_the_relative_reward() -> None:
    settings = EnvSettings(reward="relative", featurizer={"version": 2})
    config = TrainConfig(vec="batched", env=settings)
    with pytest.raises(TrainError, match=r"'relative' \(reference runs\).*vec='subproc'"):
        config.check()
    TrainConfig(vec="dummy", env=settings).check()
    TrainConfig(vec="batched", env=EnvSettings(featurizer={"version": 2})).check()
    with pytest.raises(TrainError, match="env.reward must be one of"):
        EnvSettings(reward="best").check()
