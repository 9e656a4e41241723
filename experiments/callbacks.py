"""The Keras pieces the benchmark's strategies add around a fit: best-weight restore and the
cosine schedule. Everything else a strategy trains with is Keras' own (``EarlyStopping``,
``ReduceLROnPlateau``) or a public tool of :mod:`fitpilot.baselines` / the controller.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


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


def cosine_schedule(
    initial_learning_rate: float | keras.Variable, decay_steps: int
) -> keras.optimizers.schedules.CosineDecay:
    """Keras' ``CosineDecay`` from ``initial_learning_rate`` to 0 over ``decay_steps`` batches.

    ``initial_learning_rate`` may be a non-trainable ``keras.Variable``: the
    schedule reads it inside the compiled train step, so one compiled model
    serves every starting learning rate (assign the variable between runs).
    """
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate, decay_steps=decay_steps)
