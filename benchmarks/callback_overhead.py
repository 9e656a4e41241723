"""What does LearnedController cost inside model.fit? Wall time with and without it.

Two models:

- ``--model mlp``: the reference task digits_mlp (64-64-10 MLP, sklearn digits,
  1,400 rows, batch 32, 40 epochs of ~0.1 s): the per-epoch costs matter most here;
- ``--model cnn``: a ~1M-weight CNN on random 32x32x3 images (384 rows, batch 32,
  6 epochs), whose epoch takes >= 1 s on one thread: the costs that grow with the weights
  (the best-weights snapshot) matter most here.

It runs ``--repeats`` pairs of fits, one without and one with the callback, from the
same initial weights, the order inside a pair alternating (so drifts in the machine's
load hit both sides), and prints the median of the paired ratios with/without, in wall
time and in process CPU time (on a shared machine wall time swings with the others'
load; CPU time of this single-threaded process much less). Target: <= 1.02. The load
average is printed before and after.

Then the controller's own time per epoch: its hook timed inside ``fit`` (as a share
of the epoch: the ratio its own work implies, a figure the others' load disturbs far
less than the paired ratios), and each part timed alone on the trained model (lr
read, lr assignment, best-weights snapshot, featurizer, normalisation + policy).

The controller is a random bundle built here with the bundle API whose policy only
lowers or keeps the learning rate: every fit runs all its epochs (no stop, no
divergence), so both sides train the same number of epochs.

    .venv/bin/python benchmarks/callback_overhead.py --model mlp --repeats 7
    .venv/bin/python benchmarks/callback_overhead.py --model cnn --repeats 7 --featurizer 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from fitpilot import runtime


def keep_or_lower_bundle(seed: int = 0, featurizer_version: int = 1):
    """A random discrete bundle that never raises the lr and never stops.

    ``featurizer_version`` 2 adds the weight features and the version-2 actions
    (rollback, never taken), so the best epoch's optimizer state is kept too.
    """
    from fitpilot.controller.actions import DiscreteActions
    from fitpilot.controller.bundle import Bundle
    from fitpilot.controller.features import Featurizer, FeaturizerConfig
    from fitpilot.controller.policy import MLPPolicy, ObsNormalization

    rng = np.random.default_rng(seed)
    featurizer = FeaturizerConfig(version=featurizer_version)
    actions = DiscreteActions() if featurizer_version == 1 else DiscreteActions.v2()
    size, hidden = Featurizer(featurizer).size, 64
    head_bias = np.full(actions.n, -1e3, "f")  # never raise, stop or roll back:
    head_bias[[0, 1]] = 0.0  # the first two actions of both schemes: lower (x1/3, x0.5), keep
    policy = MLPPolicy(
        hidden=(
            (rng.normal(0, 0.5, (size, hidden)).astype("f"), np.zeros(hidden, "f")),
            (rng.normal(0, 0.2, (hidden, hidden)).astype("f"), np.zeros(hidden, "f")),
        ),
        head=(rng.normal(0, 0.5, (hidden, actions.n)).astype("f"), head_bias),
    )
    normalization = ObsNormalization(np.zeros(size, "f"), np.ones(size, "f"))
    return Bundle(policy, featurizer, actions, normalization, 1, {"algo": "benchmark"})


def mlp_setup(epochs: int | None) -> tuple[Any, dict[str, Any], float, str]:
    """digits_mlp: (compiled model, fit arguments, learning rate, description)."""
    from fitpilot.envs.loading import load_tasks

    task = next(t for t in load_tasks("train") if t.name == "digits_mlp")
    data = task.data()
    fit_args = dict(x=data.train.x, y=data.train.y,
                    validation_data=(data.validation.x, data.validation.y),
                    batch_size=task.batch_size, epochs=epochs or task.epochs)
    return (task.compiled_model(), fit_args, task.learning_rate,
            f"digits_mlp, {len(data.train)} rows, batch {task.batch_size}")


def cnn_setup(epochs: int | None) -> tuple[Any, dict[str, Any], float, str]:
    """A ~1M-weight CNN on random images (learnable labels): epochs of >= 1 s on one thread."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 32, 32, 3)).astype("float32")
    y = (x[:, :16, :16, 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(128, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(192, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit_args = dict(x=x[:384], y=y[:384], validation_data=(x[384:], y[384:]),
                    batch_size=32, epochs=epochs or 6)
    return model, fit_args, 1e-3, "CNN on random 32x32x3 images, 384 rows, batch 32"


def median_us(function: Callable[[], Any], repeats: int = 200) -> float:
    """Median wall time of ``function()`` in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--repeats", type=int, default=7, help="pairs of fits")
    parser.add_argument("--epochs", type=int, default=None, help="default: mlp 40, cnn 6")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    parser.add_argument("--bundle-seed", type=int, default=3, help="seed of the random policy")
    parser.add_argument("--featurizer", type=int, choices=(1, 2), default=1,
                        help="featurizer version of the bundle (2: weight features, rollback)")
    args = parser.parse_args()
    runtime.configure(args.threads)

    from fitpilot.controller.actions import get_learning_rate, set_learning_rate
    from fitpilot.controller.callback import LearnedController, _copy_values, _optimizer_state
    from fitpilot.envs.model_state import ModelResetter

    class TimedController(LearnedController):
        """Records the wall and CPU seconds spent in its per-epoch hook."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.hook_times: list[tuple[float, float]] = []

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = time.perf_counter(), time.process_time()
            super().on_epoch_end(epoch, logs)
            self.hook_times.append((time.perf_counter() - wall, time.process_time() - cpu))

    model, fit_args, learning_rate, description = (mlp_setup if args.model == "mlp"
                                                   else cnn_setup)(args.epochs)
    epochs = fit_args["epochs"]
    model.fit(fit_args["x"][:64], fit_args["y"][:64], epochs=1, verbose=0)  # trace once
    resetter = ModelResetter(model)
    controller = TimedController(keep_or_lower_bundle(args.bundle_seed, args.featurizer))

    def fit(with_controller: bool) -> tuple[float, float]:
        """One fit from the same initial weights: (wall seconds, process CPU seconds)."""
        resetter.reset(seed=0, learning_rate=learning_rate)
        wall, cpu = time.perf_counter(), time.process_time()
        history = model.fit(**fit_args, verbose=0,
                            callbacks=[controller] if with_controller else [])
        times = time.perf_counter() - wall, time.process_time() - cpu
        assert len(history.history["loss"]) == epochs, "a fit stopped early"
        return times

    load_before = os.getloadavg()
    fit(True)  # warm-up: the first fit with validation data traces the test function
    fit(False)
    pairs, hooks = [], []
    for i in range(args.repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        times = {side: fit(side) for side in order}
        pairs.append((times[False], times[True]))
        hooks.extend(controller.hook_times)
    load_after = os.getloadavg()

    print(f"model {args.model}: {description}, {epochs} epochs, {model.count_params():,} "
          f"weights, {args.threads} TF thread(s), {args.repeats} pairs of fits, featurizer "
          f"version {args.featurizer}")
    print(f"load average before {' '.join(f'{v:.2f}' for v in load_before)}, after "
          f"{' '.join(f'{v:.2f}' for v in load_after)} ({os.cpu_count()} CPUs)")
    for column, clock in enumerate(("wall", "CPU")):
        without = [p[0][column] for p in pairs]
        with_ = [p[1][column] for p in pairs]
        ratios = [b / a for a, b in zip(without, with_, strict=True)]
        print(f"fit {clock:4} time: median of paired ratios {statistics.median(ratios):.4f} "
              f"(target <= 1.02); medians without {statistics.median(without):.3f} s, "
              f"with {statistics.median(with_):.3f} s "
              f"({statistics.median(without) / epochs * 1e3:.0f} ms per epoch)")
        print(f"    ratios:  {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"    without: {', '.join(f'{x:.3f}' for x in without)}")
        print(f"    with:    {', '.join(f'{x:.3f}' for x in with_)}")
    for column, clock in enumerate(("wall", "CPU")):
        ms = np.array([h[column] for h in hooks]) * 1e3
        epoch_ms = statistics.median(p[0][column] for p in pairs) / epochs * 1e3
        print(f"controller {clock:4} time per epoch in fit: median {np.median(ms):.3f} ms, "
              f"p90 {np.percentile(ms, 90):.3f} ms, max {ms.max():.3f} ms; mean "
              f"{ms.mean():.3f} ms = {ms.mean() / epoch_ms:.2%} of an epoch without it "
              f"(the ratio its own work implies: {1 + ms.mean() / epoch_ms:.4f})")

    # The parts alone, on the trained model (warm caches), wall microseconds per call.
    decisions = list(controller.decisions)
    optimizer, weights = model.optimizer, model.weights
    lr = get_learning_rate(optimizer)
    history = model.history.history
    epoch_logs = [{k: v[e] for k, v in history.items() if k not in ("lr", "action")}
                  for e in range(epochs)]
    featurizer, pipeline, policy = (controller.featurizer, controller.pipeline,
                                    controller.bundle.policy)
    trainable = model.trainable_variables if featurizer.config.uses_weights else None
    featurizer.reset(budget=epochs, weights=trainable)
    obs = featurizer.observe(epoch_logs[0], lr, trainable)
    parts = {
        "lr read (optimizer variable -> float)": median_us(lambda: get_learning_rate(optimizer)),
        "lr assignment": median_us(lambda: set_learning_rate(optimizer, lr)),
        "best-weights snapshot": median_us(lambda: _copy_values(weights), 100),
        "featurizer.observe": median_us(
            lambda: featurizer.observe(epoch_logs[-1], lr, trainable)),
        "optimizer state snapshot (rollback)": median_us(
            lambda: _copy_values(_optimizer_state(optimizer)), 100),
        "normalisation + frame stack + policy": median_us(
            lambda: policy.act(pipeline(obs)[None])),
    }
    replayed = []
    for _ in range(5):
        resetter.reset(seed=0, learning_rate=learning_rate)
        controller.on_train_begin()
        for epoch, logs in enumerate(epoch_logs):
            controller.on_epoch_end(epoch, dict(logs))
        replayed.extend(h[0] * 1e6 for h in controller.hook_times)
    print("controller parts, each alone (wall, median per call):")
    for name, us in parts.items():
        print(f"    {name:40} {us:8.1f} us")
    print(f"    {'on_epoch_end, replayed logs (all parts)':40} {np.median(replayed):8.1f} us")
    values = [d.monitor for d in decisions]
    snapshots = sum(v < min(values[:i], default=np.inf) for i, v in enumerate(values))
    taken = Counter(d.action for d in decisions)
    print(f"last fit: {', '.join(f'{n} {name}' for name, n in taken.items())}, "
          f"{snapshots} weight snapshots; "
          f"lr {decisions[0].lr_before:.3g} -> {decisions[-1].lr_after:.3g}")


if __name__ == "__main__":
    main()
