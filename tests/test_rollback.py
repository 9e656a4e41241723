"""The rollback action (actions v2): best weights and optimizer state back, in env and callback."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from fitpilot.controller.actions import (
    ActionError,
    Decision,
    DiscreteActions,
    action_scheme_from_dict,
    rollback_learning_rate,
)
from fitpilot.controller.bundle import Bundle
from fitpilot.controller.callback import LearnedController
from fitpilot.controller.features import FeaturizerConfig
from fitpilot.controller.policy import MLPPolicy, ObsNormalization

V2 = DiscreteActions.v2()
HALVE, KEEP, X15, DOUBLE, STOP, ROLLBACK = range(6)


def test_the_v2_scheme_and_v1_unchanged() -> None:
    assert V2.names == ("lr x0.5", "lr x1", "lr x1.5", "lr x2", "stop", "rollback")
    assert V2.n == 6 and V2.space().n == 6
    assert V2.decode(ROLLBACK) == Decision(stop=False, factor=0.5, name="rollback", rollback=True)
    assert V2.decode(STOP).stop and not V2.decode(DOUBLE).rollback
    assert action_scheme_from_dict(V2.to_dict()) == V2 and V2.to_dict()["version"] == 2
    v1 = DiscreteActions()
    assert v1.to_dict() == {"version": 1, "kind": "discrete", "factors": [1 / 3, 1.0, 3.0]}
    assert v1.n == 4 and v1.names == ("lower", "keep", "raise", "stop")
    assert action_scheme_from_dict(v1.to_dict()) == v1
    with pytest.raises(ActionError, match="reads versions 1, 2, 3"):
        action_scheme_from_dict({**V2.to_dict(), "version": 4})
    assert rollback_learning_rate(0.1, V2.decode(ROLLBACK), 1e-3, 1.0) == 0.05
    assert rollback_learning_rate(1e-3, V2.decode(ROLLBACK), 1e-3, 1.0) == 1e-3  # clamped


def scripted_bundle(featurizer: FeaturizerConfig, schedule: dict[float, int]) -> Bundle:
    """A linear policy whose action depends on the ``progress`` feature only.

    ``schedule`` maps a slope to an action: logit_a = slope_a * progress + bias_a, set so
    that the 8-epoch budget of ``tiny_task`` gives x2 at epochs 1-2, rollback at 3, then keep.
    """
    size = featurizer.size
    head_w = np.zeros((size, V2.n), "f")
    head_b = np.full(V2.n, -50.0, "f")
    for action, (slope, bias) in schedule.items():
        head_w[0, action], head_b[action] = slope, bias
    return Bundle(MLPPolicy((), (head_w, head_b)), featurizer, V2,
                  ObsNormalization(np.zeros(size, "f"), np.ones(size, "f")))


# x2 (0) beats the others at progress 1/8 and 2/8, rollback (8p - 2.5) at 3/8, keep after.
SCHEDULE = {DOUBLE: (0.0, 0.0), ROLLBACK: (8.0, -2.5), KEEP: (16.0, -6.0)}


def values(variables: list) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def optimizer_state(optimizer: keras.optimizers.Optimizer) -> list:
    return [v for v in optimizer.variables if v is not optimizer.learning_rate]


def assert_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)  # tolerance 0


def adam_task():
    from tests.test_callback import tiny_task

    return dataclasses.replace(tiny_task(), optimizer="adam", learning_rate=0.25)


@pytest.mark.parametrize("featurizer", [FeaturizerConfig(), FeaturizerConfig(version=2)])
def test_env_and_callback_roll_back_to_the_best_epoch_alike(featurizer: FeaturizerConfig) -> None:
    """The env's episode replayed through the callback: same decisions, same rolled-back state.

    Both restore the best epoch's weights and Adam state exactly, and lower the best
    epoch's rate; the callback sees the env's weights after every epoch (replayed).
    """
    from fitpilot.envs.env import KerasTrainingEnv

    task, bundle = adam_task(), scripted_bundle(featurizer, SCHEDULE)
    env = KerasTrainingEnv(tasks=[task], featurizer=featurizer, actions=V2)
    snapshots: dict[int, tuple] = {}  # epoch -> (weights, optimizer state) after it
    starts: list[tuple] = []  # (weights, optimizer state) each epoch started from
    logs_seen: list[dict] = []
    env.begin_reset(seed=5, options={"learning_rate": 0.25})
    runner = env.runner
    model = runner.model

    def state() -> tuple:
        return values(model.weights), values(optimizer_state(model.optimizer))

    def epoch() -> dict:
        starts.append(state())
        logs = runner.run_epoch()
        snapshots[runner.epoch] = state()
        logs_seen.append(logs)
        return logs

    obs, info = env.end_reset(epoch())
    pipeline, names, lrs = bundle.make_pipeline(), [], []
    lrs_at = {1: 0.25}  # epoch -> the rate it trained with
    done = False
    while not done:
        action = bundle.policy.act(pipeline(obs)[None])[0]
        ended = env.begin_step(action)
        if ended is not None:
            break
        if env.last_action == "rollback":
            best = info["best_epoch"]
            assert best < info["epoch"]  # a real step back
            assert_equal(list(state()[0]), snapshots[best][0])  # weights: the best epoch's
            assert_equal(list(state()[1]), snapshots[best][1])  # optimizer state too
            assert env.runner.learning_rate == pytest.approx(lrs_at[best] * 0.5, rel=1e-6)
        obs, _, done, _, info = env.end_step(epoch())
        names.append(info["action"])
        lrs.append(info["learning_rate"])
        lrs_at[info["epoch"]] = info["learning_rate"]
    env.close()
    assert names[:3] == ["lr x2", "lr x2", "rollback"] and "lr x1" in names

    # The callback on the same weights and logs.
    net = task.compiled_model(0.25)
    net.build((None, 6))
    net.optimizer.build(net.trainable_variables)
    controller = LearnedController(bundle)
    controller.set_model(net)
    controller.set_params({"epochs": task.epochs, "verbose": 0})
    for variable, value in zip(net.weights, starts[0][0], strict=True):
        variable.assign(value)
    controller.on_train_begin()
    for index, logs in enumerate(logs_seen):
        weights, optimizer = snapshots[index + 1]
        for variable, value in zip(net.weights, weights, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer_state(net.optimizer), optimizer, strict=True):
            variable.assign(value)
        controller.on_epoch_end(index, dict(logs))
        if controller.decisions[-1].action == "rollback":
            # what the env's next epoch started from: its rolled-back state
            assert_equal(values(net.weights), starts[index + 1][0])
            assert_equal(values(optimizer_state(net.optimizer)), starts[index + 1][1])
    assert [d.action for d in controller.decisions[: len(names)]] == names
    np.testing.assert_allclose([d.lr_after for d in controller.decisions[: len(lrs)]], lrs,
                               rtol=1e-6)


def test_callback_rollback_restores_the_best_epoch_in_a_real_fit() -> None:
    """In ``fit``: right after the rollback the weights and Adam state are the best epoch's."""
    from tests.test_callback import data, model

    bundle = scripted_bundle(FeaturizerConfig(), SCHEDULE)
    net = model(keras.optimizers.Adam(learning_rate=0.25))
    controller = LearnedController(bundle)
    after: dict[int, tuple] = {}

    class Record(keras.callbacks.Callback):  # after the controller: sees its changes
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            after[epoch + 1] = (values(net.weights), values(optimizer_state(net.optimizer)),
                                float(net.optimizer.learning_rate.numpy()))

    before: dict[int, tuple] = {}

    class Before(keras.callbacks.Callback):  # before the controller: the epoch's own state
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            before[epoch + 1] = (values(net.weights), values(optimizer_state(net.optimizer)),
                                 float(net.optimizer.learning_rate.numpy()))

    x, y = data()
    net.fit(x, y, validation_split=0.25, epochs=8, batch_size=16, verbose=0,
            callbacks=[Before(), controller, Record()])
    actions = [d.action for d in controller.decisions]
    assert actions[:3] == ["lr x2", "lr x2", "rollback"]
    rolled = 3
    best = max(e for e in range(1, rolled + 1)
               if controller.decisions[e - 1].monitor == min(
                   d.monitor for d in controller.decisions[:rolled]))
    assert best < rolled  # a real step back
    assert_equal(after[rolled][0], before[best][0])
    assert_equal(after[rolled][1], before[best][1])
    assert after[rolled][2] == pytest.approx(before[best][2] * 0.5, rel=1e-6)
