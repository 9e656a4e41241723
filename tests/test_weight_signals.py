"""Weight signals and featurizer v2: hand computations, bounds, v1 untouched, env == callback."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import keras
import numpy as np
import pytest

from fitpilot.controller.bundle import Bundle, load_bundle, save_bundle
from fitpilot.controller.callback import LearnedController
from fitpilot.controller.features import (
    FEATURE_NAMES,
    WEIGHT_FEATURE_NAMES,
    Featurizer,
    FeaturizerConfig,
    FeaturizerError,
)
from fitpilot.controller.policy import MLPPolicy, ObsNormalization
from fitpilot.controller.weight_signals import (
    WeightSignals,
    WeightSignalsError,
    WeightSignalValues,
    sample_indices,
)
from tests.bundles import V1_BUNDLE, random_bundle

V2 = FeaturizerConfig(version=2)


def sequence(seed: int = 0, epochs: int = 4) -> list[list[np.ndarray]]:
    """Weights of two variables (3x4 and 5) at the start and after each epoch."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(3, 4)).astype("f"), rng.normal(size=5).astype("f")]
    out = [weights]
    for _ in range(epochs):
        weights = [w + rng.normal(0, 0.1, w.shape).astype("f") for w in weights]
        out.append(weights)
    return out


def flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.reshape(-1) for w in weights]).astype(np.float64)


def by_hand(history: list[list[np.ndarray]]) -> list[tuple[float, float, float]]:
    """(cosine, update ratio, distance) after each epoch, straight from the definitions."""
    w = [flat(h) for h in history]
    out = []
    for t in range(1, len(w)):
        d = w[t] - w[t - 1]
        cos = 0.0 if t == 1 else d @ (w[t - 1] - w[t - 2]) / (
            np.linalg.norm(d) * np.linalg.norm(w[t - 1] - w[t - 2]))
        out.append((cos, np.linalg.norm(d) / np.linalg.norm(w[t]),
                    np.linalg.norm(w[t] - w[0]) / np.linalg.norm(w[0])))
    return out


def test_signals_match_a_hand_computation() -> None:
    history = sequence()
    signals = WeightSignals()
    signals.start(history[0])
    got = [dataclasses.astuple(signals.update(w)) for w in history[1:]]
    np.testing.assert_allclose(got, by_hand(history), rtol=1e-12)
    assert got[0][0] == 0.0  # no previous update at the first epoch
    assert signals.size == 17  # fewer coordinates than the sample: all of them


def test_a_subsample_is_the_hand_computation_on_its_coordinates() -> None:
    history = sequence(seed=1)
    signals = WeightSignals(sample_size=7, seed=3)
    signals.start(history[0])
    got = [dataclasses.astuple(signals.update(w)) for w in history[1:]]
    chosen = np.concatenate([i + offset for i, offset in
                             zip(sample_indices([12, 5], 7, 3), [0, 12], strict=True)])
    assert len(chosen) == len(set(chosen)) == signals.size == 7
    picked = [[flat(h)[chosen]] for h in history]
    np.testing.assert_allclose(got, by_hand(picked), rtol=1e-12)


def test_rebase_without_start_and_zero_norms() -> None:
    history = sequence(seed=2)
    signals = WeightSignals()
    assert signals.update(history[1]) == WeightSignalValues()  # no start: it becomes w_0
    values = signals.update(history[2])
    assert values.cosine == 0.0 and values.update_ratio > 0
    signals.rebase(history[1])  # weights put back: the next update starts there, cosine 0
    after = signals.update(history[3])
    expected = np.linalg.norm(flat(history[3]) - flat(history[1])) / np.linalg.norm(
        flat(history[3]))
    assert after.cosine == 0.0 and after.update_ratio == pytest.approx(expected, rel=1e-12)

    zeros = [np.zeros((2, 2), "f")]
    signals = WeightSignals()
    signals.start(zeros)
    assert signals.update(zeros) == WeightSignalValues(0.0, 0.0, 0.0)  # 0/0 is 0
    moved = signals.update([np.ones((2, 2), "f")])
    assert moved.distance == math.inf and moved.update_ratio == 1.0
    assert signals.update([np.ones((2, 2), "f")]).cosine == 0.0  # a zero update: no angle
    with pytest.raises(WeightSignalsError, match="differ from the ones this run sampled"):
        signals.update([np.ones(4, "f")])


def test_a_new_run_may_be_of_another_model() -> None:
    """An environment's featurizer starts runs of its tasks' models in turn."""
    small, large = sequence(seed=5), [[np.full((40, 30), float(i), "f")] for i in range(1, 4)]
    signals = WeightSignals(sample_size=100)
    for history in (small, large, small):
        signals.start(history[0])
        got = [dataclasses.astuple(signals.update(w)) for w in history[1:3]]
        assert signals.size == min(100, history[0][0].size + (5 if history is small else 0))
        if history is large:  # every coordinate moves alike: exact values on any sample
            assert got[0][1:] == pytest.approx((1 / 2, 1.0)) and got[1][0] == pytest.approx(1.0)


def test_the_sample_bounds_memory_whatever_the_model_size() -> None:
    tracemalloc.start()
    indices = sample_indices([10**9, 3 * 10**9, 7], 16_384, 0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(len(i) for i in indices) == 16_384
    assert peak < 4 * 2**20  # a few copies of 16k indices, not 4e9 of anything
    assert all((np.diff(i) > 0).all() for i in indices) and indices[1].max() < 3 * 10**9
    big = [np.zeros((1000, 1000), "f"), np.zeros(3000, "f")]
    signals = WeightSignals()
    signals.start(big)
    assert signals.size == 16_384 and signals.sample(big).shape == (16_384,)
    # the same coordinates every run (fixed seed)
    assert all((a == b).all() for a, b in zip(
        indices, sample_indices([10**9, 3 * 10**9, 7], 16_384, 0), strict=True))


def test_backend_variables_gather_the_same_values() -> None:
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(300), keras.layers.Dense(40)])
    on_host, on_backend = WeightSignals(sample_size=1000), WeightSignals(sample_size=1000)
    as_numpy = [keras.ops.convert_to_numpy(v) for v in net.trainable_variables]
    np.testing.assert_array_equal(on_backend.sample(net.trainable_variables),
                                  on_host.sample(as_numpy))
    net.trainable_variables[0].assign(as_numpy[0] + 1)  # the gather reads current values
    assert on_backend.sample(net.trainable_variables)[0] == on_host.sample(
        [as_numpy[0] + 1, *as_numpy[1:]])[0]


# --- featurizer v2 ---------------------------------------------------------------------


LOGS = [{"loss": 1.0, "val_loss": 1.2}, {"loss": 0.7, "val_loss": 0.9},
        {"loss": 0.6, "val_loss": 0.95}, {"loss": 0.5, "val_loss": math.nan}]


def test_featurizer_v2_appends_the_weight_features_to_the_v1_ones() -> None:
    history = sequence(seed=4)
    v1, v2 = Featurizer(), Featurizer(V2)
    assert v2.feature_names == FEATURE_NAMES + WEIGHT_FEATURE_NAMES and v2.size == 18
    assert v1.size == Featurizer.size == 15 and V2.size == 18
    v1.reset(10)
    v2.reset(10, weights=history[0])
    expected = by_hand(history)
    for t, logs in enumerate(LOGS):
        a = v1.observe(logs, 0.01, weights=history[t + 1])  # v1 ignores weights
        b = v2.observe(logs, 0.01, weights=history[t + 1])
        np.testing.assert_array_equal(b[:15], a)
        cos, ratio, distance = expected[t]
        np.testing.assert_allclose(b[15:], [cos, math.log10(ratio), math.log10(distance)],
                                   rtol=1e-6)
    with pytest.raises(FeaturizerError, match="pass `weights`"):
        v2.observe(LOGS[0], 0.01)


def test_featurizer_v2_features_are_finite_and_clipped() -> None:
    featurizer = Featurizer(V2)
    featurizer.reset(5, weights=[np.zeros(3, "f")])
    obs = featurizer.observe(LOGS[0], 0.01, [np.zeros(3, "f")])  # log10(0) -> -clip
    assert obs[16] == -5.0 and obs[17] == -5.0
    obs = featurizer.observe(LOGS[1], 0.01, [np.full(3, np.nan, "f")])
    assert np.isfinite(obs).all()
    obs = featurizer.observe(LOGS[2], 0.01, [np.ones(3, "f")])  # distance from 0: inf -> clip
    assert obs[17] == 5.0


def test_config_v1_dict_unchanged_and_v2_round_trip() -> None:
    assert FeaturizerConfig().to_dict() == {"version": 1, "train_key": "loss",
                                            "val_key": "val_loss", "window": 3, "clip": 5.0}
    with pytest.raises(FeaturizerError, match="unknown featurizer settings.*weight_sample"):
        FeaturizerConfig.from_dict({**FeaturizerConfig().to_dict(), "weight_sample": 10})
    data = FeaturizerConfig(version=2, weight_sample=100).to_dict()
    assert data["version"] == 2 and data["weight_sample"] == 100
    assert FeaturizerConfig.from_dict(data) == FeaturizerConfig(version=2, weight_sample=100)


def v2_bundle(seed: int = 0) -> Bundle:
    base = random_bundle(seed)
    rng = np.random.default_rng(seed)
    hidden = ((rng.normal(0, 0.5, (18, 16)).astype("f"), np.zeros(16, "f")),)
    policy = MLPPolicy(hidden, base.policy.head)
    return dataclasses.replace(base, policy=policy, featurizer=V2,
                               normalization=ObsNormalization(np.zeros(18, "f"),
                                                              np.ones(18, "f")))


def test_bundles_record_v2_and_v1_bundles_load_as_before(tmp_path) -> None:
    path = tmp_path / "v2.zip"
    save_bundle(v2_bundle(), path)
    loaded = load_bundle(path)
    assert loaded.featurizer == V2 and loaded.make_featurizer().size == 18
    # The previously shipped v1 bundle: loads, and its manifest re-serialises to the same hash
    # (a v1 featurizer/action dict is byte-for-byte what it was).
    import json
    import zipfile

    stored = json.loads(zipfile.ZipFile(V1_BUNDLE).read("manifest.json"))
    bundle = load_bundle(V1_BUNDLE)
    assert bundle.featurizer.version == 1 and bundle.make_featurizer().size == 15
    assert bundle.content_hash == stored["hash"]
    assert bundle.manifest()["featurizer"] == stored["featurizer"]
    assert bundle.manifest()["actions"] == stored["actions"]


# --- the same values in the environment and the callback ------------------------------


def test_env_and_callback_compute_the_same_weight_features_on_replayed_weights() -> None:
    from fitpilot.envs.env import KerasTrainingEnv
    from tests.test_callback import tiny_task

    task, bundle = tiny_task(), v2_bundle(seed=5)
    head_w, head_b = bundle.policy.head
    keep = np.full_like(head_b, -10.0)
    keep[1] = 10.0  # the callback keeps the rate, as the env episode below does
    bundle = dataclasses.replace(bundle, policy=MLPPolicy(bundle.policy.hidden,
                                                          (np.zeros_like(head_w), keep)))
    env = KerasTrainingEnv(tasks=[task], featurizer=V2, actions=bundle.actions)
    env_obs, weights, logs = [], [], []
    observe = env.featurizer.observe

    def recording(epoch_logs, lr, w=None):
        obs = observe(epoch_logs, lr, w)
        env_obs.append(obs)
        weights.append([keras.ops.convert_to_numpy(v) for v in w])
        logs.append(dict(epoch_logs))
        return obs

    env.featurizer.observe = recording
    env.begin_reset(seed=3, options={"learning_rate": 0.05})
    start = [keras.ops.convert_to_numpy(v) for v in env.runner.model.trainable_variables]
    obs, _ = env.end_reset(env.runner.run_epoch())
    done = False
    while not done:
        obs, _, done, _, _ = env.step(1)  # keep: the env's own trajectory
    env.close()

    net = task.compiled_model(0.05)
    net.build((None, 6))
    controller = LearnedController(bundle)
    cb_obs = []
    cb_observe = controller.featurizer.observe

    def cb_recording(epoch_logs, lr, w=None):
        obs = cb_observe(epoch_logs, lr, w)
        cb_obs.append(obs)
        return obs

    controller.featurizer.observe = cb_recording
    controller.set_model(net)
    controller.set_params({"epochs": task.epochs, "verbose": 0})
    net.set_weights(start)
    controller.on_train_begin()
    for epoch, (w, epoch_logs) in enumerate(zip(weights, logs, strict=True)):
        net.set_weights(w)
        controller.on_epoch_end(epoch, dict(epoch_logs))
        if controller.model.stop_training:
            break
    assert len(cb_obs) == len(env_obs) == task.epochs
    got, want = np.stack(cb_obs), np.stack(env_obs)
    np.testing.assert_array_equal(got[:, 15:], want[:, 15:])  # the weight features: exact
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (want[1:, 15] != 0).all()  # the cosine is defined from epoch 2 on
