"""A learning-rate range test for Keras 3, after fastai's ``lr_find`` and its ``valley`` rule.

    from fitpilot import find_learning_rate

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    result = find_learning_rate(model, x, y, batch_size=32)
    model.optimizer.learning_rate = result.suggestion or 1e-3  # None: no usable curve
    model.fit(x, y, batch_size=32, epochs=20)

The test trains on at most ``max_batches`` batches with a learning rate that
grows exponentially from ``start_lr`` towards ``end_lr`` (batch ``t`` of ``n``
uses ``start_lr * (end_lr / start_lr) ** (t / n)``), follows a bias-corrected
exponential moving average of the batch loss, and stops once that smoothed
loss passes ``divergence`` times its best or is NaN/inf. The suggestion is
fastai's ``valley``: the middle-to-late part of the longest strictly
decreasing stretch of the smoothed loss curve, after dropping the first
tenth of ``max_batches`` and the last five points. Afterwards the model's
variables (weights, non-trainable statistics, dropout seeds), all the
optimizer's variables (moments, ``iterations``...) and its learning rate are
exactly what they were before.

Reference: fastai (https://github.com/fastai/fastai, ``fastai/callback/schedule.py``
at commit 0a049e8: ``LRFinder``, ``valley``, ``Learner.lr_find``;
``fastai/learner.py``: ``AvgSmoothLoss``). Apache License 2.0.

:func:`find_learning_rate` runs the batches itself with ``model.train_on_batch``,
so it works whatever ``steps_per_execution`` the model was compiled with;
:class:`LRFinder` does the same test as a callback inside a user's own ``model.fit``.
The ramp, its exact restore and the valley rule are the controller's
(:mod:`fitpilot.controller.ramp`), which its scale probe shares.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fitpilot.controller.actions import (
    ActionError,
    check_settable_learning_rate,
    set_learning_rate,
)
from fitpilot.controller.ramp import (
    DROP_LAST,
    MIN_BATCHES,
    RateRamp,
    run_ramp,
    suggest,
)
from fitpilot.controller.state import Snapshot
from fitpilot.errors import FitpilotError


class LRFinderError(FitpilotError, ValueError):
    """Settings, a model or data that the learning-rate range test cannot work with."""


@dataclass
class LRFinderResult:
    """What a learning-rate range test found.

    Attributes:
        suggestion: the learning rate picked by fastai's ``valley`` rule, or ``None``
            when the curve left no usable point (loss NaN from the first batch, or a
            divergence within the first tenth of the ramp); ``warning`` says why.
        batches: training batches the probe ran (count them as compute: divide by the
            batches per epoch for a fraction of an epoch).
        learning_rates: the learning rate of each batch run, in order.
        losses: the bias-corrected moving average of the batch loss after each batch.
        raw_losses: the batch losses themselves.
        warning: a one-line note when the suggestion is missing or doubtful, else ``None``.
    """

    suggestion: float | None
    batches: int
    learning_rates: list[float]
    losses: list[float]
    raw_losses: list[float] = field(default_factory=list)
    warning: str | None = None

    def plot(self, path: str | Path) -> Path:
        """Write the smoothed loss against the learning rate (log scale) to ``path`` (PNG...).

        Leaves out the last 5 points, as fastai's ``plot_lr_find`` does: the blow-up
        that ended the test would flatten the rest of the curve.
        """
        from matplotlib.figure import Figure  # here: the range test itself needs no matplotlib

        figure = Figure(figsize=(6, 4))
        ax = figure.subplots()
        shown = len(self.losses) - DROP_LAST if len(self.losses) > DROP_LAST else len(self.losses)
        ax.plot(self.learning_rates[:shown], self.losses[:shown], label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="tab:red", linestyle="--",
                       label=f"valley: {self.suggestion:.3g}")
            ax.legend(loc="best")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        if self.warning:
            ax.set_title(self.warning[:90], fontsize=8)
        path = Path(path)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        return path


def _result(ramp: RateRamp) -> LRFinderResult:
    """The range test's result from its ramp's record (fastai's valley suggestion)."""
    suggestion, warning = suggest(ramp.learning_rates, ramp.losses, ramp.max_batches)
    return LRFinderResult(
        suggestion=suggestion,
        batches=len(ramp.losses),
        learning_rates=ramp.learning_rates,
        losses=ramp.losses,
        raw_losses=ramp.raw_losses,
        warning=warning,
    )


def _check_settings(
    start_lr: float, end_lr: float, max_batches: int, beta: float, divergence: float
) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise LRFinderError(f"`{name}` must be a finite positive number, got {value!r}")
    if start_lr >= end_lr:
        raise LRFinderError(
            f"`start_lr` ({start_lr:g}) must be below `end_lr` ({end_lr:g}): the ramp goes up"
        )
    if not isinstance(max_batches, numbers.Integral) or max_batches < MIN_BATCHES:
        raise LRFinderError(
            f"`max_batches` must be an integer of at least {MIN_BATCHES} (the valley rule "
            f"drops the last {DROP_LAST} points), got {max_batches!r}; 100 is usual"
        )
    if not (isinstance(beta, numbers.Real) and 0 <= beta < 1):
        raise LRFinderError(f"`beta` must be in [0, 1), got {beta!r}; 0.98 is usual")
    if not (isinstance(divergence, numbers.Real) and divergence > 1):
        raise LRFinderError(f"`divergence` must be above 1, got {divergence!r}; 4 is usual")


def _check_model(model: Any) -> None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(model, "compiled", True):
        raise LRFinderError(
            "`model` is not compiled; call model.compile(optimizer=..., loss=...) first"
        )
    try:
        check_settable_learning_rate(optimizer, "`model`")
    except ActionError as exc:
        raise LRFinderError(str(exc)) from None


class LRFinder(keras.callbacks.Callback):
    """The range test as a callback for a user's own ``model.fit`` (fastai's ``LRFinder``).

    Each batch gets its rate from the ramp; the callback stops training when the
    smoothed loss diverges or after ``max_batches`` batches, and at the end of
    ``fit`` restores the model's and the optimizer's variables (learning rate
    included) and sets :attr:`result`. Give ``fit`` enough epochs to reach
    ``max_batches`` and no validation data. Needs ``steps_per_execution=1`` (the
    default): it must see every batch. It resets the model's metrics before each
    batch, so that ``logs["loss"]`` is that batch's loss.

        finder = LRFinder()
        model.fit(x, y, batch_size=32, epochs=5, callbacks=[finder])
        print(finder.result.suggestion)

    Args: as :func:`find_learning_rate`.
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        max_batches: int = 100,
        beta: float = 0.98,
        divergence: float = 4.0,
    ) -> None:
        super().__init__()
        _check_settings(start_lr, end_lr, max_batches, beta, divergence)
        self.settings = (start_lr, end_lr, max_batches, beta, divergence)
        self.result: LRFinderResult | None = None
        self._test: RateRamp | None = None
        self._state: Snapshot | None = None
        self._learning_rate = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _check_model(self.model)
        if getattr(self.model, "steps_per_execution", 1) != 1:
            raise LRFinderError(
                "LRFinder must see every batch: compile the model with steps_per_execution=1, "
                "or use find_learning_rate(model, x, y), which works with any"
            )
        self._state = Snapshot(self.model, learning_rate=True)
        self._test = RateRamp(*self.settings)
        self.result = None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._learning_rate = self._test.learning_rate()
        set_learning_rate(self.model.optimizer, self._learning_rate)
        self.model.reset_metrics()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        if self._test.record(self._learning_rate, loss):
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._state.restore()
        self.model.reset_metrics()
        self.result = _result(self._test)


def find_learning_rate(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    max_batches: int = 100,
    beta: float = 0.98,
    divergence: float = 4.0,
    shuffle: bool = True,
    seed: int | None = None,
    verbose: int = 0,
) -> LRFinderResult:
    """Run a learning-rate range test on a compiled model and suggest a learning rate.

    Args:
        model: a compiled Keras model whose optimizer has a float learning rate
            (not a schedule). Left exactly as it was: variables, optimizer state
            (built first if it was not) and learning rate.
        x: input arrays (an array, or a list/dict of arrays, as ``model.fit``
            takes), or an iterable of batches such as a ``tf.data.Dataset`` or a
            ``keras.utils.PyDataset`` (then ``y`` is ``None``). The data are cycled
            over until ``max_batches`` batches are run or the loss diverges.
        y: target arrays for array ``x``.
        batch_size: rows per batch for array data (a last partial batch is
            dropped, as fastai does, unless the data hold less than one batch).
        start_lr: learning rate of the first batch.
        end_lr: the ramp's end: batch ``t`` runs at
            ``start_lr * (end_lr / start_lr) ** (t / max_batches)``.
        max_batches: length of the ramp in batches (at least 6).
        beta: smoothing of the batch loss (exponential moving average, bias-corrected).
        divergence: stop once the smoothed loss exceeds ``divergence`` times its best.
        shuffle: shuffle array data each pass over it.
        seed: seed of that shuffle; ``None`` draws from numpy's global generator
            (which ``keras.utils.set_random_seed`` seeds).
        verbose: 1 prints a one-line summary.

    Returns:
        An :class:`LRFinderResult`; its ``suggestion`` is ``None`` (and ``warning``
        says why) when the curve leaves nothing to choose from.

    Raises:
        LRFinderError: a bad setting, an uncompiled model, a learning-rate
            schedule, or data that give no batch.
    """
    _check_settings(start_lr, end_lr, max_batches, beta, divergence)
    _check_model(model)
    batches = _batches(x, y, batch_size, shuffle, seed)
    first = next(batches, None)
    if first is None:
        raise LRFinderError("`x` gave no batch: the range test needs training data")
    if not model.built:
        model(first[0])
    test = RateRamp(start_lr, end_lr, max_batches, beta, divergence)
    run_ramp(model, itertools.chain([first], batches), test)
    result = _result(test)
    if verbose:
        print(
            f"lr range test: {result.batches} batches, learning rate {test.start_lr:.3g} to "
            f"{result.learning_rates[-1]:.3g}; suggestion {result.suggestion}"
            + (f" ({result.warning})" if result.warning else "")
        )
    return result


def _batches(
    x: Any, y: Any, batch_size: int, shuffle: bool, seed: int | None
) -> Iterator[tuple[Any, Any, Any]]:
    """``(x, y, sample_weight)`` batches, over and over; raises LRFinderError on bad data."""
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise LRFinderError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    leaves = keras.tree.flatten(x)
    if leaves and all(hasattr(leaf, "shape") for leaf in leaves):
        return _array_batches(x, y, batch_size, shuffle, seed)
    if y is not None:
        raise LRFinderError(
            "`y` must be None when `x` is a dataset or an iterable of batches "
            "(the targets come with the batches)"
        )
    if not hasattr(x, "__iter__") and not hasattr(x, "__getitem__"):
        raise LRFinderError(
            f"`x` must be arrays or an iterable of batches (e.g. a tf.data.Dataset), "
            f"got {type(x).__name__}"
        )
    return _iterable_batches(x)


def _array_batches(
    x: Any, y: Any, batch_size: int, shuffle: bool, seed: int | None
) -> Iterator[tuple[Any, Any, Any]]:
    x = keras.tree.map_structure(np.asarray, x)
    y = None if y is None else keras.tree.map_structure(np.asarray, y)
    rows = {len(leaf) for leaf in keras.tree.flatten(x) + keras.tree.flatten(y)}
    if len(rows) != 1:
        raise LRFinderError(f"`x` and `y` must have the same number of rows, got {sorted(rows)}")
    (n,) = rows
    if n == 0:
        raise LRFinderError("`x` has no rows: the range test needs training data")
    rng = np.random.default_rng(seed) if seed is not None else np.random
    size = min(batch_size, n)
    while True:
        order = rng.permutation(n) if shuffle else np.arange(n)
        for begin in range(0, n - size + 1, size):
            take = operator.itemgetter(order[begin : begin + size])
            yield (
                keras.tree.map_structure(take, x),
                None if y is None else keras.tree.map_structure(take, y),
                None,
            )


def _iterable_batches(data: Any) -> Iterator[tuple[Any, Any, Any]]:
    while True:
        empty = True
        for batch in data:
            empty = False
            yield keras.utils.unpack_x_y_sample_weight(batch)
        if empty:
            return
