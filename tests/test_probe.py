"""Controller v3's scale probe and first decision, in the environment and the callback alike.

- the probe leaves a model exactly as it was (weights, optimizer state, rate), here on
  TensorFlow and on JAX and torch in a subprocess;
- the environment and the callback measure the same rates on the same model, data and seed,
  and the environment's cached probe equals a fresh one;
- the environment's episode: the observation before the first epoch, the first decision
  setting epoch 1's rate from the probe's rates, the restart after a first-epoch NaN;
- the callback's first decision (``decisions[0]``, epoch 0), ``probe=False``, a generator
  refused with a clear error; a v3 bundle round trip.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from fitpilot.controller.actions import DiscreteActions, first_learning_rate
from fitpilot.controller.bundle import load_bundle, save_bundle
from fitpilot.controller.callback import ControllerError, LearnedController
from fitpilot.controller.features import PROBE_FEATURE_NAMES, FeaturizerConfig
from fitpilot.controller.probe import ProbeConfig, ProbeResult, measure, scale_probe
from fitpilot.envs.env import KerasTrainingEnv
from fitpilot.envs.loading import load_tasks
from fitpilot.envs.tasks import Split, TaskData, TrainingTask
from tests.bundles import random_bundle
from tests.other_backends import OTHER_BACKENDS, run_on_backend

ROOT = Path(__file__).resolve().parents[1]
TASKS = "tests.user_tasks:TASKS"
V3 = dict(featurizer=FeaturizerConfig(version=3), actions=DiscreteActions.v3())


def variables_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v))
            for v in [*model.variables, *model.optimizer.variables]]


def regression(rows: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype("float32")
    return x, (x @ rng.normal(size=(4, 1))).astype("float32")


def compiled(lr: float = 0.01) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(lr), "mse")
    return model


def check_probe_restores_exactly() -> None:
    """On the backend in force: a probe from a trained state leaves every variable as it was,
    and its rates lie in its range (run on JAX and torch by test_probe_on_other_backends)."""
    x, y = regression()
    model = compiled()
    model.fit(x, y, epochs=1, verbose=0)
    before = variables_of(model)
    result = scale_probe(model, x, y, 16, 6, 20, ProbeConfig())
    for a, b in zip(before, variables_of(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert 8 <= result.batches <= 16 and result.drop <= 0
    assert all(ProbeConfig().start_lr <= rate <= ProbeConfig().end_lr for rate in result.rates)


def test_the_probe_restores_exactly() -> None:
    check_probe_restores_exactly()


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_probe_restores_exactly_on_other_backends(backend: str) -> None:
    run_on_backend(backend, "tests.test_probe:check_probe_restores_exactly")


def test_the_probe_length_is_a_share_of_the_budget() -> None:
    config = ProbeConfig()
    assert config.batches_for(10, 10) == 16  # 5 batches: at least 16
    assert config.batches_for(20, 30) == 30  # 5% of 600
    assert config.batches_for(100, 40) == 48  # at most 48


def test_the_rates_of_a_recorded_curve() -> None:
    rates = [1e-5 * 10 ** (t / 4) for t in range(20)]
    losses = [1.0 - 0.04 * t if t < 14 else 0.48 + 0.3 * (t - 13) for t in range(20)]
    result = measure(rates, losses, 20, 1e-5)
    assert result.minimum == rates[13] and not result.diverged
    assert result.drop == pytest.approx(math.log(0.48))
    assert result.valley <= result.minimum and result.steepest <= result.minimum
    failed = measure(rates[:2], [math.nan, math.nan], 20, 1e-5)
    assert failed.rates == (1e-5, 1e-5, 1e-5) and failed.diverged and failed.drop == 0


def test_the_environment_and_the_callback_measure_the_same_scale() -> None:
    env = KerasTrainingEnv(tasks=TASKS, **V3)
    obs, info = env.reset(seed=0, options={"task": "user_mlp", "learning_rate": 0.01})
    task, runner = env.task, env.runner
    assert info["probe"]["batches"] == 16
    seed = env._seed  # the run's seed, drawn from the episode's
    assert env._probe_for(seed)[0] is env.probe  # cached
    runner.reset(seed=seed, learning_rate=0.01)
    fresh, _ = runner.scale_probe(env.featurizer.config.probe)
    assert fresh.rates == env.probe.rates and fresh.losses == env.probe.losses

    data = task.data()
    runner.reset(seed=seed, learning_rate=0.01)
    model = task.compiled_model(0.01)
    model(data.train.x[:2])  # built
    model.set_weights(runner.model.get_weights())
    controller = LearnedController(random_bundle(version=3))
    model.fit(data.train.x, data.train.y, batch_size=task.batch_size, epochs=task.epochs,
              validation_data=(data.validation.x, data.validation.y), verbose=0,
              shuffle=False, callbacks=[controller])
    assert controller.probe_result is not None and controller.probe_batches == 16
    np.testing.assert_allclose(controller.probe_result.losses, env.probe.losses, rtol=1e-5)
    assert controller.probe_result.rates == env.probe.rates


def test_the_first_decision_sets_epoch_one_from_the_probe() -> None:
    env = KerasTrainingEnv(tasks=TASKS, **V3)
    obs, info = env.reset(seed=1, options={"task": "user_mlp", "learning_rate": 0.001})
    names = env.featurizer.feature_names
    assert obs[names.index("before_first_epoch")] == 1.0 and info["epoch"] == 0
    assert obs[names.index("log10_lr_vs_probe_valley")] == pytest.approx(
        math.log10(0.001 / env.probe.valley), abs=1e-5)
    valley_x4 = DiscreteActions.v3().first.index(("valley", 4.0))
    obs, reward, terminated, _, info = env.step(valley_x4)
    assert info["epoch"] == 1 and info["action"] == "valley x4" and not terminated
    assert info["learning_rate"] == pytest.approx(4 * env.probe.valley, rel=1e-6)
    assert obs[names.index("before_first_epoch")] == 0.0
    assert math.isfinite(reward)  # epoch 1's progress from the untrained weights
    obs, reward, terminated, _, info = env.step(1)  # now a per-epoch action: keep
    assert info["epoch"] == 2 and info["learning_rate"] == pytest.approx(4 * env.probe.valley,
                                                                          rel=1e-6)


def sgd_regression() -> TrainingTask:
    """200 rows of a linear regression, SGD in batches of 8: a rate of 10 diverges in epoch 1."""

    def data() -> TaskData:
        x, y = regression(rows=300, seed=3)
        return TaskData(Split(x[:200], y[:200]), Split(x[200:250], y[200:250]),
                        Split(x[250:], y[250:]))

    return TrainingTask("sgd_regression", kind="regression", build_model=lambda: compiled(),
                        load_data=data, loss="mse", optimizer="sgd", learning_rate=0.01,
                        batch_size=8, epochs=10)


def test_a_first_epoch_nan_restarts_the_episode_as_the_callback_does() -> None:
    env = KerasTrainingEnv(tasks=[sgd_regression()], restarts=3, **V3)
    env.reset(seed=2, options={"learning_rate": 10.0})
    keep = DiscreteActions.v3().first.index(("start", 1.0))
    obs, reward, terminated, _, info = env.step(keep)
    assert info.get("restarted") and not terminated, info
    assert info["learning_rate"] <= 1.0 + 1e-6 and info["epoch"] >= 2
    assert reward <= -env.divergence_penalty + 5  # the restart's penalty


def test_the_callback_takes_a_first_decision(tmp_path: Path) -> None:
    save_bundle(random_bundle(version=3), tmp_path / "v3.zip")
    bundle = load_bundle(tmp_path / "v3.zip")
    assert bundle.featurizer.probe == ProbeConfig() and bundle.actions.first
    x, y = regression()
    controller = LearnedController(bundle, verbose=0)
    compiled(0.01).fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[controller])
    first = controller.decisions[0]
    assert first.epoch == 0 and first.lr_before == pytest.approx(0.01)
    probe = controller.probe_result
    decision = bundle.actions.decode(bundle.actions.first_names.index(first.action), first=True)
    assert first.lr_after == pytest.approx(
        first_learning_rate(0.01, decision, probe.anchors, 1e-7, 10.0), rel=1e-6)
    assert "scale probe" in controller.summary()

    skipped = LearnedController(bundle, probe=False)
    compiled(0.01).fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[skipped])
    assert skipped.decisions[0].action == "keep start" and skipped.probe_batches == 0

    def generator():
        while True:
            yield x[:16], y[:16]

    with pytest.raises(ControllerError, match="not a generator.*probe=False"):
        compiled(0.01).fit(generator(), steps_per_epoch=4, epochs=2, verbose=0, shuffle=False,
                           callbacks=[LearnedController(bundle, monitor="loss")])


def constant_bundle(action: int):
    """A v3 bundle whose policy always takes ``action`` (the first decision and every epoch's)."""
    bundle = random_bundle(version=3)
    weights, bias = bundle.policy.head
    weights[...] = 0.0
    bias[...] = 0.0
    bias[action] = 1.0
    return bundle


def test_the_callback_keeps_the_start_when_no_epoch_beats_it() -> None:
    """As in the environment, version 3's first best is the untrained weights: a start so high
    that every epoch ends worse than untrained (finite) leaves the fit's starting weights, not
    the least bad epoch's."""
    x, y = regression()
    keras.utils.set_random_seed(0)
    model = compiled(3.0)
    start = model.get_weights()
    untrained = model.evaluate(x[72:], y[72:], verbose=0)  # the validation split's rows
    controller = LearnedController(constant_bundle(0), verbose=0)  # keep start, then x0.5
    history = model.fit(x, y, validation_split=0.25, epochs=3, verbose=0,
                        callbacks=[controller])
    assert min(history.history["val_loss"]) > 10 * controller.best
    assert controller.best_epoch == 0 and controller.best == pytest.approx(untrained, rel=1e-5)
    for before, after in zip(start, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_version_3_needs_both_halves() -> None:
    with pytest.raises(ValueError, match="go together"):
        KerasTrainingEnv(tasks=TASKS, featurizer=FeaturizerConfig(version=3))
    assert len(FeaturizerConfig(version=3).feature_names) == 18 + len(PROBE_FEATURE_NAMES)
    assert isinstance(ProbeResult(1e-3, 1e-3, 1e-3, 0.0, False, 16).anchors, dict)
    assert load_tasks(TASKS)


def test_a_benchmark_run_counts_the_probe_as_compute(tmp_path: Path) -> None:
    from fitpilot.experiments.runs import Runner, controller_factory
    from fitpilot.experiments.settings import RunKey, RunOrder

    save_bundle(random_bundle(version=3), tmp_path / "v3.zip")
    tasks = load_tasks("tests.benchmark_tasks:TASKS")
    runner = Runner(tasks, controller_factory(str(tmp_path / "v3.zip")), "v3")
    record = runner.run(RunOrder(RunKey("tiny_blobs", 0, 1.0, "learned"), 0.01))
    assert not record.failed, record.error
    assert record.decisions[0]["epoch"] == 0  # the first decision
    assert record.probe_epochs == pytest.approx(16 / 4)  # 16 probe batches, 4 per epoch
    assert record.compute == pytest.approx((record.epochs + 4) / record.budget)
