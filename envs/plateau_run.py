"""The plateau run, the bar of the relative reward: Keras' ``ReduceLROnPlateau`` on the same
cell. (Not the benchmark's reference *rate*, the tuned rate: ``experiments/reference_rate.py``.)

With ``reward="relative"`` the environment pays the policy for beating what the
heuristic a careful user would add does on the same task, seed and starting rate (a
*cell*). :func:`reference_curve` trains that run once, to the full budget, on the
environment's own runner, and returns its best-so-far validation loss per epoch;
:class:`ReferenceCurves` keeps the curves of recent cells, so that repeated cells
(fixed reset options, evaluation) cost nothing after their first time.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from types import SimpleNamespace

import keras
import numpy as np

from fitpilot.controller.actions import is_divergent
from fitpilot.envs.runner import EpochRunner

#: Cells whose reference curves :class:`ReferenceCurves` keeps by default.
DEFAULT_CACHE_SIZE = 4096


def reduce_lr_on_plateau(monitor: str = "val_loss") -> keras.callbacks.ReduceLROnPlateau:
    """The ``ReduceLROnPlateau`` of docs/benchmark.md (the benchmark's ``reduce_lr``)."""
    return keras.callbacks.ReduceLROnPlateau(
        monitor=monitor, factor=0.5, patience=3, min_lr=1e-5, cooldown=2
    )


def reference_curve(
    runner: EpochRunner, seed: int, learning_rate: float, epochs: int, monitor: str = "val_loss"
) -> np.ndarray:
    """Best-so-far ``monitor`` value after each epoch of the reference run of a cell.

    Resets ``runner`` with ``seed`` and ``learning_rate`` and trains ``epochs`` epochs,
    the rate set after each epoch by Keras' own :func:`reduce_lr_on_plateau` callback
    (driven with the runner's rate in place of an optimizer). If the run diverges
    (NaN or inf ``loss`` or ``monitor``), the best value so far stands for the rest of
    the budget. Leaves the runner mid-run: reset it before using it again.

    Returns:
        float64 array of shape ``(epochs,)``: entry ``t - 1`` is the lowest finite
        ``monitor`` value of epochs 1..t (``inf`` while there is none).
    """
    runner.reset(seed=seed, learning_rate=learning_rate)
    callback = reduce_lr_on_plateau(monitor)
    optimizer = SimpleNamespace(learning_rate=float(learning_rate))
    callback.set_model(SimpleNamespace(optimizer=optimizer))
    callback.on_train_begin()
    best, curve = math.inf, np.full(epochs, math.inf)
    for epoch in range(epochs):
        logs = runner.run_epoch()
        if is_divergent(logs, ("loss", monitor)):
            curve[epoch:] = best
            break
        best = min(best, float(logs[monitor]))
        curve[epoch] = best
        rate = optimizer.learning_rate
        callback.on_epoch_end(epoch, dict(logs))
        if optimizer.learning_rate != rate:
            runner.learning_rate = float(optimizer.learning_rate)
    return curve


class ReferenceCurves:
    """:func:`reference_curve` per cell, the ``max_cells`` most recently used kept.

    A cell is (task name, seed, starting learning rate, budget, monitor).
    """

    def __init__(self, max_cells: int = DEFAULT_CACHE_SIZE) -> None:
        self.max_cells = max_cells
        self._curves: OrderedDict[tuple[str, int, float, int, str], np.ndarray] = OrderedDict()
        self.computed = 0  # reference runs trained (cache misses)

    def get(
        self,
        task_name: str,
        runner: EpochRunner,
        seed: int,
        learning_rate: float,
        epochs: int,
        monitor: str = "val_loss",
    ) -> np.ndarray:
        """The cell's curve, trained on ``runner`` the first time (which then needs a reset)."""
        key = (task_name, int(seed), float(learning_rate), int(epochs), monitor)
        if key in self._curves:
            self._curves.move_to_end(key)
            return self._curves[key]
        curve = reference_curve(runner, seed, learning_rate, epochs, monitor)
        curve.setflags(write=False)
        self._curves[key] = curve
        self.computed += 1
        if len(self._curves) > self.max_cells:
            self._curves.popitem(last=False)
        return curve
