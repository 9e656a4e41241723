"""What does LearnedController cost inside model.fit? Wall time with and without it.

Trains the reference task (digits_mlp: 64-64-10 MLP, sklearn digits, 1,400 rows,
batch 32, 40 epochs) with a plain ``model.fit`` several times, alternating fits
without and with the callback, from the same initial weights each time, and prints:

- the median fit time of each and their ratio (target: <= 1.02), in wall time and in
  process CPU time (on a machine shared with other jobs, wall time swings with their
  load; CPU time of this single-threaded process much less);
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
    from fitpilot.envs.loading import load_tasks

    class TimedController(LearnedController):
        """Records the wall and CPU seconds spent in its per-epoch hooks."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.hook_times: list[tuple[float, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            wall, cpu = time.perf_counter(), time.process_time()
            super().on_epoch_begin(epoch, logs)
            self._begin = (time.perf_counter() - wall, time.process_time() - cpu)

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = time.perf_counter(), time.process_time()
            super().on_epoch_end(epoch, logs)
            self.hook_times.append((time.perf_counter() - wall + self._begin[0],
                                    time.process_time() - cpu + self._begin[1]))

    task = next(t for t in load_tasks("train") if t.name == "digits_mlp")
    epochs = args.epochs or task.epochs
    data = task.data()
    model = task.compiled_model()
    model.fit(data.train.x[:64], data.train.y[:64], epochs=1, verbose=0)  # trace once
    resetter = ModelResetter(model)
    controller = TimedController(keep_or_lower_bundle(args.bundle_seed))

    def fit(with_controller: bool) -> tuple[float, float]:
        """One fit from the same initial weights: (wall seconds, process CPU seconds)."""
        resetter.reset(seed=0, learning_rate=task.learning_rate)
        wall, cpu = time.perf_counter(), time.process_time()
        history = model.fit(
            data.train.x, data.train.y, validation_data=(data.validation.x, data.validation.y),
            batch_size=task.batch_size, epochs=epochs, verbose=0,
            callbacks=[controller] if with_controller else [],
        )
        times = time.perf_counter() - wall, time.process_time() - cpu
        assert len(history.history["loss"]) == epochs, "a fit stopped early"
        return times

    fit(True)  # warm-up: the first fit with validation data traces the test function
    without, with_, hooks = [], [], []
    for i in range(args.repeats):  # alternate the order, so drifts in load hit both sides
        for side in ((False, True) if i % 2 == 0 else (True, False)):
            (with_ if side else without).append(fit(side))
        hooks.extend(controller.hook_times)

    print(f"task {task.name}: {epochs} epochs, {len(data.train)} rows, batch {task.batch_size}, "
          f"{model.count_params()} weights, {args.threads} TF thread(s), {args.repeats} fits/side")
    for column, clock in enumerate(("wall", "CPU")):
        a = [t[column] for t in without]
        b = [t[column] for t in with_]
        pairs = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"fit {clock:4} time: without median {statistics.median(a):.3f} s, with median "
              f"{statistics.median(b):.3f} s; ratio of medians "
              f"{statistics.median(b) / statistics.median(a):.4f}, median of paired ratios "
              f"{pairs:.4f}  (target <= 1.02)")
        print(f"    without: {', '.join(f'{x:.3f}' for x in a)}")
        print(f"    with:    {', '.join(f'{x:.3f}' for x in b)}")
    for column, clock in enumerate(("wall", "CPU")):
        ms = np.array([h[column] for h in hooks]) * 1e3
        print(f"controller {clock:4} time per epoch: median {np.median(ms):.3f} ms, "
              f"p90 {np.percentile(ms, 90):.3f} ms, max {ms.max():.3f} ms  (target median <= 1 ms)")
    decisions, best_epoch = list(controller.decisions), controller.best_epoch
    # The same decisions outside fit, back to back (warm caches): the hooks' own cost.
    history = model.history.history
    epoch_logs = [{k: history[k][e] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
                  for e in range(epochs)]
    warm = []
    for _ in range(5):
        resetter.reset(seed=0, learning_rate=task.learning_rate)
        controller.on_train_begin()
        for epoch, logs in enumerate(epoch_logs):
            controller.on_epoch_begin(epoch, dict(logs))
            controller.on_epoch_end(epoch, dict(logs))
        warm.extend(h[0] * 1e3 for h in controller.hook_times)
    print(f"controller time per epoch outside fit (replayed logs, warm caches): median "
          f"{np.median(warm):.3f} ms, p90 {np.percentile(warm, 90):.3f} ms")
    values = [d.monitor for d in decisions]
    snapshots = sum(v < min(values[:i], default=np.inf) for i, v in enumerate(values))
    print(f"last fit: {sum(d.action == 'lower' for d in decisions)} lower, "
          f"{sum(d.action == 'keep' for d in decisions)} keep, {snapshots} weight snapshots; "
          f"best epoch {best_epoch}; "
          f"lr {decisions[0].lr_before:.3g} -> {decisions[-1].lr_after:.3g}")


if __name__ == "__main__":
    main()
