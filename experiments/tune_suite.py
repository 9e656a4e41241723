"""Measure the tuned learning rate of each task of a suite (and its epoch time in the env).

The tuned rate is docs/benchmark.md's v2 reference: the constant learning rate of a
log-spaced grid of 7 factors over 4 decades around the task's default whose best
*validation* loss, averaged over the seeds, is lowest (never the test split).
When the winner is at an edge of the grid, the grid is extended on that side by
the same step, one point at a time, until the winner is inside, at most two
decades further. Each run is the benchmark's ``oracle`` run (constant rate,
best-epoch restore) on the experiments' :class:`~fitpilot.experiments.runs.Runner`.

    python -m fitpilot.experiments.tune_suite --suites train_v2,validation --jobs 2
    python -m fitpilot.experiments.tune_suite --epoch-times --suites train_v2,validation

Results go to ``experiments/tuned_rates.json`` (every mean and per-seed best
validation loss), one task at a time, so a killed run resumes where it stopped.
At the end the table to paste into ``envs/suites.py``'s ``TUNED_LEARNING_RATES``
is printed. This module does not import TensorFlow; the worker processes do.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fitpilot.envs import load_tasks
from fitpilot.experiments.reference_rate import best_factor
from fitpilot.experiments.settings import (
    MAX_EXTENSION_DECADES,
    ORACLE,
    RunKey,
    RunOrder,
    RunRecord,
    grid_extension,
    oracle_factors,
)
from fitpilot.runtime import configure, default_threads

GRID_POINTS = 7
DEFAULT_OUT = Path(__file__).resolve().parent / "tuned_rates.json"


def _round(factor: float) -> float:
    """4 significant digits, as :func:`~fitpilot.experiments.settings.oracle_factors`."""
    return float(f"{factor:.4g}")


def extension(scores: Mapping[float, float]) -> float | None:
    """The next factor to try, or ``None`` when the winner is inside the grid (or at its limit).

    ``scores`` maps every factor tried so far to its mean best validation loss. The
    extension continues the base grid's log step, one point at a time, at most
    :data:`~fitpilot.experiments.settings.MAX_EXTENSION_DECADES` beyond its edge.
    """
    base = oracle_factors(GRID_POINTS)
    winner = best_factor(scores)
    if not any(math.isfinite(v) for v in scores.values()) or base[0] < winner < base[-1]:
        return None
    side = -1 if winner <= base[0] else 1
    done = sum(1 for f in scores if (f < base[0] if side < 0 else f > base[-1]))
    if winner != (min(scores) if side < 0 else max(scores)):
        return None  # the winner is an earlier extension point, inside the grid
    return grid_extension(GRID_POINTS, side, done)


def tune_task(task_source: str, name: str, seeds: int, threads: int) -> dict[str, Any]:
    """Tune one task in this process (sizes TensorFlow's threads first; imports it)."""
    configure(threads=threads)
    from fitpilot.experiments.runs import Runner  # imports TensorFlow: after configure

    task = next(t for t in load_tasks(task_source) if t.name == name)
    runner = Runner([task])
    per_seed: dict[float, list[float]] = {}
    test: dict[float, list[float]] = {}
    start = time.perf_counter()

    def measure(factor: float) -> None:
        records: list[RunRecord] = [
            runner.run(RunOrder(RunKey(name, seed, factor, ORACLE), task.learning_rate * factor))
            for seed in range(seeds)
        ]
        per_seed[factor] = [r.best_val_loss for r in records]
        test[factor] = [r.test_loss for r in records]

    for factor in oracle_factors(GRID_POINTS):
        measure(factor)
    while (factor := extension(_means(per_seed))) is not None:
        measure(factor)
    means = _means(per_seed)
    winner = best_factor(means)
    return {
        "default_learning_rate": task.learning_rate,
        "tuned_factor": winner,
        "tuned_learning_rate": _round(task.learning_rate * winner),
        "at_edge": winner in (min(means), max(means)) and extension(means) is None,
        "mean_best_val_loss": {str(f): means[f] for f in sorted(means)},
        "best_val_loss": {str(f): per_seed[f] for f in sorted(per_seed)},
        "test_loss_informative": {str(f): test[f] for f in sorted(test)},
        "seconds": round(time.perf_counter() - start, 1),
    }


def _means(per_seed: Mapping[float, Sequence[float]]) -> dict[float, float]:
    return {f: statistics.fmean(values) for f, values in per_seed.items()}


def tune(suites: Sequence[str], seeds: int, jobs: int, out: Path) -> dict[str, Any]:
    """Tune every task of ``suites`` not yet in ``out``; write ``out`` after each task."""
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    settings = {"grid_points": GRID_POINTS, "seeds": seeds, "choice": "best val_loss"}
    results.setdefault("settings", {**settings, "extra_decades": MAX_EXTENSION_DECADES})
    tasks = results.setdefault("tasks", {})
    todo = [(suite, t.name) for suite in suites for t in load_tasks(suite) if t.name not in tasks]
    todo = list(dict.fromkeys(todo))
    threads = default_threads(processes=jobs)
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
        futures = {
            pool.submit(tune_task, suite, name, seeds, threads): (suite, name)
            for suite, name in todo
        }
        for future in as_completed(futures):
            suite, name = futures[future]
            tasks[name] = {"suite": suite, **future.result()}
            out.write_text(json.dumps(results, indent=1, sort_keys=True))
            entry = tasks[name]
            print(
                f"{name}: x{entry['tuned_factor']:g} -> {entry['tuned_learning_rate']:g}"
                f"{' (at the edge)' if entry['at_edge'] else ''} in {entry['seconds']} s",
                flush=True,
            )
    return results


def epoch_times(suites: Sequence[str], epochs: int = 10) -> list[tuple[str, float, float]]:
    """Median and fastest milliseconds per epoch of each task in the env's runner, over
    ``epochs`` epochs after 2 warm-up epochs (the fastest is the least disturbed by load)."""
    configure(threads=default_threads())
    from fitpilot.envs.runner import make_runner  # imports TensorFlow: after configure

    rows = []
    seen = set()
    for suite in suites:
        for task in load_tasks(suite):
            if task.name in seen:
                continue
            seen.add(task.name)
            runner = make_runner(task)
            runner.reset(seed=0, learning_rate=task.learning_rate)
            times = []
            for epoch in range(epochs + 2):
                start = time.perf_counter()
                runner.run_epoch()
                if epoch >= 2:
                    times.append(1000 * (time.perf_counter() - start))
            runner.close()
            rows.append((task.name, statistics.median(times), min(times)))
            print(
                f"{task.name:20s} median {rows[-1][1]:6.1f} ms/epoch, fastest {rows[-1][2]:6.1f}",
                flush=True,
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="train_v2,validation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epoch-times", action="store_true", help="time epochs instead")
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    if args.epoch_times:
        epoch_times(suites)
        return
    results = tune(suites, args.seeds, args.jobs, args.out)
    print("TUNED_LEARNING_RATES = {")
    for name in sorted(results["tasks"]):
        print(f'    "{name}": {results["tasks"][name]["tuned_learning_rate"]!r},')
    print("}")


if __name__ == "__main__":
    main()
