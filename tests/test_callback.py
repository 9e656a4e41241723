"""LearnedController inside model.fit: decisions, logs, best weights, bad input, parity."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from fitpilot.controller.actions import ActionError
from fitpilot.controller.bundle import Bundle, BundleError
from fitpilot.controller.callback import ControllerError, LearnedController
from fitpilot.controller.policy import MLPPolicy
from tests.bundles import random_bundle, write_random_bundle

LOWER, KEEP, RAISE, STOP = range(4)
ROOT = Path(__file__).resolve().parents[1]


def constant_bundle(action: int, frame_stack: int = 1) -> Bundle:
    """A bundle whose policy always picks ``action`` (whatever the observation)."""
    base = random_bundle(0, frame_stack)
    head_w, head_b = base.policy.head
    bias = np.full_like(head_b, -10.0)
    bias[action] = 10.0
    policy = MLPPolicy(base.policy.hidden, (np.zeros_like(head_w), bias))
    return dataclasses.replace(base, policy=policy)


def data(rows: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype("float32")
    return x, (x[:, :3].sum(axis=1) > 0).astype("int32")


def model(optimizer: str | keras.optimizers.Optimizer = "sgd", lr: float = 0.05) -> keras.Model:
    net = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
         keras.layers.Dense(2, activation="softmax")]
    )
    if isinstance(optimizer, str):
        optimizer = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
                     "rmsprop": keras.optimizers.RMSprop}[optimizer](learning_rate=lr)
    net.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def replay(bundle: Bundle, epoch_logs: list[dict], lr: float, budget: int,
           min_lr: float = 1e-7, max_lr: float = 10.0) -> list[tuple[str, float]]:
    """An independent oracle: (action name, next lr) per epoch, the env's way."""
    featurizer, pipeline = bundle.make_featurizer(), bundle.make_pipeline()
    featurizer.reset(budget)
    out = []
    for logs in epoch_logs:
        obs = featurizer.observe(logs, lr)
        decision = bundle.actions.decode(bundle.policy.act(pipeline(obs)[None])[0])
        lr = lr if decision.stop else min(max(lr * decision.factor, min_lr), max_lr)
        out.append((decision.name, lr))
    return out


def history_logs(history: keras.callbacks.History, keys: tuple[str, ...]) -> list[dict]:
    return [{k: history.history[k][i] for k in keys} for i in range(len(history.epoch))]


# --- decisions in a plain fit ---------------------------------------------------------


def test_decisions_match_the_policy_and_reach_the_optimizer() -> None:
    bundle = random_bundle(seed=14)
    net = model(lr=0.05)
    controller = LearnedController(bundle)
    x, y = data()
    history = net.fit(x, y, validation_split=0.25, epochs=6, verbose=0, callbacks=[controller])

    run = len(history.epoch)
    expected = replay(bundle, history_logs(history, ("loss", "val_loss")), 0.05, budget=6)
    names = [d.action for d in controller.decisions]
    assert len(set(names)) >= 3  # lower, raise, end: a test that can tell policies apart
    assert len(controller.decisions) == run
    decided = run if controller.stopped_epoch else run - 1  # the last epoch of the budget: "end"
    assert names[:decided] == [name for name, _ in expected[:decided]]
    np.testing.assert_allclose(
        [d.lr_after for d in controller.decisions[:decided]],
        [lr for _, lr in expected[:decided]], rtol=1e-6,
    )
    for before, after in zip(controller.decisions, controller.decisions[1:], strict=False):
        assert after.lr_before == pytest.approx(before.lr_after)
    assert float(net.optimizer.learning_rate) == pytest.approx(controller.decisions[-1].lr_after)
    assert history.history["lr"] == pytest.approx([d.lr_after for d in controller.decisions])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_lowers_the_learning_rate_of_each_optimizer(optimizer: str) -> None:
    net = model(optimizer, lr=0.01)
    controller = LearnedController(constant_bundle(LOWER))
    net.fit(*data(), validation_split=0.25, epochs=4, verbose=0, callbacks=[controller])
    assert [d.action for d in controller.decisions] == ["lower"] * 3 + ["end"]
    assert float(net.optimizer.learning_rate) == pytest.approx(0.01 / 27, rel=1e-5)


def test_clamps_to_min_and_max_lr() -> None:
    net = model(lr=0.01)
    controller = LearnedController(constant_bundle(RAISE), max_lr=0.05)
    net.fit(*data(), validation_split=0.25, epochs=4, verbose=0, callbacks=[controller])
    assert [d.lr_after for d in controller.decisions] == pytest.approx([0.03, 0.05, 0.05, 0.05])
    controller = LearnedController(constant_bundle(LOWER), min_lr=0.01)
    net.fit(*data(), validation_split=0.25, epochs=3, verbose=0, callbacks=[controller])
    assert float(net.optimizer.learning_rate) == pytest.approx(0.01)


def test_stop_action_stops_training() -> None:
    controller = LearnedController(constant_bundle(STOP))
    history = model().fit(*data(), validation_split=0.25, epochs=5, verbose=0,
                          callbacks=[controller])
    assert len(history.epoch) == 1
    assert controller.stopped_epoch == 1
    assert controller.decisions[0].stopped and controller.decisions[0].action == "stop"
    assert history.history["action"] == [STOP]


def test_continuous_action_scheme() -> None:
    from fitpilot.controller.actions import ContinuousActions

    base = random_bundle(0)
    hidden = base.policy.hidden
    head = (np.zeros((hidden[-1][1].shape[0], 2), "f"), np.array([0.4, -1.0], "f"))
    bundle = dataclasses.replace(base, actions=ContinuousActions(max_log10_factor=0.5),
                                 policy=MLPPolicy(hidden, head, head_kind="gaussian_mean"))
    controller = LearnedController(bundle)
    history = model(lr=0.01).fit(*data(), validation_split=0.25, epochs=3, verbose=0,
                                 callbacks=[controller])
    factor = 10 ** (0.4 * 0.5)
    assert history.history["action"] == pytest.approx([factor, factor, -1])
    lrs = [0.01 * factor, 0.01 * factor**2, 0.01 * factor**2]
    assert history.history["lr"] == pytest.approx(lrs, rel=1e-5)
    assert controller.action_names == ()


# --- logs seen by the other callbacks -------------------------------------------------


def test_history_csvlogger_tensorboard_and_checkpoint_see_lr_and_action(tmp_path: Path) -> None:
    controller = LearnedController(random_bundle(seed=1))
    csv_path = tmp_path / "log.csv"
    callbacks = [
        controller,
        keras.callbacks.CSVLogger(str(csv_path)),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}-{lr:.2e}.keras")),
        keras.callbacks.EarlyStopping(patience=10),
    ]
    # verbose=1: Keras' progress bar also reads the logs (a string value would crash it)
    history = model().fit(*data(), validation_split=0.25, epochs=3, verbose=1,
                          callbacks=callbacks)

    lrs = [d.lr_after for d in controller.decisions]
    names = controller.action_names
    assert history.history["lr"] == pytest.approx(lrs)
    assert [names[int(a)] if a >= 0 else "end" for a in history.history["action"]] == [
        d.action for d in controller.decisions
    ]
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["lr"]) for r in rows] == pytest.approx(lrs)
    assert [float(r["action"]) for r in rows] == history.history["action"]
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) >= 1
    assert len(list(tmp_path.glob("m-*.keras"))) == len(history.epoch)


def test_tf_data_inputs() -> None:
    import tensorflow as tf

    x, y = data()
    train = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(16)
    validation = tf.data.Dataset.from_tensor_slices((x[64:], y[64:])).batch(16)
    controller = LearnedController(constant_bundle(KEEP))
    history = model().fit(train, validation_data=validation, epochs=3, verbose=0, shuffle=False,
                          callbacks=[controller])
    assert [d.action for d in controller.decisions] == ["keep", "keep", "end"]
    assert controller.best == pytest.approx(min(history.history["val_loss"]))


def test_initial_epoch_counts_from_zero_with_the_fit_budget() -> None:
    controller = LearnedController(random_bundle(seed=2))
    history = model().fit(*data(), validation_split=0.25, epochs=5, initial_epoch=2, verbose=0,
                          callbacks=[controller])
    assert history.epoch[0] == 2
    assert [d.epoch for d in controller.decisions] == [e + 1 for e in history.epoch]
    assert controller.featurizer.budget == 5
    assert controller.featurizer.epochs == len(history.epoch)


def test_twice_in_a_row_starts_afresh() -> None:
    bundle = random_bundle(seed=14, frame_stack=3)
    net, controller = model(lr=0.05), LearnedController(bundle)
    net.fit(*data(), validation_split=0.25, epochs=3, verbose=0, callbacks=[controller])
    first = list(controller.decisions)
    history = net.fit(*data(), validation_split=0.25, epochs=5, verbose=0,
                      callbacks=[controller])
    run = len(history.epoch)
    assert len(first) == 3 and len(controller.decisions) == run
    assert controller.decisions[0].lr_before == pytest.approx(first[-1].lr_after)
    assert controller.featurizer.epochs == run and controller.featurizer.budget == 5
    assert controller.best == pytest.approx(min(history.history["val_loss"]))
    # the second fit decides as a fresh run would (featurizer and frame stack reset)
    expected = replay(bundle, history_logs(history, ("loss", "val_loss")),
                      first[-1].lr_after, budget=5)
    decided = run if controller.stopped_epoch else run - 1
    assert [d.action for d in controller.decisions[:decided]] == [n for n, _ in expected[:decided]]


# --- monitor, mode, best weights ------------------------------------------------------


class WeightsPerEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("restore", [True, False])
def test_restores_the_best_weights_by_monitor_and_mode(restore: bool) -> None:
    # mode="max" on val_loss makes an early epoch the "best": a restore is visible.
    net, recorder = model(lr=0.1), WeightsPerEpoch()
    controller = LearnedController(constant_bundle(KEEP), mode="max",
                                   restore_best_weights=restore)
    history = net.fit(*data(), validation_split=0.25, epochs=5, verbose=0,
                      callbacks=[controller, recorder])
    best = int(np.argmax(history.history["val_loss"]))
    assert controller.best_epoch == best + 1
    assert controller.best == pytest.approx(history.history["val_loss"][best])
    expected = recorder.weights[best] if restore else recorder.weights[-1]
    for got, want in zip(net.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mode_auto_maximises_accuracy() -> None:
    controller = LearnedController(constant_bundle(KEEP), monitor="val_accuracy")
    history = model().fit(*data(), validation_split=0.25, epochs=4, verbose=0,
                          callbacks=[controller])
    assert controller.best == pytest.approx(max(history.history["val_accuracy"]))


def test_mode_auto_refuses_a_metric_of_unknown_direction() -> None:
    def custom(y_true, y_pred):
        return keras.ops.mean(y_pred)

    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
    net.compile("sgd", "binary_crossentropy", metrics=[custom])
    with pytest.raises(ControllerError, match="mode='max'"):
        net.fit(*data(), validation_split=0.25, epochs=2, verbose=0,
                callbacks=[LearnedController(constant_bundle(KEEP), monitor="val_custom")])


def test_without_validation_data_the_policy_sees_val_loss_equal_to_loss() -> None:
    bundle = random_bundle(seed=5)
    controller = LearnedController(bundle, monitor="loss")
    history = model(lr=0.05).fit(*data(), epochs=5, verbose=0, callbacks=[controller])
    logs = [{"loss": v, "val_loss": v} for v in history.history["loss"]]
    expected = replay(bundle, logs, 0.05, budget=5)
    decided = len(history.epoch) if controller.stopped_epoch else len(history.epoch) - 1
    assert len({d.action for d in controller.decisions}) >= 3
    assert [d.action for d in controller.decisions[:decided]] == [n for n, _ in expected[:decided]]
    assert "val_loss" not in history.history  # the user's logs are left alone


def test_nan_loss_restores_the_best_weights_and_stops() -> None:
    x, y = data()
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(learning_rate=0.01), "mse")
    recorder = WeightsPerEpoch()
    controller = LearnedController(constant_bundle(RAISE), max_lr=1e12)
    with pytest.warns(UserWarning, match="non-finite loss"):
        history = net.fit(x, y.astype("float32") * 1e3, validation_split=0.25, epochs=40,
                          verbose=0, callbacks=[controller, recorder])
    assert controller.decisions[-1].action == "diverged"
    assert len(history.epoch) < 40 and controller.stopped_epoch == len(history.epoch)
    best = int(np.nanargmin(np.where(np.isfinite(history.history["val_loss"]),
                                     history.history["val_loss"], np.nan)))
    assert controller.best_epoch == best + 1
    for got, want in zip(net.get_weights(), recorder.weights[best], strict=True):
        np.testing.assert_array_equal(got, want)


def test_nan_in_the_first_epoch_restores_the_initial_weights() -> None:
    x, y = data()
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(learning_rate=1e6), "mse")
    initial = net.get_weights()
    controller = LearnedController(constant_bundle(KEEP), restarts=0)
    with pytest.warns(UserWarning, match="epoch 1 .*restoring the weights of the start of this "
                                         "fit.*lower the initial learning rate"):
        history = net.fit(x, y.astype("float32") * 1e3, validation_split=0.25, epochs=10,
                          verbose=0, callbacks=[controller])
    assert not np.isfinite([history.history["loss"][0], history.history["val_loss"][0]]).all()
    assert len(history.epoch) == 1 and history.history["action"] == [-1]
    assert controller.decisions[0].action == "diverged" and controller.best_epoch == 0
    for got, want in zip(net.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(got, want)


class OptimizerSteps(keras.callbacks.Callback):
    """Records the optimizer's step count and the weights at each epoch end."""

    def on_train_begin(self, logs=None):
        self.steps, self.weights = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        self.weights.append(self.model.get_weights())


def test_nan_in_the_first_epoch_restarts_from_the_start_at_a_tenth_of_the_rate() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(960, 6)).astype("float32")
    y = x @ np.arange(1, 7, dtype="float32") / 6
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(learning_rate=5.0), "mse")
    initial = net.get_weights()
    controller, steps = LearnedController(constant_bundle(KEEP)), OptimizerSteps()
    with pytest.warns(UserWarning, match=r"epoch 1 .*before any finite epoch: restarting from "
                                         r"the weights this fit started from at learning rate "
                                         r"0\.5 \(1 of at most 3 restarts\)"):
        history = net.fit(x, y, validation_split=0.25, batch_size=8, epochs=6, verbose=0,
                          callbacks=[controller, steps])
    assert not np.isfinite(history.history["loss"][0])
    assert [d.action for d in controller.decisions] == ["restart"] + ["keep"] * 4 + ["end"]
    assert controller.decisions[0].lr_after == pytest.approx(0.5)
    assert history.history["lr"][0] == pytest.approx(0.5)
    # After the restart: the initial weights and a fresh optimizer (no step taken).
    assert steps.steps[0] == 0
    for got, want in zip(steps.weights[0], initial, strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(history.history["val_loss"][1:]).all()
    assert max(history.history["val_loss"][1:]) < 1e-6 and controller.best_epoch >= 2


def test_restarts_are_bounded_then_the_fit_stops() -> None:
    x, y = data()
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(learning_rate=1e30), "mse")
    controller = LearnedController(constant_bundle(KEEP), max_lr=1e31, restarts=2)
    with pytest.warns(UserWarning, match="restarting"):
        net.fit(x, y.astype("float32") * 1e3, validation_split=0.25, epochs=10, verbose=0,
                callbacks=[controller])
    assert [d.action for d in controller.decisions] == ["restart", "restart", "diverged"]
    assert [d.lr_before for d in controller.decisions] == pytest.approx([1e30, 1e29, 1e28],
                                                                        rel=1e-6)
    with pytest.raises(ControllerError, match="restarts must be an int >= 0"):
        LearnedController(constant_bundle(KEEP), restarts=-1)


def test_validation_freq_decides_after_the_validated_epochs_only() -> None:
    net = model(lr=0.09)
    controller = LearnedController(constant_bundle(LOWER))
    with pytest.warns(UserWarning, match="validation_freq=3: .*only after the epochs with "
                                         "validation.*use validation_freq=1"):
        history = net.fit(*data(), validation_split=0.25, validation_freq=3, epochs=9,
                          verbose=0, callbacks=[controller])
    assert len(history.epoch) == 9
    assert [d.action for d in controller.decisions] == ["wait", "wait", "lower"] * 2 + [
        "wait", "wait", "end"]
    assert float(net.optimizer.learning_rate) == pytest.approx(0.01, rel=1e-5)
    assert controller.featurizer.budget == 3 and controller.featurizer.epochs == 3
    assert controller.best == pytest.approx(min(history.history["val_loss"]))
    assert controller.best_epoch in (3, 6, 9)
    assert history.history["action"] == [-1, -1, LOWER] * 2 + [-1] * 3


# --- other callbacks that set the lr or restore weights -------------------------------


@pytest.mark.parametrize("other", [
    keras.callbacks.ReduceLROnPlateau(patience=1),
    keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
    LearnedController(constant_bundle(KEEP)),
], ids=lambda c: type(c).__name__)
def test_other_learning_rate_callbacks_are_refused(other: keras.callbacks.Callback) -> None:
    name = type(other).__name__
    for callbacks in ([LearnedController(constant_bundle(KEEP)), other],
                      [other, LearnedController(constant_bundle(KEEP))]):
        net = model()
        with pytest.raises(ControllerError, match=f"{name} is in the callbacks.*sets the "
                                                  f"learning rate.*remove {name}"):
            net.fit(*data(), validation_split=0.25, epochs=3, verbose=0, callbacks=callbacks)
        assert net.optimizer.iterations.numpy() == 0  # refused before any training


@pytest.mark.parametrize("early_stopping_last", [True, False])
def test_early_stopping_restoring_weights_warns_whose_weights_win(
    early_stopping_last: bool,
) -> None:
    # The controller's best is the highest val_loss (mode="max"), EarlyStopping's the lowest.
    net, recorder = model(lr=0.1), WeightsPerEpoch()
    controller = LearnedController(constant_bundle(KEEP), mode="max")
    stopping = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    callbacks = [controller, stopping] if early_stopping_last else [stopping, controller]
    winner = "EarlyStopping's" if early_stopping_last else "the controller's"
    with pytest.warns(UserWarning, match=f"EarlyStopping.restore_best_weights=True. also puts "
                                         f"weights back.*ends with {winner}"):
        history = net.fit(*data(), validation_split=0.25, epochs=5, verbose=0,
                          callbacks=[*callbacks, recorder])
    losses = history.history["val_loss"]
    best = int(np.argmin(losses) if early_stopping_last else np.argmax(losses))
    assert np.argmin(losses) != np.argmax(losses)
    for got, want in zip(net.get_weights(), recorder.weights[best], strict=True):
        np.testing.assert_array_equal(got, want)


# --- bad input ------------------------------------------------------------------------


def test_monitoring_val_without_validation_data_says_how_to_fix() -> None:
    with pytest.raises(ControllerError, match="needs validation data.*validation_split"):
        model().fit(*data(), epochs=2, verbose=0,
                    callbacks=[LearnedController(constant_bundle(KEEP))])


def test_unknown_monitor_lists_the_keys() -> None:
    with pytest.raises(ControllerError, match=r"val_auc.*keys: accuracy, loss, val_accuracy"):
        model().fit(*data(), validation_split=0.25, epochs=2, verbose=0,
                    callbacks=[LearnedController(constant_bundle(KEEP), monitor="val_auc")])


def test_learning_rate_schedule_is_refused() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    with pytest.raises(ActionError, match="schedule.*float learning_rate"):
        model(keras.optimizers.SGD(learning_rate=schedule)).fit(
            *data(), validation_split=0.25, epochs=2, verbose=0,
            callbacks=[LearnedController(constant_bundle(KEEP))],
        )


def test_bad_arguments() -> None:
    with pytest.raises(ControllerError, match="mode"):
        LearnedController(constant_bundle(KEEP), mode="lowest")
    with pytest.raises(ControllerError, match="min_lr"):
        LearnedController(constant_bundle(KEEP), min_lr=1.0, max_lr=0.1)


def test_bundle_problems_are_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no controller bundle at"):
        LearnedController.load(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a readable controller bundle"):
        LearnedController.load(tmp_path / "junk.zip")

    path = write_random_bundle(tmp_path / "controller.zip")
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        arrays = archive.read("arrays.npz")
    for change, message in [({"format": 99}, "bundle format 99"),
                            ({"featurizer": {**manifest["featurizer"], "version": 99}},
                             "featurizer version 99")]:
        old = tmp_path / "old.zip"
        with zipfile.ZipFile(old, "w") as archive:
            archive.writestr("manifest.json", json.dumps({**manifest, **change}))
            archive.writestr("arrays.npz", arrays)
        with pytest.raises(BundleError, match=message):
            LearnedController.load(old)

    controller = LearnedController.load(path, monitor="loss", verbose=1)
    assert controller.monitor == "loss" and controller.bundle.content_hash == manifest["hash"]


def test_policy_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(BundleError, match="takes 15 inputs but"):
        LearnedController(dataclasses.replace(random_bundle(0), frame_stack=2))


def test_pretrained_loads_or_says_none_ships() -> None:
    from importlib.resources import files

    if files("fitpilot.controller").joinpath("pretrained/controller.zip").is_file():
        shipped = LearnedController.pretrained()
        # The shipped controller is v3: the scale probe and a first decision, then rollback.
        assert shipped.bundle.featurizer.version == 3 and shipped.bundle.actions.first
        assert shipped.bundle.actions.rollback
    else:
        with pytest.raises(BundleError, match="no pretrained controller ships.*fitpilot train"):
            LearnedController.pretrained()


# --- reading the record ---------------------------------------------------------------


def test_summary_verbose_and_record(capsys: pytest.CaptureFixture[str]) -> None:
    controller = LearnedController(constant_bundle(LOWER), verbose=1)
    model(lr=0.01).fit(*data(), validation_split=0.25, epochs=3, verbose=0,
                       callbacks=[controller])
    out = capsys.readouterr().out
    assert out.count("LearnedController lower, learning rate 0.01 -> 0.00333") == 1
    assert out.count("Epoch ") == 3 and "restoring model weights" in out
    table = controller.summary().splitlines()
    assert table[0].split() == ["epoch", "val_loss", "lr", "before", "action", "lr", "after",
                                "stopped"]
    assert [line.split()[3] for line in table[1:4]] == ["lower", "lower", "end"]
    assert "best val_loss" in table[-1]
    rows = controller.decisions_as_dicts()
    assert rows[0]["epoch"] == 1 and rows[0]["action"] == "lower" and not rows[0]["stopped"]
    assert "decisions=3" in repr(controller)


# --- deployment: no torch -------------------------------------------------------------


def test_deploying_never_imports_torch(tmp_path: Path) -> None:
    bundle = write_random_bundle(tmp_path / "controller.zip")
    script = f"""
import sys
import numpy as np
import fitpilot
from fitpilot.runtime import configure
configure(1)
import keras
x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
net.compile(keras.optimizers.Adam(1e-3), "mse")
controller = fitpilot.LearnedController.load({str(bundle)!r})
net.fit(x, x[:, :1], validation_split=0.25, epochs=2, verbose=0, callbacks=[controller])
assert len(controller.decisions) >= 1
print(sorted(m for m in ("torch", "stable_baselines3") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- parity with the training environment ---------------------------------------------


def tiny_task():
    from fitpilot.envs.tasks import Split, TaskData, TrainingTask

    def load() -> TaskData:
        x, y = data(rows=240, seed=1)
        return TaskData(Split(x[:160], y[:160]), Split(x[160:200], y[160:200]),
                        Split(x[200:], y[200:]))

    def build() -> keras.Model:
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(2, activation="softmax")])

    return TrainingTask("tiny", "classification", build, load,
                        "sparse_categorical_crossentropy", ("accuracy",), optimizer="sgd",
                        learning_rate=0.05, batch_size=16, epochs=8)


def env_episode(env, bundle: Bundle, seed: int, lr: float) -> tuple[list, list, list]:
    """Drive one episode with the bundle's policy: (action names, lr after each, epoch logs)."""
    pipeline = bundle.make_pipeline()
    obs, info = env.reset(seed=seed, options={"learning_rate": lr})
    names, lrs, logs = [], [], [info["logs"]]
    done = False
    while not done:
        action = bundle.policy.act(pipeline(obs)[None])[0]
        obs, _, terminated, truncated, info = env.step(action)
        names.append(info["action"])
        lrs.append(info["learning_rate"])
        done = terminated or truncated
        if not bundle.actions.decode(action).stop:
            logs.append(info["logs"])
    return names, lrs, logs


def test_parity_with_the_env_same_logs_same_decisions() -> None:
    """The env's epoch logs, replayed through the callback's hooks, give the env's decisions."""
    from fitpilot.envs.env import KerasTrainingEnv

    task, bundle = tiny_task(), random_bundle(seed=4)
    env = KerasTrainingEnv(tasks=[task], featurizer=bundle.featurizer, actions=bundle.actions)
    names, lrs, logs = env_episode(env, bundle, seed=11, lr=0.05)
    env.close()

    net, controller = task.compiled_model(0.05), LearnedController(bundle)
    controller.set_model(net)
    controller.set_params({"epochs": task.epochs, "verbose": 0, "steps": 10})
    controller.on_train_begin()
    for epoch, epoch_logs in enumerate(logs):
        controller.on_epoch_begin(epoch)
        controller.on_epoch_end(epoch, dict(epoch_logs))
    controller.on_train_end()
    assert len(set(names)) >= 2
    assert [d.action for d in controller.decisions[: len(names)]] == names
    np.testing.assert_allclose([d.lr_after for d in controller.decisions[: len(lrs)]], lrs,
                               rtol=1e-6)


def test_parity_with_the_env_in_a_real_fit() -> None:
    """Same task, seed, initial weights and data order: fit + callback == an env episode.

    The env's fast runner shuffles with its own stateless shuffle, which ``fit``
    cannot reproduce, so both sides train unshuffled here: the env gets an
    unshuffled runner (through its runner cache, the one private hook used), and
    ``fit`` starts from the weights the runner drew for the episode.
    """
    from fitpilot.envs.env import KerasTrainingEnv
    from fitpilot.envs.runner import FastEpochRunner

    task = tiny_task()
    runner = FastEpochRunner(task, shuffle=False)
    seeds: list[int] = []
    reset = runner.reset
    runner.reset = lambda seed, learning_rate: (seeds.append(seed), reset(seed, learning_rate))[1]
    env = KerasTrainingEnv(tasks=[task])
    env._runners[task.name] = runner
    data_ = task.data()
    seen, lrs_seen = set(), []
    # (bundle seed, frame stack, starting lr): up to the max_lr clamp, down to the min_lr
    # clamp, a mix with stacked frames, raise then stop
    for bundle_seed, frame_stack, lr in [(0, 1, 3.0), (4, 1, 1e-6), (4, 2, 0.05), (3, 1, 1.0)]:
        bundle = random_bundle(bundle_seed, frame_stack)
        assert bundle.featurizer == env.featurizer.config and bundle.actions == env.actions
        names, lrs, _ = env_episode(env, bundle, seed=7, lr=lr)

        reset(seeds[-1], lr)  # the episode's initial weights again, fresh optimizer
        controller = LearnedController(bundle)
        runner.model.fit(data_.train.x, data_.train.y, batch_size=task.batch_size,
                         validation_data=(data_.validation.x, data_.validation.y),
                         epochs=task.epochs, shuffle=False, verbose=0, callbacks=[controller])
        assert [d.action for d in controller.decisions[: len(names)]] == names
        np.testing.assert_allclose([d.lr_after for d in controller.decisions[: len(lrs)]], lrs,
                                   rtol=1e-6)
        seen.update(names)
        lrs_seen.extend(lrs)
    env.close()
    assert {"lower", "keep", "raise", "stop"} <= seen
    assert min(lrs_seen) == pytest.approx(1e-7) and max(lrs_seen) == pytest.approx(10.0)
