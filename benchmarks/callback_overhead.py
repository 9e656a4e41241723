"""What does LearnedController cost inside model.fit? Wall time with and without it.

Trains the reference task (digits_mlp: 64-64-10 MLP, sklearn digits, 1,400 rows,
batch 32, 40 epochs) with a plain ``model.fit`` several times, alternating fits
without and with the callback, from the same initial weights each time, and prints:

- the median fit wall time of each, and their ratio (target: <= 1.02);
- the median time the controller spends per epoch in its hooks (target: <= 1 ms),
  which covers reading the lr, the featurizer, the numpy policy, setting the lr and
  the best-weights snapshot.

The controller is a random bundle built here with the bundle API, whose policy
only lowers or keeps the learning rate: every fit runs the full 40 epochs (no stop,
no divergence), so the two sides train the same number of epochs, and the validation
loss keeps improving, which makes the best-weights snapshot frequent (the costly case).

    .venv/bin/python benchmarks/callback_overhead.py --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fitpilot import runtime


def keep_or_lower_bundle(seed: int = 0):
    """A random discrete bundle that never raises the lr and never stops."""
    from fitpilot.controller.actions import DiscreteActions
    from fitpilot.controller.bundle import Bundle
    from fitpilot.controller.features import Featurizer, FeaturizerConfig
    from fitpilot.controller.policy import MLPPolicy, ObsNormalization

    rng = np.random.default_rng(seed)
    actions, size, hidden = DiscreteActions(), Featurizer.size, 64
    head_bias = np.zeros(actions.n, "f")
    head_bias[[2, 3]] = -1e3  # never "raise" (index 2), never "stop" (index 3)
    policy = MLPPolicy(
        hidden=(
            (rng.normal(0, 0.5, (size, hidden)).astype("f"), np.zeros(hidden, "f")),
            (rng.normal(0, 0.2, (hidden, hidden)).astype("f"), np.zeros(hidden, "f")),
        ),
        head=(rng.normal(0, 0.5, (hidden, actions.n)).astype("f"), head_bias),
    )
    normalization = ObsNormalization(np.zeros(size, "f"), np.ones(size, "f"))
    return Bundle(policy, FeaturizerConfig(), actions, normalization, 1, {"algo": "benchmark"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fits per side")
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's 40")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    parser.add_argument("--bundle-seed", type=int, default=3, help="seed of the random policy")
    args = parser.parse_args()
    runtime.configure(args.threads)

    from fitpilot.controller.callback import LearnedController
    from fitpilot.envs.runner import ModelResetter
    from fitpilot.envs.tasks import load_tasks

    class TimedController(LearnedController):
        """Adds the time spent in the per-epoch hooks, in seconds, to ``hook_seconds``."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.hook_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            start = time.perf_counter()
            super().on_epoch_begin(epoch, logs)
            self._begin_seconds = time.perf_counter() - start

        def on_epoch_end(self, epoch, logs=None):
            start = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            self.hook_seconds.append(time.perf_counter() - start + self._begin_seconds)

    task = next(t for t in load_tasks("train") if t.name == "digits_mlp")
    epochs = args.epochs or task.epochs
    data = task.data()
    model = task.compiled_model()
    model.fit(data.train.x[:64], data.train.y[:64], epochs=1, verbose=0)  # trace once
    resetter = ModelResetter(model)
    controller = TimedController(keep_or_lower_bundle(args.bundle_seed))

    def fit(with_controller: bool) -> float:
        resetter.reset(seed=0, learning_rate=task.learning_rate)
        start = time.perf_counter()
        history = model.fit(
            data.train.x, data.train.y, validation_data=(data.validation.x, data.validation.y),
            batch_size=task.batch_size, epochs=epochs, verbose=0,
            callbacks=[controller] if with_controller else [],
        )
        seconds = time.perf_counter() - start
        assert len(history.history["loss"]) == epochs, "a fit stopped early"
        return seconds

    fit(True)  # warm-up: first fit with validation traces the test function
    without, with_, hooks = [], [], []
    for i in range(args.repeats):
        for side in ((False, True) if i % 2 == 0 else (True, False)):
            (with_ if side else without).append(fit(side))
        hooks.extend(controller.hook_seconds)
    hook_ms = np.array(hooks) * 1e3
    ratio = statistics.median(with_) / statistics.median(without)
    print(f"task {task.name}: {epochs} epochs, {len(data.train)} rows, batch {task.batch_size}, "
          f"{model.count_params()} weights, {args.threads} TF thread(s), {args.repeats} fits/side")
    print(f"fit without controller: median {statistics.median(without):.3f} s  "
          f"(all: {', '.join(f'{s:.3f}' for s in without)})")
    print(f"fit with controller:    median {statistics.median(with_):.3f} s  "
          f"(all: {', '.join(f'{s:.3f}' for s in with_)})")
    print(f"wall-time ratio with/without: {ratio:.4f}  (target <= 1.02)")
    print(f"controller time per epoch: median {np.median(hook_ms):.3f} ms, "
          f"p90 {np.percentile(hook_ms, 90):.3f} ms, max {hook_ms.max():.3f} ms  "
          f"(target median <= 1 ms)")
    decisions = controller.decisions
    values = [d.monitor for d in decisions]
    snapshots = sum(v < min(values[:i], default=np.inf) for i, v in enumerate(values))
    print(f"last fit: {sum(d.action == 'lower' for d in decisions)} lower, "
          f"{sum(d.action == 'keep' for d in decisions)} keep, {snapshots} weight snapshots; "
          f"best epoch {controller.best_epoch}; "
          f"lr {decisions[0].lr_before:.3g} -> {decisions[-1].lr_after:.3g}")


if __name__ == "__main__":
    main()
