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
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
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
from fitpilot.errors import FitpilotError

#: fastai's minimum number of ramp batches (LRFinder raises smaller ``num_it`` to 6):
#: the valley rule drops the last 5 points.
MIN_BATCHES = 6
#: Points dropped from the end of the curve before the valley rule (fastai's ``[:-5]``).
DROP_LAST = 5


class LRFinderError(FitpilotError):
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


def valley_index(losses: Sequence[float]) -> int:
    """fastai's ``valley`` rule: the index into ``losses`` of the suggested point.

    Finds the longest strictly decreasing subsequence of ``losses`` (the first
    one to reach the greatest length), takes its extent from ``end - length``
    (fastai's ``max_start``, which may be one before the first point) to
    ``end``, and returns ``start + int(extent / 3) + int(extent / 6)``, about 45%
    of the way. When no point is lower than an earlier one, fastai's start and
    end stay at 0, and so does the index. Faithful to fastai down to a quirk: the
    result is a Python index, ``-1`` (the last point) when the curve falls only
    over its first two points. ``losses`` must not be empty.
    """
    n = len(losses)
    if n == 0:
        raise LRFinderError("the valley rule needs at least one loss value")
    lengths = [1] * n  # longest strictly decreasing subsequence ending at i
    for i in range(1, n):
        lengths[i] = 1 + max((lengths[j] for j in range(i) if losses[i] < losses[j]), default=0)
    end = lengths.index(max(lengths))
    # fastai moves (start, end) off (0, 0) only when a longer subsequence shows up.
    start = end - lengths[end] if end else 0
    sections = (end - start) / 3
    return start + int(sections) + int(sections / 2)


def suggest(
    learning_rates: Sequence[float], losses: Sequence[float], max_batches: int
) -> tuple[float | None, str | None]:
    """The valley suggestion on a recorded curve, as fastai's ``lr_find`` computes it.

    Drops the first ``max_batches // 10`` points and the last 5, cuts the rest at
    its first non-finite loss, and applies :func:`valley_index`. Returns
    ``(suggestion, warning)``; the suggestion is ``None`` when nothing is left.
    """
    lrs = list(learning_rates)[max_batches // 10 : -DROP_LAST]
    curve = list(losses)[max_batches // 10 : -DROP_LAST]
    bad = [i for i, loss in enumerate(curve) if not math.isfinite(loss)]
    if bad:
        lrs, curve = lrs[: bad[0]], curve[: bad[0]]
    if not losses:
        return None, "no batch was run; no suggestion"
    if not math.isfinite(losses[0]):
        return None, (
            f"the loss was not finite from the first batch (learning rate {learning_rates[0]:.3g}):"
            " the model or the data give NaN/inf whatever the rate; no suggestion"
        )
    if not curve:
        return None, (
            f"the smoothed loss diverged after {len(losses)} batches, at learning rate "
            f"{learning_rates[-1]:.3g}, too early for the valley rule (it skips the first "
            f"{max_batches // 10} and the last {DROP_LAST} points); lower `start_lr`"
        )
    index = valley_index(curve)
    warning = None
    if all(curve[i] >= curve[i - 1] for i in range(1, len(curve))):
        warning = (
            "the smoothed loss never decreased during the ramp, so the valley rule fell back "
            "to the smallest rate it kept; raise `end_lr` or check the model and data"
        )
    return float(lrs[index]), warning


class _RangeTest:
    """The ramp, the smoothing and the stop rule of one range test (fastai's LRFinder)."""

    def __init__(
        self, start_lr: float, end_lr: float, max_batches: int, beta: float, divergence: float
    ) -> None:
        self.start_lr, self.end_lr = start_lr, end_lr
        self.max_batches, self.beta, self.divergence = max_batches, beta, divergence
        self.learning_rates: list[float] = []
        self.losses: list[float] = []
        self.raw_losses: list[float] = []
        self._average = 0.0
        self._best = math.inf

    def learning_rate(self) -> float:
        """The rate of the next batch: ``start * (end / start) ** (t / max_batches)``."""
        t = len(self.learning_rates)
        return self.start_lr * (self.end_lr / self.start_lr) ** (t / self.max_batches)

    def record(self, learning_rate: float, loss: float) -> bool:
        """Add one batch's rate and loss; ``True`` when the test must stop."""
        self.learning_rates.append(float(learning_rate))
        self.raw_losses.append(float(loss))
        self._average = self.beta * self._average + (1 - self.beta) * float(loss)
        smoothed = self._average / (1 - self.beta ** len(self.raw_losses))
        self.losses.append(smoothed)
        if not math.isfinite(smoothed):
            return True
        self._best = min(self._best, smoothed)
        return smoothed > self.divergence * self._best or len(self.losses) >= self.max_batches

    def result(self) -> LRFinderResult:
        suggestion, warning = suggest(self.learning_rates, self.losses, self.max_batches)
        return LRFinderResult(
            suggestion=suggestion,
            batches=len(self.losses),
            learning_rates=self.learning_rates,
            losses=self.losses,
            raw_losses=self.raw_losses,
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


class _State:
    """Copies of a model's variables and its optimizer's, put back by :meth:`restore`."""

    def __init__(self, model: keras.Model) -> None:
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._copies = [
            (v, np.array(keras.ops.convert_to_numpy(v)))
            for v in [*model.variables, *optimizer.variables]
        ]

    def restore(self) -> None:
        for variable, value in self._copies:
            variable.assign(value)


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
        self._test: _RangeTest | None = None
        self._state: _State | None = None
        self._learning_rate = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _check_model(self.model)
        if getattr(self.model, "steps_per_execution", 1) != 1:
            raise LRFinderError(
                "LRFinder must see every batch: compile the model with steps_per_execution=1, "
                "or use find_learning_rate(model, x, y), which works with any"
            )
        self._state = _State(self.model)
        self._test = _RangeTest(*self.settings)
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
        self.result = self._test.result()


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
    state = _State(model)
    test = _RangeTest(start_lr, end_lr, max_batches, beta, divergence)
    batch = first
    try:
        while batch is not None:
            learning_rate = test.learning_rate()
            set_learning_rate(model.optimizer, learning_rate)
            logs = model.train_on_batch(*batch, return_dict=True)
            if test.record(learning_rate, float(logs["loss"])):
                break
            batch = next(batches, None)
    finally:
        state.restore()
        model.reset_metrics()
    result = test.result()
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
