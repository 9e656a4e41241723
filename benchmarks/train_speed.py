"""Env steps per second of PPO training on the train suite, per kind of environments.

For each ``--n-envs`` value, with the packaged PPO recipe (``fitpilot train``'s
defaults, evaluation and checkpoints off) and the environments of ``--vec``:

1. start the workers (``subproc``: ``SubprocVecEnv``, one process each, or in-process
   for 1; ``dummy``: all in-process; ``batched``: N copies of a task trained in
   compiled calls, in-process, or split into ``--processes`` worker processes);
2. warm up: every worker resets once on every task, which builds and compiles
   each task's Keras model (batched: every task's group is built and XLA-compiled);
   a one-off cost per worker and task, reported apart;
3. learn ``--timesteps`` steps with PPO, timing rollout collection (environment
   steps plus policy inference) apart from learning (PPO's gradient updates).

Prints env steps per second including learning, and the split, with the load
average, and as its last line ``<number> env steps/s`` of the last run.
``--baseline 2`` first measures ``subproc`` with 2 environments in the same run, for
a ratio that the load of other processes hits alike. ``--config RECIPE`` measures a
recipe file's own settings instead (its suite, environments, lanes and PPO
hyperparameters), ``--baseline-config RECIPE`` another recipe first.

Batched environments also show where their steps go: the seconds of the epoch calls
(``epoch s``, ``calls/step``: one per lane, plus resets) and of the rest of the step
(``other s``: the copies' environments, featurizer, resets); with worker processes,
each worker's idle share of the learner's step time (``lockstep idle``: a fast worker
waiting for a slow one). Targets: PPO with 2
environments >= 150 env steps/s; batched with 16 copies >= 600 env steps/s, its
peak RSS <= 2 GB. Memory: the main process's peak RSS, each worker's peak RSS, and
the PSS of all of them at the end (shared library pages counted once: the RAM they
hold together). The machine is shared, so the CPU seconds of the main
process and of each worker during learning are printed too; ``idle est.`` is the
steps/s they would allow on two free cores (steps / (main CPU + the busiest
worker's CPU): in lockstep the main process infers and learns while the workers wait).

    .venv/bin/python benchmarks/train_speed.py --timesteps 4096 --n-envs 1 2
    .venv/bin/python benchmarks/train_speed.py --vec batched --n-envs 16 --timesteps 8192 \
        --baseline 2
    .venv/bin/python benchmarks/train_speed.py --timesteps 16384 \
        --config experiments/configs/pretrained_batched.yaml \
        --baseline-config experiments/configs/pretrained.yaml
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from measure import (  # benchmarks/measure.py, beside this script
    cpu_seconds,
    peak_rss_mb,
    pss_mb,
    worker_pids,
)

from fitpilot import runtime
from fitpilot.agents.config import VEC_ENVS


def measure(config: Any, timesteps: int) -> dict[str, Any]:
    """Start-up, warm-up and learning figures of one PPO run of ``config`` (a TrainConfig)."""
    from fitpilot.agents.callbacks import RolloutTimerCallback
    from fitpilot.agents.train import new_model
    from fitpilot.agents.vecenv import make_workers, wrap
    from fitpilot.envs.loading import load_tasks

    seed = config.seed
    started = time.perf_counter()
    workers = make_workers(config)
    start_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        if config.vec == "batched":
            workers.venv.warm_up()
        else:
            for task in load_tasks(config.task_spec):
                workers.env_method("reset", seed=seed, options={"task": task.name})
        warmup_seconds = time.perf_counter() - started
        model = new_model(config, wrap(workers, config))
        timer = RolloutTimerCallback()
        pids = worker_pids(workers.venv)
        timing = getattr(workers.venv, "timing", dict)
        timing_before = timing()
        cpu_before = [time.process_time()] + [cpu_seconds(pid) for pid in pids]
        started = time.perf_counter()
        model.learn(timesteps, callback=timer)
        wall = time.perf_counter() - started
        cpu_after = [time.process_time()] + [cpu_seconds(pid) for pid in pids]
        main_cpu, *worker_cpu = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
        steps = model.num_timesteps
        worker_peak = [peak_rss_mb(pid) for pid in pids]
        pss = pss_mb() + sum(pss_mb(pid) for pid in pids)
        lanes = lane_figures(timing_before, timing())
    finally:
        workers.close()
    return {
        "vec": config.vec,
        "n_envs": config.n_envs,
        "tasks": config.task_spec,
        "lanes": config.lanes,
        "steps": steps,
        "start_s": start_seconds,
        "warmup_s": warmup_seconds,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "rollout_s": timer.rollout_seconds,
        "learn_s": timer.learn_seconds,
        "main_cpu_s": main_cpu,
        "worker_cpu_s": worker_cpu,
        "idle_estimate": steps / (main_cpu + max(worker_cpu, default=0.0)),
        "peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": worker_peak,
        "pss_mb": pss,
        "load": os.getloadavg()[0],
        **lanes,
    }


def lane_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Epoch-call seconds, calls per step, other step seconds and lockstep idle shares
    between two ``timing()`` readings of a batched VecEnv (empty for other kinds)."""
    if not after:
        return {}
    if "groups" not in after:  # in-process: one group
        groups_before, groups_after, waited = [before], [after], None
    else:  # worker processes: the learner waited step_seconds for all
        groups_before, groups_after = before["groups"], after["groups"]
        waited = after["step_seconds"] - before["step_seconds"]

    def spent(key: str) -> list[float]:
        return [b[key] - a[key] for a, b in zip(groups_before, groups_after, strict=True)]

    busy, epochs = spent("step_seconds"), spent("epoch_seconds")
    calls, steps = sum(spent("calls")), max(spent("steps"))
    return {
        "epoch_s": sum(epochs),
        "other_s": sum(busy) - sum(epochs),
        "calls_per_step": calls / max(steps, 1),
        "lockstep_idle": [1 - b / waited for b in busy] if waited else [],
    }


def recipe(path: str | None, **settings: Any) -> Any:
    """The TrainConfig of recipe file ``path`` (evaluation off) or of ``settings``."""
    from fitpilot.agents.config import build_config, read_config_file
    from fitpilot.experiments.recipe import SELECT_KEY

    layers = [{k: v for k, v in read_config_file(path).items() if k != SELECT_KEY}] if path else []
    return build_config(*layers, {"eval_every": 0} if path else settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=4096)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--suite", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vec", choices=VEC_ENVS, default="subproc")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="batched: worker processes the copies are split into (1: in-process; 0: per core)",
    )
    parser.add_argument(
        "--baseline",
        type=int,
        default=0,
        help="first measure subproc with this many environments, for a ratio (0: no)",
    )
    parser.add_argument("--config", help="measure this recipe file's settings instead")
    parser.add_argument("--baseline-config", help="first measure this recipe file, for a ratio")
    args = parser.parse_args()
    runtime.configure(1)
    import torch

    torch.set_num_threads(1)
    print(
        f"PPO, {args.timesteps} steps; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        f"{'vec':>8} {'envs':>4} {'start s':>8} {'warm-up s':>9} {'steps':>6} {'wall s':>7} "
        f"{'steps/s':>8} {'rollout s':>9} {'learn s':>8} {'main cpu s':>10} "
        f"{'worker cpu s':>13} {'idle est.':>9} {'peak RSS MB':>11} {'workers MB':>11} "
        f"{'PSS MB':>7} {'load':>5} {'epoch s':>8} {'other s':>8} {'calls/step':>10} "
        f"{'lockstep idle':>13}"
    )
    common = {"suite": args.suite, "seed": args.seed, "eval_every": 0}
    configs = []
    if args.baseline_config:
        configs.append(recipe(args.baseline_config))
    elif args.baseline:
        configs.append(recipe(None, **common, n_envs=args.baseline, vec="subproc"))
    if args.config:
        configs.append(recipe(args.config))
    else:
        processes = args.processes if args.vec == "batched" else 1
        configs += [
            recipe(None, **common, n_envs=n, vec=args.vec, processes=processes) for n in args.n_envs
        ]
    results = []
    for config in configs:
        r = measure(config, args.timesteps)
        results.append(r)
        workers = "/".join(f"{c:.1f}" for c in r["worker_cpu_s"]) or "-"
        workers_mb = "/".join(f"{m:.0f}" for m in r["worker_peak_rss_mb"]) or "-"
        lanes = (
            f"{r['epoch_s']:>8.1f} {r['other_s']:>8.1f} {r['calls_per_step']:>10.2f} "
            f"{'/'.join(f'{i:.0%}' for i in r['lockstep_idle']) or '-':>13}"
            if "epoch_s" in r
            else f"{'-':>8} {'-':>8} {'-':>10} {'-':>13}"
        )
        print(
            f"{r['vec']:>8} {r['n_envs']:>4} {r['start_s']:>8.1f} {r['warmup_s']:>9.1f} "
            f"{r['steps']:>6} {r['wall_s']:>7.1f} {r['steps_per_s']:>8.1f} "
            f"{r['rollout_s']:>9.1f} {r['learn_s']:>8.1f} {r['main_cpu_s']:>10.1f} "
            f"{workers:>13} {r['idle_estimate']:>9.0f} {r['peak_rss_mb']:>11.0f} "
            f"{workers_mb:>11} {r['pss_mb']:>7.0f} {r['load']:>5.1f} {lanes}",
            flush=True,
        )
    last = results[-1]
    if len(configs) > 1 and (args.baseline or args.baseline_config):
        ratio = last["steps_per_s"] / results[0]["steps_per_s"]
        base = args.baseline_config or f"subproc with {args.baseline} envs"
        print(f"ratio {ratio:.2f}x {base} (same run)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    lanes = f", {last['lanes']} lanes" if last["lanes"] > 1 else ""
    print(
        f"{last['steps_per_s']:.1f} env steps/s ({last['vec']}, {last['n_envs']} envs{lanes}, "
        f"{last['tasks']})"
    )


if __name__ == "__main__":
    main()
