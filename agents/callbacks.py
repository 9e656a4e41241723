"""stable-baselines3 callbacks of a training run: episode figures, holdout evaluation, timing.

All of them log through the model's logger, so their figures land in the
same TensorBoard run as SB3's own (``rollout/``, ``train/``, ``time/``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from fitpilot.agents.batched_vecenv import PAUSED
from fitpilot.agents.evaluate import Evaluator, summarize
from fitpilot.controller.bundle import Bundle


class EpisodeStatsCallback(BaseCallback):
    """At each episode end, records means per logging interval under ``episode/``.

    Figures: ``return`` and ``length`` (epochs, raw rewards from ``VecMonitor``),
    ``budget_share`` (epochs / budget), ``log_test_loss`` and ``test_<metric>``
    (the env's test evaluation of the best weights), ``diverged`` and ``stopped``
    (share of episodes that ended by divergence or by the stop action). A paused
    batched episode (``info[PAUSED]``) is not over: it goes on later, and counts then.
    """

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if not done or info.get(PAUSED):
                continue
            record = self.logger.record_mean
            if "episode" in info:
                record("episode/return", float(info["episode"]["r"]))
                record("episode/length", float(info["episode"]["l"]))
            if "budget" in info:
                record("episode/budget_share", info["epoch"] / info["budget"])
                record("episode/stopped", float(info.get("action") == "stop"))
                record("episode/diverged", float(bool(info.get("diverged"))))
            test = info.get("test") or {}
            loss = test.get("loss", math.nan)
            if math.isfinite(loss) and loss > 0:
                record("episode/log_test_loss", math.log(loss))
            metrics = [key for key in test if key != "loss"]
            if metrics and math.isfinite(test[metrics[0]]):
                record(f"episode/test_{metrics[0]}", float(test[metrics[0]]))
        return True


class HoldoutEvalCallback(BaseCallback):
    """Every ``every`` env steps, evaluates the exported bundle on the holdout tasks.

    ``export`` turns the current model into a :class:`Bundle` (the numpy policy
    that ships), so the evaluation measures what users get. Results are logged
    under ``eval/`` and kept in :attr:`history`; :attr:`seconds` is the time spent.
    """

    def __init__(self, evaluator: Evaluator, export: Callable[[], Bundle], every: int) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.export = export
        self.every = every
        self.history: list[dict[str, Any]] = []
        self.last_rows: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = self.num_timesteps + self.every

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps >= self._next:
            self.evaluate()
            self._next = self.num_timesteps + self.every
        return True

    def evaluate(self) -> dict[str, Any]:
        """Run one evaluation now; log and return its summary."""
        start = time.perf_counter()
        self.last_rows = self.evaluator.episodes(self.export())
        figures = summarize(self.last_rows)
        self.seconds += time.perf_counter() - start
        for key, value in figures.items():
            if key != "episodes":
                self.logger.record(f"eval/{key}", value)
        entry = {"timesteps": int(self.model.num_timesteps), **figures}
        self.history.append(entry)
        return entry


class RolloutTimerCallback(BaseCallback):
    """Splits wall time into collecting rollouts (env steps) and learning (gradient updates).

    ``rollout_seconds`` includes whatever other callbacks do during the rollout
    (e.g. an evaluation); subtract it to get the time in environment steps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rollout_seconds = 0.0
        self.learn_seconds = 0.0
        self._rollout_start: float | None = None
        self._rollout_end: float | None = None

    def _on_rollout_start(self) -> None:
        now = time.perf_counter()
        if self._rollout_end is not None:
            self.learn_seconds += now - self._rollout_end
        self._rollout_start = now

    def _on_rollout_end(self) -> None:
        now = time.perf_counter()
        if self._rollout_start is not None:
            self.rollout_seconds += now - self._rollout_start
        self._rollout_end = now

    def _on_training_end(self) -> None:
        if self._rollout_end is not None:  # the update after the last rollout
            self.learn_seconds += time.perf_counter() - self._rollout_end
            self._rollout_end = None

    def _on_step(self) -> bool:
        return True


class PruningCheckpointCallback(CheckpointCallback):
    """SB3's checkpoints (model + VecNormalize, + replay buffer), keeping one replay buffer.

    A replay buffer is large and only the latest is needed to resume, so older
    ones are deleted after each save.
    """

    def _on_step(self) -> bool:
        result = super()._on_step()
        if self.save_replay_buffer and self.n_calls % self.save_freq == 0:
            prune_replay_buffers(Path(self._checkpoint_path("replay_buffer_", extension="pkl")))
        return result


def prune_replay_buffers(latest: Path) -> None:
    """Delete the replay buffers saved beside ``latest`` (``<prefix>_replay_buffer_*.pkl``)."""
    prefix = latest.name.split("_replay_buffer_")[0]
    for path in latest.parent.glob(f"{prefix}_replay_buffer_*.pkl"):
        if path != latest:
            path.unlink(missing_ok=True)
