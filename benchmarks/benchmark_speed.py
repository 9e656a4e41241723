"""How long does ``fitpilot benchmark`` take? Runs it end to end and prints where the time went.

Runs the command (a real subprocess, as a user would) into a fresh directory,
then reads its results store and prints:

- the elapsed wall time of the whole command, and the number of runs;
- the sum of the runs' own wall seconds (fit + test scoring), so the rest is
  process start-up, TensorFlow import, compiling and tracing each task's
  models once per worker, and the report;
- per task: runs, mean seconds per run, mean epochs run.

The default is the full holdout benchmark of issue 7 (4 tasks x 3 seeds x 3
lr factors = 36 cells, 6 strategies + a 7-point oracle grid = 300 runs) with
2 worker processes. The learned strategy needs a controller bundle; without
``--controller`` a random one is written (its decisions are random; its cost
is that of any bundle of the same size).

    .venv/bin/python benchmarks/benchmark_speed.py --jobs 2
    .venv/bin/python benchmarks/benchmark_speed.py --seeds 1 --jobs 1   # a third of the work
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from fitpilot.experiments.settings import RunRecord
from fitpilot.experiments.store import read_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="holdout")
    parser.add_argument("--seeds", default="3")
    parser.add_argument("--lr-factors", default="0.1,1,10")
    parser.add_argument("--oracle-grid", default="7")
    parser.add_argument("--jobs", default="2")
    parser.add_argument("--controller", help="bundle path (default: a random bundle)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        controller = args.controller
        if controller is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.bundles import write_random_bundle

            controller = str(write_random_bundle(Path(tmp) / "controller.zip"))
        out = Path(tmp) / "out"
        command = [
            str(Path(sys.executable).with_name("fitpilot")),
            "benchmark",
            "--controller",
            controller,
            "--suite",
            args.suite,
            "--seeds",
            args.seeds,
            "--lr-factors",
            args.lr_factors,
            "--oracle-grid",
            args.oracle_grid,
            "--jobs",
            args.jobs,
            "--out",
            str(out),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        runs = read_store(out).runs

    in_runs = sum(r.wall_seconds for r in runs)
    print(f"command: {' '.join(command[1:])}")
    print(
        f"elapsed {elapsed:.1f} s for {len(runs)} runs with --jobs {args.jobs} "
        f"({elapsed / len(runs):.2f} s per run)"
    )
    print(
        f"sum of run wall seconds {in_runs:.1f} s (fit + test scoring); "
        f"elapsed x jobs - that = {elapsed * int(args.jobs) - in_runs:.1f} s of start-up, "
        f"compiling, idle tail and report"
    )
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    for task, task_runs in by_task.items():
        print(
            f"  {task:<16} {len(task_runs):>3} runs  "
            f"{statistics.mean(r.wall_seconds for r in task_runs):.2f} s/run  "
            f"{statistics.mean(r.epochs for r in task_runs):.1f} epochs/run"
        )


if __name__ == "__main__":
    main()
