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
a ratio that the load of other processes hits alike. Targets: PPO with 2
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


def measure(
    n_envs: int, timesteps: int, suite: str, seed: int, vec: str, processes: int = 1
) -> dict[str, Any]:
    """Start-up, warm-up and learning figures of one PPO run with ``n_envs`` environments."""
    from fitpilot.agents.callbacks import RolloutTimerCallback
    from fitpilot.agents.config import build_config
    from fitpilot.agents.train import new_model
    from fitpilot.agents.vecenv import make_workers, wrap
    from fitpilot.envs.loading import load_tasks

    config = build_config(
        {"suite": suite, "n_envs": n_envs, "seed": seed, "eval_every": 0, "vec": vec,
         "processes": processes if vec == "batched" else 1}
    )
    started = time.perf_counter()
    workers = make_workers(config)
    start_seconds = time.perf_counter() - started
    try:
        started = time.perf_counter()
        if vec == "batched":
            workers.venv.warm_up()
        else:
            for task in load_tasks(config.task_spec):
                workers.env_method("reset", seed=seed, options={"task": task.name})
        warmup_seconds = time.perf_counter() - started
        model = new_model(config, wrap(workers, config))
        timer = RolloutTimerCallback()
        pids = worker_pids(workers.venv)
        cpu_before = [time.process_time()] + [cpu_seconds(pid) for pid in pids]
        started = time.perf_counter()
        model.learn(timesteps, callback=timer)
        wall = time.perf_counter() - started
        cpu_after = [time.process_time()] + [cpu_seconds(pid) for pid in pids]
        main_cpu, *worker_cpu = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
        steps = model.num_timesteps
        worker_peak = [peak_rss_mb(pid) for pid in pids]
        pss = pss_mb() + sum(pss_mb(pid) for pid in pids)
    finally:
        workers.close()
    return {
        "vec": vec,
        "n_envs": n_envs,
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
    }



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
    args = parser.parse_args()
    runtime.configure(1)
    import torch

    torch.set_num_threads(1)
    print(f"PPO on suite {args.suite!r}, {args.timesteps} steps; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'vec':>8} {'envs':>4} {'start s':>8} {'warm-up s':>9} {'steps':>6} {'wall s':>7} "
          f"{'steps/s':>8} {'rollout s':>9} {'learn s':>8} {'main cpu s':>10} "
          f"{'worker cpu s':>13} {'idle est.':>9} {'peak RSS MB':>11} {'workers MB':>11} "
          f"{'PSS MB':>7} {'load':>5}")
    runs = [("subproc", args.baseline)] if args.baseline else []
    runs += [(args.vec, n_envs) for n_envs in args.n_envs]
    results = []
    for vec, n_envs in runs:
        r = measure(n_envs, args.timesteps, args.suite, args.seed, vec, args.processes)
        results.append(r)
        workers = "/".join(f"{c:.1f}" for c in r["worker_cpu_s"]) or "-"
        workers_mb = "/".join(f"{m:.0f}" for m in r["worker_peak_rss_mb"]) or "-"
        print(f"{vec:>8} {r['n_envs']:>4} {r['start_s']:>8.1f} {r['warmup_s']:>9.1f} "
              f"{r['steps']:>6} {r['wall_s']:>7.1f} {r['steps_per_s']:>8.1f} "
              f"{r['rollout_s']:>9.1f} {r['learn_s']:>8.1f} {r['main_cpu_s']:>10.1f} "
              f"{workers:>13} {r['idle_estimate']:>9.0f} {r['peak_rss_mb']:>11.0f} "
              f"{workers_mb:>11} {r['pss_mb']:>7.0f} {r['load']:>5.1f}", flush=True)
    last = results[-1]
    if args.baseline:
        ratio = last["steps_per_s"] / results[0]["steps_per_s"]
        print(f"ratio {ratio:.2f}x subproc with {args.baseline} envs (same run)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{last['steps_per_s']:.1f} env steps/s ({last['vec']}, {last['n_envs']} envs)")


if __name__ == "__main__":
    main()
