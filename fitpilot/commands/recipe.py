"""``fitpilot recipe``: a training recipe's quality over seeds, and the bundle to ship.

Trains the recipe once per seed (``OUT/seed-K``, as ``fitpilot train`` does),
benchmarks every bundle on the same cells of the ``validation`` suite
(``OUT/baselines`` holds the runs that do not depend on the bundle, each
``OUT/seed-K/benchmark`` the learned runs), writes ``OUT/recipe.md`` with the
mean and spread of each figure, and copies the bundle that the recipe's rule
(its ``select:`` key) picks to ``OUT/controller.zip``.

Running the command again continues where it stopped: a finished training
with the same recipe is reused, a cut one resumes from its checkpoint, and
the benchmarks resume their stores.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fitpilot.agents.config import TrainConfig, build_config, read_config_file, run_differences
from fitpilot.agents.train import RunFolder
from fitpilot.agents.train import train as run_training
from fitpilot.commands import check_writable, needs, user_errors
from fitpilot.experiments.benchmark import plan_benchmark, run_benchmark
from fitpilot.experiments.recipe import (
    DEFAULT_RULE,
    LEARNED,
    SELECT_KEY,
    check_rule,
    seed_figures,
    seed_store_from_baselines,
    select,
    write_recipe_report,
)
from fitpilot.experiments.settings import BenchmarkError
from fitpilot.experiments.strategies import strategy_names


def register(app: typer.Typer) -> None:
    app.command("recipe")(recipe)


@user_errors
@needs("train", "benchmark")
def recipe(
    config: Annotated[Path, typer.Argument(help="The recipe: a YAML file of `fitpilot train`.")],
    seeds: Annotated[
        int, typer.Option("--seeds", help="Training seeds: the recipe's seed and the next ones.")
    ] = 3,
    suite: Annotated[
        str, typer.Option("--suite", help="Suite the bundles are benchmarked on.")
    ] = "validation",
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Benchmark these tasks instead (import path module:NAME)."),
    ] = None,
    benchmark_seeds: Annotated[
        int, typer.Option("--benchmark-seeds", help="Seeds per benchmark cell.")
    ] = 3,
    timesteps: Annotated[
        int | None, typer.Option("--timesteps", help="Override the recipe's timesteps.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Default: runs/<recipe name>.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Benchmark worker processes.")] = 2,
    force: Annotated[
        bool, typer.Option("--force", help="Start over, deleting what --out holds.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a recipe with several seeds, benchmark each bundle, report the spread, pick one."""
    if seeds < 1:
        raise BenchmarkError(f"--seeds must be at least 1, not {seeds}")
    if suite == "holdout":
        raise BenchmarkError(
            "recipes are chosen on a suite apart from holdout, which is only reported on; "
            "give --suite validation (the default) or another suite"
        )
    settings = read_config_file(config)
    rule = check_rule(str(settings.pop(SELECT_KEY, DEFAULT_RULE)))
    settings.pop("out", None)
    folder = out or Path("runs") / config.stem
    check_writable(folder, "--out")
    if force and folder.exists():
        shutil.rmtree(folder)

    def echo(message: str) -> None:
        typer.echo(message, err=True)

    first = build_config(None, settings, {"timesteps": timesteps})
    runs = [RunFolder(folder / f"seed-{seed}") for seed in range(first.seed, first.seed + seeds)]
    for seed, run in enumerate(runs, start=first.seed):
        seed_config = build_config(None, settings, {"timesteps": timesteps, "seed": seed})
        _train(seed_config, run, progress, echo)

    common = {
        "suite": None if tasks else suite,
        "tasks": tasks,
        "seeds": benchmark_seeds,
        "jobs": jobs,
        "resume": True,
    }
    baselines = folder / "baselines"
    echo(f"recipe: the strategies other than {LEARNED} on {suite} -> {baselines}")
    others = ",".join(name for name in strategy_names() if name != LEARNED)
    plan = plan_benchmark(strategies=others, **common)
    run_benchmark(*plan, baselines, jobs=jobs, resume=True, echo=echo, progress=progress)
    figures = []
    for seed, run in enumerate(runs, start=first.seed):
        target = run.path / "benchmark"
        plan = plan_benchmark(controller=str(run.bundle), **common)
        copied = seed_store_from_baselines(baselines, target, plan[0])
        echo(f"recipe: seed {seed}'s bundle on {suite} -> {target} ({copied} runs shared)")
        run_benchmark(*plan, target, jobs=jobs, resume=True, echo=echo, progress=progress)
        figures.append(seed_figures(seed, target))
    report = write_recipe_report(folder, str(config), figures, rule, tasks or suite)
    chosen = select(figures, rule)
    shutil.copyfile(folder / f"seed-{chosen.seed}" / "controller.zip", folder / "controller.zip")
    typer.echo(f"recipe: {report}; picked seed {chosen.seed} ({rule}) -> {folder}/controller.zip")


def _train(
    config: TrainConfig, run: RunFolder, progress: bool, echo: Callable[[str], None]
) -> None:
    """Train ``config`` into ``run``: reuse a finished identical run, resume a cut one."""
    stored = run.stored_config()
    differences = run_differences(config, stored) if stored is not None else []
    if differences:
        raise BenchmarkError(
            f"{run.path} holds a training run of another recipe "
            f"({'; '.join(differences)}); give another --out, or --force"
        )
    done = run.read_summary().get("timesteps", 0) >= config.timesteps and run.bundle.is_file()
    if stored is not None and done:
        echo(f"recipe: seed {config.seed} already trained in {run.path}")
        return
    resume = stored is not None and run.latest_checkpoint() is not None
    run_training(
        config, run.path, resume=resume, force=not resume, progress=progress, echo=echo
    )
