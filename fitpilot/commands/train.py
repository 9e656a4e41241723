"""``fitpilot train``: train a controller agent with stable-baselines3 and export its bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fitpilot.agents.config import build_config, parse_overrides, read_config_file
from fitpilot.agents.train import RunFolder
from fitpilot.agents.train import train as run_training
from fitpilot.commands import check_writable, needs, user_errors
from fitpilot.commands.ray_options import Backend, RayAddress, WorkerCpus, WorkerMemory
from fitpilot.commands.tasks import SUITE_HELP, TASKS_HELP
from fitpilot.experiments.recipe import SELECT_KEY
from fitpilot.ray_backend import ray_options, session


def register(app: typer.Typer) -> None:
    app.command("train")(train)


@user_errors
@needs("train")
def train(
    algo: Annotated[str | None, typer.Option(help="ppo (default), a2c or dqn.")] = None,
    suite: Annotated[str | None, typer.Option(help=SUITE_HELP + " Default: train.")] = None,
    tasks: Annotated[str | None, typer.Option(help=TASKS_HELP)] = None,
    timesteps: Annotated[
        int | None, typer.Option(help="Total env steps (epochs) to train for. Default: 100000.")
    ] = None,
    n_envs: Annotated[
        int | None,
        typer.Option("--n-envs", help="Parallel environments, one process each (1: in-process)."),
    ] = None,
    vec: Annotated[
        str | None,
        typer.Option(
            help="How environments run: subproc (default: a process each), dummy (all in this "
            "process) or batched (--n-envs copies of one task trained in one compiled call; "
            "tasks take turns)."
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            help="With --vec batched: worker processes to split the copies into (default 1: "
            "all in this process; 0: one per CPU core). Each holds ~2.5 GB on the train suite."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the run.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder. Default: runs/<algo>.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over in --out, deleting the run there.")
    ] = False,
    hp: Annotated[
        list[str] | None,
        typer.Option(
            "--hp", help="Hyperparameter key=value (YAML value; nested: a.b=v). Repeatable."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", help="Environment setting key=value, e.g. epoch_cost=0.02. Repeatable."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML recipe with the same keys as these options, plus hp: and env:."),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(help="Evaluate on the holdout suite every N steps (0: never). Default 5000."),
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Save a checkpoint every N steps. Default 10000.")
    ] = None,
    stop_bias: Annotated[
        float | None,
        typer.Option(help="Added to the stop action's initial logit (PPO/A2C), e.g. -3."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    backend: Backend = "local",
    ray_address: RayAddress = None,
    worker_cpus: WorkerCpus = None,
    worker_memory: WorkerMemory = None,
) -> None:
    """Train a controller agent; write controller.zip, the SB3 model, checkpoints, TensorBoard
    logs, config.yaml and summary.json into --out.

    Nothing is written before the folder, the recipe and the tasks are checked:
    tasks from an import path are checked as ``fitpilot tasks`` checks them.
    """
    ray = ray_options(backend, ray_address, worker_cpus, worker_memory)
    recipe = read_config_file(config) if config else {}
    folder = out or recipe.pop("out", None) or Path("runs") / str(algo or recipe.get("algo", "ppo"))
    recipe.pop("out", None)
    recipe.pop(SELECT_KEY, None)  # `fitpilot recipe`'s rule for picking a seed: not a setting
    check_writable(Path(folder), "--out")
    stored = RunFolder(folder).stored_config() if resume else None
    options = {
        "algo": algo,
        "suite": suite,
        "tasks": tasks,
        "timesteps": timesteps,
        "n_envs": n_envs,
        "vec": vec,
        "processes": processes,
        "seed": seed,
        "eval_every": eval_every,
        "checkpoint_every": checkpoint_every,
        "stop_bias": stop_bias,
        "backend": backend,  # where the environments run: not part of what a run learns
    }
    recipe_config = build_config(
        stored,
        recipe,
        options,
        hp=parse_overrides(hp or [], "--hp"),
        env=parse_overrides(env or [], "--env"),
    )
    recipe_config.check()  # before a Ray instance starts for it
    with session(ray):
        run_training(
            recipe_config,
            folder,
            resume=resume,
            force=force,
            progress=progress,
            echo=lambda message: typer.echo(message, err=True),
            ray=ray,
        )
