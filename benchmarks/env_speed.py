"""How fast is one environment step? Milliseconds per epoch, five ways, in one process.

On the reference task (``digits_mlp``: sklearn digits, 1,400 training rows, 64-64-10
MLP, batch 32, SGD), prints the median milliseconds per epoch (training, then
validation) of:

  (a) ``model.fit(epochs=1)`` called once per epoch;
  (b) one long ``model.fit`` (epoch-begin to epoch-end, timed by a callback);
  (c) a hand-written whole-epoch ``tf.function`` (written here, independently of
      fitpilot: shuffled mini-batches in a ``tf.while_loop`` with ``GradientTape``, then
      validation on all rows in one batch) -- the floor to compare against;
  (d) the runner's epoch: ``FastEpochRunner.run_epoch()`` plus setting the learning
      rate; and ``KerasTrainingEnv.step`` (keep the lr) when ``fitpilot.envs.env``
      exists; (c) and (d) are interleaved epoch by epoch so that load from other
      processes hits both alike;

then the median ``runner.reset`` time, and over ``--episodes`` episodes of
``--episode-epochs`` epochs (runner reset each episode, lr changed each epoch) the
resident memory after 10 episodes and at the end, and the median step time over the
first and the last 10 episodes (and its ratio to hand-written epochs interleaved
with those episodes, which load from other processes hits alike). Targets:
(d) <= 1.5x (c); reset <= 10 ms; RSS growth <= 50 MB; flat step time.

With ``--batched N [N ...]`` it measures the batched environment instead (and only
that): env steps per second of ``BatchedVecEnv`` with N copies of the task (one
step = N env steps; actions lower/keep/raise drawn at random, so episodes run to
the budget and auto-reset), against ``KerasTrainingEnv.step`` with the same actions,
in interleaved rounds (medians), with the load average and the process's peak RSS.
Also per CPU second of this process (one TensorFlow thread) and its workers: on a
machine loaded by others that is close to the rate on idle cores. ``--processes P``
splits the N copies into P worker processes (``ProcessGroupsVecEnv``, as
``fitpilot train --processes``); peak RSS is then the largest process's. Targets:
>= 1,000 env steps/s at N=16; RSS <= 2 GB. ``--task`` picks another train-suite
task for it (e.g. ``digits_cnn``).

    FITPILOT_THREADS=1 .venv/bin/python benchmarks/env_speed.py
    FITPILOT_THREADS=2 .venv/bin/python benchmarks/env_speed.py --episodes 1000
    FITPILOT_THREADS=1 .venv/bin/python benchmarks/env_speed.py --batched 1 4 16
    FITPILOT_THREADS=1 .venv/bin/python benchmarks/env_speed.py --batched 16 --processes 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from measure import (  # benchmarks/measure.py, beside this script
    cpu_seconds,
    peak_rss_mb,
    rss_mb,
    worker_pids,
)

from fitpilot import runtime


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def p10_ms(samples: list[float]) -> float:
    """The fastest tenth: less sensitive than the median to other processes' load."""
    return 1000 * statistics.quantiles(samples, n=10)[0]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fit_per_epoch(task: Any, epochs: int) -> list[float]:
    """(a) ``model.fit(epochs=1)`` called ``epochs`` times (the first call dropped)."""
    data = task.data()
    model = task.compiled_model()
    kwargs = dict(
        batch_size=task.batch_size,
        validation_data=(data.validation.x, data.validation.y),
        epochs=1,
        verbose=0,
    )
    x, y = data.train.x, data.train.y
    return [timed(lambda: model.fit(x, y, **kwargs)) for _ in range(epochs + 1)][1:]


def fit_long(task: Any, epochs: int) -> list[float]:
    """(b) epoch durations inside one ``model.fit(epochs=epochs + 1)`` (first dropped)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.durations.append(time.perf_counter() - self.start)

    data = task.data()
    timer = EpochTimer()
    task.compiled_model().fit(
        data.train.x,
        data.train.y,
        batch_size=task.batch_size,
        validation_data=(data.validation.x, data.validation.y),
        epochs=epochs + 1,
        verbose=0,
        callbacks=[timer],
    )
    return timer.durations[1:]


def hand_written_epoch(task: Any) -> Callable[[int], Any]:
    """(c) One epoch as one hand-written ``tf.function``; returns ``epoch(e) -> logs``."""
    import keras
    import tensorflow as tf

    data = task.data()
    model = task.build_model()
    optimizer = task.make_optimizer()
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.get(task.loss)
    x, y = tf.constant(data.train.x), tf.constant(data.train.y)
    val_x, val_y = tf.constant(data.validation.x), tf.constant(data.validation.y)
    rows, size = len(data.train), task.batch_size
    steps = -(-rows // size)

    def accuracy_sum(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        predicted = tf.cast(tf.argmax(probabilities, axis=-1), labels.dtype)
        return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))

    @tf.function(autograph=False)
    def epoch(seed: tf.Tensor) -> tf.Tensor:
        order = tf.argsort(tf.random.stateless_uniform([rows], seed))

        def body(i: tf.Tensor, loss_sum: tf.Tensor, hits: tf.Tensor) -> tuple:
            index = order[i * size : tf.minimum((i + 1) * size, rows)]
            x_batch, y_batch = tf.gather(x, index), tf.gather(y, index)
            with tf.GradientTape() as tape:
                probabilities = model(x_batch, training=True)
                loss = tf.reduce_mean(loss_fn(y_batch, probabilities))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            count = tf.cast(tf.shape(index)[0], tf.float32)
            return i + 1, loss_sum + loss * count, hits + accuracy_sum(y_batch, probabilities)

        _, loss_sum, hits = tf.while_loop(
            lambda i, *_: i < steps, body, [tf.constant(0), tf.constant(0.0), tf.constant(0.0)]
        )
        probabilities = model(val_x, training=False)
        val_loss = tf.reduce_mean(loss_fn(val_y, probabilities))
        val_accuracy = accuracy_sum(val_y, probabilities) / len(data.validation)
        return tf.stack([loss_sum / rows, hits / rows, val_loss, val_accuracy])

    return lambda e: epoch(tf.constant([1, e], tf.int64)).numpy()



def batched_group(task: Any, copies: int) -> Any:
    """A ``BatchedVecEnv`` of ``copies`` copies of ``task`` (in a worker process: TF first)."""
    runtime.configure(1)
    from fitpilot.agents.batched_vecenv import BatchedVecEnv

    return BatchedVecEnv([task], copies)


def process_tree_cpu(pids: list[int]) -> float:
    """CPU seconds so far of this process and of the worker processes ``pids``."""
    return time.process_time() + sum(cpu_seconds(pid) for pid in pids)


def batched_speed(
    task: Any, copies: list[int], rounds: int, steps: int, processes: int = 1
) -> None:
    """Env steps/s of the batched env per N in ``copies`` vs the single env, interleaved."""
    import functools

    import numpy as np

    from fitpilot.agents.batched_vecenv import grouped
    from fitpilot.envs.env import KerasTrainingEnv

    rng = np.random.default_rng(0)
    single = KerasTrainingEnv(tasks=[task])
    single.reset(seed=0)

    def single_steps() -> None:
        for _ in range(steps):
            _, _, terminated, truncated, _ = single.step(int(rng.integers(3)))
            if terminated or truncated:
                single.reset()

    print(
        f"\n{'env':<28} {'env steps/s':>11} {'x single':>8} {'per CPU s':>9} {'x single':>8} "
        f"{'load':>5} {'peak RSS MB':>11}"
    )
    for n in copies:
        venv = grouped(functools.partial(batched_group, task), n, processes)
        pids = worker_pids(venv)
        started = time.perf_counter()
        venv.seed(0)
        venv.reset()
        venv.step_async(np.ones(n, np.int64))
        venv.step_wait()
        compile_s = time.perf_counter() - started

        def batched_steps(n: int = n, venv: Any = venv) -> None:
            for _ in range(max(steps // n, 1)):
                venv.step_async(rng.integers(3, size=n))
                venv.step_wait()

        single_steps()  # warm-up
        rates: dict[str, list[tuple[float, float]]] = {"single": [], "batched": []}
        for _ in range(rounds):
            for name, run, count in (
                ("single", single_steps, steps),
                ("batched", batched_steps, max(steps // n, 1) * n),
            ):
                wall, cpu = time.perf_counter(), process_tree_cpu(pids)
                run()
                wall, cpu = time.perf_counter() - wall, process_tree_cpu(pids) - cpu
                rates[name].append((count / wall, count / cpu))
        peak = max([peak_rss_mb(), *(peak_rss_mb(pid) for pid in pids)])
        venv.close()
        (one, one_cpu), (many, many_cpu) = (
            tuple(statistics.median(r[k] for r in rates[name]) for k in (0, 1))
            for name in ("single", "batched")
        )
        load = os.getloadavg()[0]
        print(
            f"{'KerasTrainingEnv.step':<28} {one:>11.0f} {1:>8.2f} {one_cpu:>9.0f} {1:>8.2f} "
            f"{load:>5.1f}"
        )
        print(
            f"{f'batched N={n}, {min(processes, n)} process(es)':<28} {many:>11.0f} "
            f"{many / one:>8.2f} {many_cpu:>9.0f} "
            f"{many_cpu / one_cpu:>8.2f} {load:>5.1f} {peak:>11.0f}   "
            f"(first reset + step: {compile_s:.1f} s)",
            flush=True,
        )
    single.close()


def make_env(task: Any) -> Any | None:
    """``KerasTrainingEnv`` on the task if the module exists, else None."""
    try:
        from fitpilot.envs.env import KerasTrainingEnv
    except ImportError:
        return None
    return KerasTrainingEnv(tasks=[task])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-epochs", type=int, default=30, help="epochs timed for (a), (b)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs timed for (c), (d)")
    parser.add_argument("--resets", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--episode-epochs", type=int, default=3)
    parser.add_argument(
        "--env",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time KerasTrainingEnv.step (when fitpilot.envs.env exists)",
    )
    parser.add_argument(
        "--batched", type=int, nargs="+", help="time BatchedVecEnv with these N instead"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (--batched)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="--batched: split the N copies into this many worker processes (1: in-process)",
    )
    parser.add_argument("--round-steps", type=int, default=160, help="env steps per round")
    parser.add_argument(
        "--task",
        default="digits_mlp",
        help="--batched: a task of the train suite (e.g. digits_cnn, sine_gru)",
    )
    args = parser.parse_args()
    threads = runtime.configure()

    from fitpilot.envs.runner import FastEpochRunner
    from fitpilot.envs.suites import train_suite

    tasks = {t.name: t for t in train_suite()}
    if args.task not in tasks or (args.task != "digits_mlp" and not args.batched):
        parser.error(f"--task: one of {', '.join(tasks)}, and only with --batched")
    task = tasks[args.task]
    print(
        f"task {task.name}: {len(task.data().train)} training rows, batch {task.batch_size}, "
        f"{task.optimizer_name}; TensorFlow threads {threads}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if args.batched:
        batched_speed(task, args.batched, args.rounds, args.round_steps, args.processes)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return

    fit_a = fit_per_epoch(task, args.fit_epochs)
    fit_b = fit_long(task, args.fit_epochs)

    hand = hand_written_epoch(task)
    runner = FastEpochRunner(task)
    runner.reset(0, task.learning_rate)
    lr = task.learning_rate

    def runner_step() -> None:
        runner.learning_rate = lr
        runner.run_epoch()

    env = make_env(task) if args.env else None
    keep = None
    if env is not None:
        keep = list(env.actions.factors).index(1.0)
        env.reset(seed=0, options={"lr_factor": 1.0})

    def env_step() -> None:
        _, _, terminated, truncated, _ = env.step(keep)
        if terminated or truncated:
            env.reset(options={"lr_factor": 1.0})  # not timed separately: rare (1 per budget)

    for e in range(5):  # warm-up: tracing
        hand(e)
        runner_step()
        if env is not None:
            env_step()
    hand_times, runner_times, env_times = [], [], []
    for e in range(args.epochs):
        hand_times.append(timed(lambda e=e: hand(e)))
        runner_times.append(timed(runner_step))
        if env is not None:
            env_times.append(timed(env_step))

    reset_times = [timed(lambda i=i: runner.reset(i, lr)) for i in range(args.resets + 10)][10:]

    # Per episode: the runner's epochs; in the first and last 10 episodes also as many
    # hand-written epochs, interleaved, as a yardstick that other processes' load hits alike.
    step_times: list[list[float]] = []
    yardstick: list[list[float]] = []
    rss_after_10 = float("nan")
    for episode in range(args.episodes):
        watched = episode < 10 or episode >= args.episodes - 10
        runner.reset(episode, lr)
        times, hand_epochs = [], []
        for epoch in range(args.episode_epochs):
            runner.learning_rate = lr * (0.5 if epoch % 2 else 1.0)
            times.append(timed(runner.run_epoch))
            if watched:
                hand_epochs.append(timed(lambda epoch=epoch: hand(epoch)))
        step_times.append(times)
        if watched:
            yardstick.append(hand_epochs)
        if episode + 1 == 10:
            rss_after_10 = rss_mb()
    rss_end = rss_mb()
    first = [t for episode in step_times[:10] for t in episode]
    last = [t for episode in step_times[-10:] for t in episode]
    first_c = [t for episode in yardstick[:10] for t in episode]
    last_c = [t for episode in yardstick[-10:] for t in episode]
    traces = runner.epoch_function.experimental_get_tracing_count()

    c = median_ms(hand_times)
    rows = [
        ("(a) model.fit(epochs=1) per epoch", median_ms(fit_a)),
        ("(b) one long model.fit", median_ms(fit_b)),
        ("(c) hand-written whole-epoch tf.function", c),
        ("(d) runner.run_epoch() + set lr", median_ms(runner_times)),
    ]
    if env_times:
        rows.append(("(d) KerasTrainingEnv.step (keep)", median_ms(env_times)))
    print(f"\n{'how one epoch is run (median)':<44} {'ms/epoch':>9} {'x (c)':>7}")
    for name, ms in rows:
        print(f"{name:<44} {ms:9.2f} {ms / c:7.2f}")
    print(f"\nrunner.reset median: {median_ms(reset_times):.2f} ms ({args.resets} resets)")
    print(
        f"episodes of {args.episode_epochs} epochs: RSS {rss_after_10:.0f} MB after 10, "
        f"{rss_end:.0f} MB after {args.episodes} (growth {rss_end - rss_after_10:+.1f} MB); "
        f"epoch function traced {traces}x"
    )
    for name, steps, hand_steps in (("first", first, first_c), ("last", last, last_c)):
        ratio = median_ms(steps) / median_ms(hand_steps)
        print(
            f"  {name} 10 episodes: step median {median_ms(steps):.2f} ms "
            f"(p10 {p10_ms(steps):.2f}), {ratio:.2f}x the interleaved hand-written epoch"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if env is not None:
        env.close()


if __name__ == "__main__":
    main()
