"""A learning-rate ramp over a few batches, left without a trace: the machinery of a range test.

One implementation for the two places fitpilot measures a loss against the learning rate:
the public range test (:mod:`fitpilot.baselines.lr_finder`, fastai's ``lr_find``) and the
learned controller's scale probe (:mod:`fitpilot.controller.probe`), in the environment
and in the callback alike.

- :class:`RateRamp`: batch ``t`` of ``n`` runs at ``start * (end / start) ** (t / n)``; it
  follows a bias-corrected exponential moving average of the batch loss and says when to
  stop (``divergence`` times its best, a NaN, or ``n`` batches);
- :func:`run_ramp`: runs a ramp on batches with ``model.train_on_batch`` (whatever
  ``steps_per_execution``), then puts back the model's variables, the optimizer's whole
  state and its learning rate exactly (:class:`~fitpilot.controller.state.Snapshot`);
- :func:`valley_index` and :func:`suggest`: fastai's ``valley`` rule on the curve.

Reference: fastai (https://github.com/fastai/fastai, ``fastai/callback/schedule.py`` at
commit 0a049e8: ``LRFinder``, ``valley``, ``Learner.lr_find``; ``fastai/learner.py``:
``AvgSmoothLoss``). Apache License 2.0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from fitpilot.controller.actions import set_learning_rate
from fitpilot.controller.state import Snapshot
from fitpilot.errors import FitpilotError

#: fastai's minimum number of ramp batches (LRFinder raises smaller ``num_it`` to 6):
#: the valley rule drops the last 5 points.
MIN_BATCHES = 6
#: Points dropped from the end of the curve before the valley rule (fastai's ``[:-5]``).
DROP_LAST = 5


class RampError(FitpilotError, ValueError):
    """A ramp that cannot run, or a curve the valley rule cannot read."""


class RateRamp:
    """The ramp, the smoothing and the stop rule of one range test (fastai's ``LRFinder``).

    Args:
        start_lr: the rate of the first batch.
        end_lr: the ramp's end, reached after ``max_batches`` batches (exclusive).
        max_batches: the ramp's length in batches.
        beta: smoothing of the batch loss (exponential moving average, bias-corrected).
        divergence: stop once the smoothed loss exceeds this times its best.

    Attributes:
        learning_rates, losses, raw_losses: per batch run: its rate, the smoothed loss
            after it, the batch loss itself.
    """

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
        """Add one batch's rate and loss; ``True`` when the ramp must stop."""
        self.learning_rates.append(float(learning_rate))
        self.raw_losses.append(float(loss))
        self._average = self.beta * self._average + (1 - self.beta) * float(loss)
        smoothed = self._average / (1 - self.beta ** len(self.raw_losses))
        self.losses.append(smoothed)
        if not math.isfinite(smoothed):
            return True
        self._best = min(self._best, smoothed)
        return smoothed > self.divergence * self._best or len(self.losses) >= self.max_batches


def run_ramp(model: Any, batches: Iterable[tuple[Any, Any, Any]], ramp: RateRamp) -> None:
    """Train ``model`` on ``(x, y, sample_weight)`` batches at the ramp's rates until it stops
    (or the batches run out), then put everything back exactly: the model's variables, the
    optimizer's state (built first if it was not) and its learning rate, and reset its
    metrics. ``model`` must be compiled and built, with a float learning rate."""
    snapshot = Snapshot(model, learning_rate=True)
    try:
        for x, y, sample_weight in batches:
            learning_rate = ramp.learning_rate()
            set_learning_rate(model.optimizer, learning_rate)
            logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            if ramp.record(learning_rate, float(logs["loss"])):
                break
    finally:
        snapshot.restore()
        model.reset_metrics()


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
        raise RampError("the valley rule needs at least one loss value")
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
