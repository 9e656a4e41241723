"""Strategy name -> the Keras callbacks (and compiled-model kind) it trains with.

The heuristics are Keras' own callbacks with the arguments of BENCHMARK.md;
the only callback written here is :class:`RestoreBestWeights`, the best-weight
restore that ``constant``, ``reduce_lr``, ``cosine``, ``prodigy`` and the
oracle runs add. ``lr_finder`` trains with ``es_reduce_lr`` 's callbacks from
the rate its range test suggests (the runner runs the test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from fitpilot.envs.reference_run import reduce_lr_on_plateau
from fitpilot.experiments.settings import ORACLE, STRATEGIES, BenchmarkError

#: The compiled model a strategy trains (default ``"constant"``: the task's optimizer at a
#: variable rate): ``"cosine"``, the task's optimizer under a ``CosineDecay`` over the
#: budget; ``"prodigy"``, Prodigy under a ``CosineDecay`` from 1 over the budget.
MODEL_KINDS = {"cosine": "cosine", "prodigy": "prodigy"}


class RestoreBestWeights(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest finite ``monitor``; restore them at train end.

    The restore of ``EarlyStopping(restore_best_weights=True)`` without the
    stopping. If no epoch has a finite ``monitor`` value, the final weights stay.

    Attributes:
        best: the best (lowest) monitored value, ``inf`` before the first epoch.
        best_epoch: 0-based epoch of ``best``, -1 before the first finite value.
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        super().__init__()
        self.monitor = monitor
        self.best = np.inf
        self.best_epoch = -1
        self.best_weights: list[np.ndarray] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best, self.best_epoch, self.best_weights = np.inf, -1, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def strategy_callbacks(
    name: str, learned: Callable[[], keras.callbacks.Callback] | None = None
) -> list[keras.callbacks.Callback]:
    """Fresh callbacks for one run of strategy ``name`` (or of the oracle).

    ``learned`` makes the ``LearnedController`` for the ``learned`` strategy.
    ``cosine`` and ``prodigy`` also need their model of :data:`MODEL_KINDS`.
    """
    if name in ("constant", "cosine", "prodigy", ORACLE):
        return [RestoreBestWeights("val_loss")]
    if name == "early_stopping":
        return [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=5, min_delta=0.001, restore_best_weights=True
            )
        ]
    if name == "reduce_lr":
        return [reduce_lr_on_plateau(), RestoreBestWeights("val_loss")]
    if name in ("es_reduce_lr", "lr_finder"):
        return [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=10, restore_best_weights=True
            ),
            reduce_lr_on_plateau(),
        ]
    if name == "learned":
        if learned is None:
            raise BenchmarkError("the learned strategy needs a controller; give `controller`")
        return [learned()]
    raise BenchmarkError(f"unknown strategy {name!r}; valid strategies are {', '.join(STRATEGIES)}")


def cosine_schedule(
    initial_learning_rate: float | keras.Variable, decay_steps: int
) -> keras.optimizers.schedules.CosineDecay:
    """Keras' ``CosineDecay`` from ``initial_learning_rate`` to 0 over ``decay_steps`` batches.

    ``initial_learning_rate`` may be a non-trainable ``keras.Variable``: the
    schedule reads it inside the compiled train step, so one compiled model
    serves every starting learning rate (assign the variable between runs).
    """
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate, decay_steps=decay_steps)
