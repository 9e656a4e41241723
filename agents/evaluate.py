"""Evaluate a controller bundle on held-out tasks, through the numpy policy that ships.

One episode per (task, starting-lr factor), all with the same seed, so two
evaluations differ only by the policy. Per episode: the best validation loss,
the epochs used as a share of the budget, the test loss (and first metric) of
the best weights, the undiscounted return; :func:`summarize` averages them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fitpilot.agents.config import TrainConfig
from fitpilot.controller.bundle import Bundle

if TYPE_CHECKING:
    from fitpilot.envs.env import KerasTrainingEnv

EVAL_SEED = 0


class Evaluator:
    """Runs bundles on ``config.eval_tasks`` at lr factors ``config.eval_factors``.

    The environment (and its compiled Keras models) is built on first use and
    reused; call :meth:`close` at the end.
    """

    def __init__(self, config: TrainConfig, seed: int = EVAL_SEED) -> None:
        self.config = config
        self.seed = seed
        self._env: KerasTrainingEnv | None = None

    @property
    def env(self) -> KerasTrainingEnv:
        if self._env is None:
            from fitpilot.envs.env import KerasTrainingEnv  # imports TensorFlow: after configure

            self._env = KerasTrainingEnv(
                tasks=self.config.eval_tasks, **self.config.env.env_kwargs()
            )
        return self._env

    def episodes(self, bundle: Bundle) -> list[dict[str, Any]]:
        """One row per (task, factor): task, factor, log_best_val, epochs_share, test_loss, ..."""
        rows = []
        for task in self.env.tasks:
            for factor in self.config.eval_factors:
                rows.append(self.episode(bundle, task.name, factor))
        return rows

    def episode(self, bundle: Bundle, task: str, factor: float) -> dict[str, Any]:
        """Run the bundle's deterministic policy for one episode of ``task``."""
        env = self.env
        pipeline = bundle.make_pipeline()
        obs, info = env.reset(seed=self.seed, options={"task": task, "lr_factor": factor})
        total, done = 0.0, bool(info.get("diverged_at_reset"))
        while not done:
            action = bundle.policy.act(pipeline(obs)[None])[0]
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
        test = info.get("test", {})
        metrics = [k for k in test if k != "loss"]
        best = info["best"]
        return {
            "task": task,
            "lr_factor": factor,
            "log_best_val": math.log(best) if 0 < best < math.inf else math.nan,
            "epochs_share": info["epoch"] / info["budget"],
            "test_loss": float(test.get("loss", math.nan)),
            "test_metric": metrics[0] if metrics else None,
            "test_metric_value": float(test[metrics[0]]) if metrics else math.nan,
            "return": total,
            "diverged": bool(info.get("diverged")),
        }

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means over episodes (NaNs skipped): log best val loss, budget share, test loss, return."""

    def mean(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    test = [row["test_loss"] for row in rows]
    return {
        "log_best_val": mean([row["log_best_val"] for row in rows]),
        "epochs_share": mean([row["epochs_share"] for row in rows]),
        "test_loss": mean(test),
        "log_test_loss": mean([math.log(v) if v > 0 else math.nan for v in test]),
        "return": mean([row["return"] for row in rows]),
        "diverged": mean([float(row["diverged"]) for row in rows]),
        "episodes": float(len(rows)),
    }
