"""The Ray backend against the local one on this machine, and what the figures say about scaling.

Three measurements (``--only`` picks some):

1. ``overhead``: a trivial environment (no work per step) with 2 copies behind
   ``DummyVecEnv`` (in-process), ``SubprocVecEnv`` (forkserver) and
   ``RayVecEnv`` (Ray actors): microseconds per vectorised step, i.e. the cost
   of the transport alone.
2. ``benchmark``: ``fitpilot benchmark`` as a user runs it (a subprocess) on the
   holdout suite, 1 seed, lr factors 0.1,1,10, a 3-point oracle grid, every
   strategy (a random controller bundle): ``--jobs 1``, ``--jobs 2`` and
   ``--backend ray`` (2 workers of 1 CPU on this 2-core machine). Elapsed wall
   time of the command and the sum of the runs' own seconds.
3. ``training``: PPO with the packaged recipe on the train suite, 2
   environments, local (``SubprocVecEnv``) and Ray (``RayVecEnv``): start-up,
   warm-up (each environment resets once on every task, which builds and
   compiles its Keras models), then ``--timesteps`` steps timed as rollout
   (env steps + policy inference) and learning (PPO's updates). From these, the
   on-paper projection of throughput against the number of workers.

    .venv/bin/python benchmarks/ray_scaling.py
    .venv/bin/python benchmarks/ray_scaling.py --only overhead training --timesteps 2048
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from fitpilot import runtime

REPO = Path(__file__).resolve().parents[1]


class TrivialEnv(gymnasium.Env):
    """No work per step: a 32-float observation, episodes of 50 steps."""

    def __init__(self) -> None:
        self.observation_space = gymnasium.spaces.Box(-1, 1, (32,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(4)
        self.render_mode = None
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(32, np.float32), {}

    def step(self, action: int) -> tuple:
        self.steps += 1
        return np.zeros(32, np.float32), 0.0, False, self.steps >= 50, {}


def overhead(steps: int) -> None:
    """Microseconds per vectorised step of 2 trivial envs, per transport."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from fitpilot.agents.ray_vecenv import RayVecEnv
    from fitpilot.ray_backend import RayOptions, session

    makers = {
        "DummyVecEnv (in-process)": lambda: DummyVecEnv([TrivialEnv] * 2),
        "SubprocVecEnv (forkserver)": lambda: SubprocVecEnv([TrivialEnv] * 2, "forkserver"),
        "RayVecEnv (Ray actors)": lambda: RayVecEnv([TrivialEnv] * 2, {"num_cpus": 1}),
    }
    print(f"\n## Per-step overhead: 2 trivial envs, {steps} vectorised steps")
    print(f"{'transport':<28} {'us/step':>9} {'steps/s':>9}")
    actions = np.zeros(2, dtype=np.int64)
    with session(RayOptions()):
        for name, make in makers.items():
            venv = make()
            try:
                venv.reset()
                for _ in range(50):  # warm up
                    venv.step(actions)
                start = time.perf_counter()
                for _ in range(steps):
                    venv.step(actions)
                seconds = time.perf_counter() - start
            finally:
                venv.close()
            print(f"{name:<28} {seconds / steps * 1e6:>9.0f} {2 * steps / seconds:>9.0f}")


def benchmark(seeds: str, oracle_grid: str) -> None:
    """``fitpilot benchmark`` end to end with each backend."""
    sys.path.insert(0, str(REPO))
    from fitpilot.experiments.store import read_store
    from tests.bundles import write_random_bundle

    print(f"\n## fitpilot benchmark: holdout, {seeds} seed(s), lr 0.1,1,10, oracle {oracle_grid}")
    print(f"{'backend':<22} {'runs':>5} {'elapsed s':>10} {'in runs s':>10} {'runs/min':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = str(write_random_bundle(Path(tmp) / "controller.zip"))
        for label, extra in (
            ("local --jobs 1", ["--jobs", "1"]),
            ("local --jobs 2", ["--jobs", "2"]),
            ("ray (2 x 1 CPU)", ["--backend", "ray"]),
        ):
            out = Path(tmp) / label.split()[0] / extra[-1]
            command = [
                str(Path(sys.executable).with_name("fitpilot")), "benchmark",
                "--controller", bundle, "--suite", "holdout", "--seeds", seeds,
                "--lr-factors", "0.1,1,10", "--oracle-grid", oracle_grid,
                "--out", str(out), *extra,
            ]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(
                command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            elapsed = time.perf_counter() - start
            runs = read_store(out).runs
            in_runs = sum(r.wall_seconds for r in runs)
            print(
                f"{label:<22} {len(runs):>5} {elapsed:>10.1f} {in_runs:>10.1f} "
                f"{len(runs) / elapsed * 60:>9.1f}",
                flush=True,
            )


def training_run(backend: str, timesteps: int, n_envs: int) -> dict[str, Any]:
    """One PPO run in this process: start-up, warm-up, then timed rollouts and updates."""
    from fitpilot.agents.config import build_config
    from fitpilot.agents.vecenv import make_workers
    from fitpilot.ray_backend import RayOptions, session

    config = build_config({"suite": "train", "n_envs": n_envs, "eval_every": 0})
    if backend == "local":
        return _timed_training(make_workers, config, timesteps)
    from fitpilot.agents.ray_vecenv import make_ray_workers

    with session(RayOptions()):
        make = functools.partial(make_ray_workers, options=RayOptions())
        return _timed_training(make, config, timesteps)


def _timed_training(make: Callable[[Any], Any], config: Any, timesteps: int) -> dict[str, Any]:
    from fitpilot.agents.callbacks import RolloutTimerCallback
    from fitpilot.agents.train import new_model
    from fitpilot.agents.vecenv import wrap
    from fitpilot.envs.loading import load_tasks

    result: dict[str, Any] = {"n_envs": config.n_envs, "n_steps": config.hp["n_steps"]}
    started = time.perf_counter()
    workers = make(config)
    try:
        workers.get_attr("observation_space")  # every worker is up
        result["start_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for task in load_tasks(config.task_spec):
            workers.env_method("reset", seed=0, options={"task": task.name})
        result["warmup_s"] = time.perf_counter() - started
        model = new_model(config, wrap(workers, config))
        timer = RolloutTimerCallback()
        started = time.perf_counter()
        model.learn(timesteps, callback=timer)
        result["wall_s"] = time.perf_counter() - started
        result["steps"] = int(model.num_timesteps)
        result["rollout_s"] = timer.rollout_seconds
        result["learn_s"] = timer.learn_seconds
        result["updates"] = result["steps"] // (result["n_steps"] * config.n_envs)
    finally:
        workers.close()
    return result


def training(timesteps: int, n_envs: int) -> None:
    print(f"\n## PPO on the train suite: {n_envs} envs, {timesteps} steps (packaged recipe)")
    print(
        f"{'backend':<8} {'start s':>8} {'warm-up s':>9} {'wall s':>7} {'steps/s':>8} "
        f"{'rollout s':>9} {'learn s':>8} {'ms/vec step':>11} {'ms/update':>9}"
    )
    results = []
    for backend in ("local", "ray"):
        r = {"backend": backend, **training_run(backend, timesteps, n_envs)}
        results.append(r)
        vec_step_ms = r["rollout_s"] / (r["steps"] / n_envs) * 1e3
        update_ms = r["learn_s"] / max(r["updates"], 1) * 1e3
        r["vec_step_ms"], r["update_ms"] = vec_step_ms, update_ms
        print(
            f"{backend:<8} {r['start_s']:>8.1f} {r['warmup_s']:>9.1f} {r['wall_s']:>7.1f} "
            f"{r['steps'] / r['wall_s']:>8.1f} {r['rollout_s']:>9.1f} {r['learn_s']:>8.1f} "
            f"{vec_step_ms:>11.2f} {update_ms:>9.0f}",
            flush=True,
        )
    project(results[-1])


def project(r: dict[str, Any]) -> None:
    """Synchronous PPO with W workers, each on its own core, n_steps per worker per rollout:

    rollout = n_steps x (one vectorised step: env step + transport + batched policy call),
    update  = c x (W x n_steps) samples  (n_epochs passes of minibatches over the rollout),
    throughput(W) = W x n_steps / (rollout + update) = W / (t_step + c x W)  ->  1 / c.
    """
    n_steps = r["n_steps"]
    t_step = r["vec_step_ms"] / 1e3  # one vectorised step, all workers in parallel
    c = r["learn_s"] / r["steps"]  # learner seconds per collected sample
    balance = t_step / c
    print(
        f"\nprojection from the {r['backend']} run: vectorised step {t_step * 1e3:.2f} ms, "
        f"learner {c * 1e3:.2f} ms per sample ({n_steps} steps x W samples per update); "
        f"the learner takes as long as the rollout at W = t_step / c = {balance:.1f} workers; "
        f"ceiling 1/c = {1 / c:.0f} steps/s"
    )
    print(f"{'workers':>7} {'steps/s':>8} {'learner share':>13}")
    for workers in (1, 2, 4, 8, 16, 32, 64):
        per_rollout = n_steps * t_step + c * workers * n_steps
        share = c * workers * n_steps / per_rollout
        print(f"{workers:>7} {workers * n_steps / per_rollout:>8.0f} {share:>13.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", default=["overhead", "benchmark", "training"],
        choices=["overhead", "benchmark", "training"],
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=2000, help="vectorised steps (overhead)")
    parser.add_argument("--seeds", default="1", help="benchmark seeds")
    parser.add_argument("--oracle-grid", default="3")
    parser.add_argument("--timesteps", type=int, default=4096, help="PPO env steps (training)")
    parser.add_argument("--n-envs", type=int, default=2)
    args = parser.parse_args()
    runtime.configure(1)
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
        f"python {sys.version.split()[0]}"
    )
    if "overhead" in args.only:
        overhead(args.steps)
    if "benchmark" in args.only:
        benchmark(args.seeds, args.oracle_grid)
    if "training" in args.only:
        import torch

        torch.set_num_threads(1)
        training(args.timesteps, args.n_envs)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
