"""Train a controller agent with stable-baselines3 and export it as a bundle.

A run lives in one folder::

    config.yaml          the recipe used (TrainConfig.to_dict)
    controller.zip       the exported bundle (what LearnedController loads)
    model.zip            the SB3 model, for further training
    vecnormalize.pkl     its VecNormalize statistics
    checkpoints/         rl_model_<steps>_steps.zip + rl_model_vecnormalize_<steps>_steps.pkl
                         (+ the latest replay buffer for DQN)
    tb/run_1/            TensorBoard: SB3's figures, episode/ and eval/
    summary.json         timesteps, wall time, env steps per second, evaluations

``resume=True`` continues from the latest checkpoint with the same step count.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fitpilot.agents.config import (
    TrainConfig,
    TrainError,
    algorithm_class,
    algorithm_kwargs,
    check_hyperparameters,
    load_yaml,
    run_differences,
)
from fitpilot.agents.evaluate import Evaluator
from fitpilot.agents.export import export_bundle
from fitpilot.agents.vecenv import make_workers, wrap
from fitpilot.controller.bundle import save_bundle
from fitpilot.envs import DEFAULT_REWARD
from fitpilot.envs.loading import check_spec, load_tasks
from fitpilot.errors import first_line
from fitpilot.jsonable import jsonable
from fitpilot.runtime import configure

if TYPE_CHECKING:
    from fitpilot.ray_backend import RayOptions

CHECKPOINT_PREFIX = "rl_model"
_CHECKPOINT = re.compile(rf"{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")


@dataclass(frozen=True)
class Checkpoint:
    """A saved model with its normalisation statistics (and replay buffer, if saved)."""

    steps: int
    model: Path
    normalization: Path
    replay_buffer: Path | None


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.bundle = self.path / "controller.zip"
        self.model = self.path / "model.zip"
        self.normalization = self.path / "vecnormalize.pkl"
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tb"
        self.summary = self.path / "summary.json"

    def stored_config(self) -> dict[str, Any] | None:
        """The recipe of the run in this folder, or None if it holds none."""
        if not self.config.is_file():
            return None
        try:
            data = load_yaml(self.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TrainError(
                f"cannot read {self.config} ({exc}); fix it or pass `force=True`"
            ) from exc
        if not isinstance(data, dict):
            raise TrainError(
                f"{self.config} is not a training config; fix it or pass `force=True`"
            )
        return data

    def write_config(self, config: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the most steps whose model and statistics were both written."""
        found = []
        for model in self.checkpoints.glob(f"{CHECKPOINT_PREFIX}_*_steps.zip"):
            match = _CHECKPOINT.search(model.name)
            if match:
                steps = int(match.group(1))
                normalization = self.checkpoint_file("vecnormalize_", steps, "pkl")
                if normalization.is_file():
                    found.append((steps, model, normalization))
        if not found:
            return None
        steps, model, normalization = max(found)
        buffer = self.checkpoint_file("replay_buffer_", steps, "pkl")
        return Checkpoint(steps, model, normalization, buffer if buffer.is_file() else None)

    def checkpoint_file(self, kind: str, steps: int, extension: str) -> Path:
        """The path SB3's CheckpointCallback uses for ``kind`` ("", "vecnormalize_", ...)."""
        return self.checkpoints / f"{CHECKPOINT_PREFIX}_{kind}{steps}_steps.{extension}"

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return {}

    def clear(self) -> None:
        """Delete what a run writes here (only those files and folders)."""
        for path in (self.checkpoints, self.tensorboard):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.config, self.bundle, self.model, self.normalization, self.summary):
            path.unlink(missing_ok=True)


def check_folder(folder: RunFolder, config: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run, or to resume one with a different recipe."""
    stored = folder.stored_config()
    if force and resume:
        raise TrainError("pass `resume=True` or `force=True`, not both")
    if resume:
        if stored is None:
            raise TrainError(f"nothing to resume: {folder.path} holds no training run")
        differences = run_differences(config, stored)
        if differences:
            raise TrainError(
                f"cannot resume {folder.path}: its run was made with other settings "
                f"({'; '.join(differences)}); drop those settings, or pass `force=True` to "
                f"start over"
            )
        if folder.latest_checkpoint() is None:
            raise TrainError(
                f"nothing to resume: {folder.checkpoints} holds no complete checkpoint"
            )
    elif stored is not None and not force:
        differences = run_differences(config, stored)
        what = f"a different run ({'; '.join(differences)})" if differences else "this run already"
        raise TrainError(
            f"{folder.path} holds {what}; use `resume=True` to continue it, `force=True` to start "
            f"over, or another `out`"
        )


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = lambda message: None,
    ray: RayOptions | None = None,
    workers: Callable[[TrainConfig], Any] | None = None,
) -> dict[str, Any]:
    """Train (or continue training) an agent in ``out``; return the summary written there.

    The environments are :func:`fitpilot.agents.vecenv.make_workers`' (``ray``: the Ray
    options, with ``config.backend`` ray); ``workers`` replaces that factory (tests).
    The tasks, those from an import path checked first (each model built and run on two
    rows of its data), load before anything is written.
    """
    config.check()
    folder = RunFolder(out)
    check_folder(folder, config, resume, force)
    specs = [config.task_spec, *([config.eval_tasks] if config.eval_every else [])]
    for spec in specs:
        check_spec(spec)  # a typo in an import path is reported before TensorFlow loads
    configure(1)  # before the task check and SB3 load TensorFlow; children size their own
    tasks = load_tasks(config.task_spec, check=True)
    if config.eval_every:
        load_tasks(config.eval_tasks, check=True)
    import torch  # with SB3, only in the learner: the command line starts without them

    torch.set_num_threads(1)
    check_hyperparameters(config)
    checkpoint = folder.latest_checkpoint() if resume else None
    if force:
        folder.clear()
    session = _Session(config, folder, checkpoint,
                       workers or functools.partial(make_workers, ray=ray))
    try:
        session.start()
        folder.write_config(config)  # only now: a recipe that cannot start leaves no run behind
        echo(
            f"{'resuming' if checkpoint else 'training'} {config.algo.upper()} on "
            f"{config.task_spec} ({len(tasks)} tasks) from step {session.model.num_timesteps} "
            f"to {config.timesteps}, {config.n_envs} env(s) -> {folder.path}"
        )
        return session.run(progress, echo)
    finally:
        session.close()


class _Session:
    """One call of :func:`train`: the environments, the model, the callbacks."""

    def __init__(
        self,
        config: TrainConfig,
        folder: RunFolder,
        checkpoint: Checkpoint | None,
        workers: Callable[[TrainConfig], Any],
    ):
        self.config, self.folder, self.checkpoint = config, folder, checkpoint
        self.workers = workers
        self.evaluator = Evaluator(config)
        self.venv: Any = None
        self.model: Any = None

    def start(self) -> None:
        """Start the environments and build (or load) the model."""
        self.venv = self._wrapped(self.workers(self.config))
        self.model = self._model()
        if self.model.num_timesteps >= self.config.timesteps:
            raise TrainError(
                f"{self.folder.path} already has {self.model.num_timesteps} steps (>= `timesteps` "
                f"{self.config.timesteps}); raise `timesteps` to train further"
            )

    def _wrapped(self, workers: Any) -> Any:
        try:
            return wrap(
                workers, self.config, self.checkpoint.normalization if self.checkpoint else None
            )
        except BaseException:
            workers.close()
            raise

    def _model(self) -> Any:
        tensorboard = str(self.folder.tensorboard)
        if self.checkpoint is None:
            return new_model(self.config, self.venv, tensorboard)
        algorithm = algorithm_class(self.config.algo)
        common = dict(tensorboard_log=tensorboard, device="cpu", verbose=0)
        path = self.checkpoint.model
        try:
            model = algorithm.load(str(path), env=self.venv, **common)
            if self.checkpoint.replay_buffer is not None:
                model.load_replay_buffer(str(self.checkpoint.replay_buffer))
        except Exception as exc:  # zip, pickle and torch errors all mean "unreadable"
            raise TrainError(
                f"cannot read checkpoint {path} ({type(exc).__name__}: {first_line(exc)}); "
                f"delete it to resume from an earlier one"
            ) from exc
        model.set_random_seed(self.config.seed + model.num_timesteps)
        return model

    def run(self, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
        from fitpilot.agents.callbacks import (  # imports SB3 (and TensorFlow): after configure
            EpisodeStatsCallback,
            HoldoutEvalCallback,
            PruningCheckpointCallback,
            RolloutTimerCallback,
        )

        config, model = self.config, self.model
        start_steps = model.num_timesteps
        remaining = config.timesteps - start_steps
        timer = RolloutTimerCallback()
        evaluation = HoldoutEvalCallback(self.evaluator, self.export, config.eval_every)
        callbacks = [
            PruningCheckpointCallback(
                max(config.checkpoint_every // config.n_envs, 1),
                str(self.folder.checkpoints),
                CHECKPOINT_PREFIX,
                save_replay_buffer=config.algo == "dqn",
                save_vecnormalize=True,
            ),
            EpisodeStatsCallback(),
            evaluation,
            timer,
        ]
        started = time.perf_counter()
        model.learn(
            remaining,
            callback=callbacks,
            progress_bar=progress,
            tb_log_name="run",
            reset_num_timesteps=self.checkpoint is None,
        )
        wall = time.perf_counter() - started
        steps = model.num_timesteps - start_steps
        timing = {
            "session_timesteps": int(steps),
            "wall_seconds": round(wall, 2),
            "env_steps_per_second": round(steps / wall, 1) if wall > 0 else math.nan,
            "rollout_seconds": round(timer.rollout_seconds - evaluation.seconds, 2),
            "learn_seconds": round(timer.learn_seconds, 2),
        }
        self.save()
        digest = save_bundle(self.export(), self.folder.bundle)
        if config.eval_every and (
            not evaluation.history or evaluation.history[-1]["timesteps"] != model.num_timesteps
        ):
            evaluation.evaluate()
            model.logger.dump(model.num_timesteps)
        previous = self.folder.read_summary().get("evaluations", []) if self.checkpoint else []
        evaluations = [e for e in previous if e["timesteps"] <= start_steps] + evaluation.history
        summary = {
            "algo": config.algo,
            "timesteps": int(model.num_timesteps),
            **timing,
            "eval_seconds": round(evaluation.seconds, 2),
            "n_envs": config.n_envs,
            "bundle": self.folder.bundle.name,
            "bundle_hash": digest,
            "last_evaluation": evaluations[-1] if evaluations else None,
            "last_evaluation_episodes": evaluation.last_rows,
            "evaluations": evaluations,
        }
        self.folder.summary.write_text(json.dumps(jsonable(summary), indent=2))
        echo(
            f"{steps} steps in {wall:.1f} s ({summary['env_steps_per_second']} env steps/s); "
            f"bundle {self.folder.bundle} ({digest})"
        )
        return summary

    def export(self) -> Any:
        model, config = self.model, self.config
        metadata = {
            "algo": config.algo,
            "timesteps": int(model.num_timesteps),
            "tasks": config.task_spec,
            "seed": config.seed,
            "epoch_cost": config.env.epoch_cost,
            "lr_factor_range": list(config.env.lr_factor_range),
        }
        if config.env.reward != DEFAULT_REWARD:  # absolute-reward bundles keep their manifest
            metadata["reward"] = config.env.reward
        for name in ("restarts", "reversal_cost"):  # said only when set: v2 manifests unchanged
            if getattr(config.env, name):
                metadata[name] = getattr(config.env, name)
        return export_bundle(model, config.env, metadata)

    def save(self) -> None:
        """The final model and statistics, in the run folder and as the latest checkpoint."""
        from fitpilot.agents.callbacks import prune_replay_buffers  # SB3: after configure

        model, folder = self.model, self.folder
        steps = model.num_timesteps
        normalization = model.get_vec_normalize_env()
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        for model_path, stats_path in (
            (folder.model, folder.normalization),
            (
                folder.checkpoint_file("", steps, "zip"),
                folder.checkpoint_file("vecnormalize_", steps, "pkl"),
            ),
        ):
            normalization.save(str(stats_path))
            model.save(str(model_path))
        if self.config.algo == "dqn":
            buffer = folder.checkpoint_file("replay_buffer_", steps, "pkl")
            model.save_replay_buffer(str(buffer))
            prune_replay_buffers(buffer)

    def close(self) -> None:
        self.evaluator.close()
        if self.venv is not None:
            # The workers may be gone already (a Ctrl-C reaches them too).
            with contextlib.suppress(EOFError, OSError):
                self.venv.close()


def new_model(config: TrainConfig, venv: Any, tensorboard_log: str | None = None) -> Any:
    """A fresh SB3 model of ``config`` on ``venv``, with the stop bias applied (CPU, quiet)."""
    import torch  # with SB3, only in the learner: the command line starts without them

    try:
        model = algorithm_class(config.algo)(
            "MlpPolicy",
            venv,
            seed=config.seed,
            tensorboard_log=tensorboard_log,
            device="cpu",
            verbose=0,
            **algorithm_kwargs(config),
        )
    except (TypeError, ValueError, AssertionError) as exc:
        raise TrainError(f"bad {config.algo.upper()} hyperparameters: {first_line(exc)}") from exc
    if config.stop_bias:
        with torch.no_grad():  # stop is the last unit: a logit, or a Gaussian mean
            model.policy.action_net.bias[-1] += config.stop_bias
    return model



