"""The scale probe of controller v3: measure the learning-rate scale before the first epoch.

A short exponential ramp of the learning rate over a fixed range that does not depend on
the rate the run starts at (``ProbeConfig``: 1e-5 to 10, over 5% of the run's batches,
at least 16 and at most 48), on
the first batches of a seeded order of the training rows, from the run's initial weights;
afterwards the weights, the optimizer's state and the rate are exactly what they were
(:func:`~fitpilot.controller.ramp.run_ramp`, the range test's machinery). From the curve
of the smoothed loss against the rate it yields three rates and two scale-free descriptors
(:class:`ProbeResult`), which the policy of a v3 bundle reads as its coordinates: the rate
it sets is observed relative to them, not as an absolute number.

One implementation for the training environment (which computes it once per task and seed
and caches it: it does not depend on the start) and the deployed callback (which runs it at
the start of ``fit``, on ``fit``'s own training data); its batches count as compute.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from fitpilot.controller.ramp import RateRamp, run_ramp, suggest
from fitpilot.errors import FitpilotError


class ProbeError(FitpilotError, ValueError):
    """Probe settings or data that the scale probe cannot work with."""


@dataclass(frozen=True)
class ProbeConfig:
    """What the scale probe does (recorded in a v3 bundle, rebuilt exactly from it).

    Attributes:
        start_lr, end_lr: the ramp's range (absolute rates: never the run's own rate).
        budget_share: the ramp's length, as a share of the run's batches (epochs x batches
            per epoch), within ``[min_batches, max_batches]`` (:meth:`batches_for`); it stops
            earlier when the loss diverges.
        beta: smoothing of the batch loss (bias-corrected moving average); lower than the
            range test's 0.98, which has 100 points to smooth over.
        divergence: stop once the smoothed loss passes this times its best.
        seed: the seed of the order of the training rows the probe's batches take.
    """

    start_lr: float = 1e-5
    end_lr: float = 10.0
    budget_share: float = 0.05
    min_batches: int = 16
    max_batches: int = 48
    beta: float = 0.6
    divergence: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.start_lr < self.end_lr and math.isfinite(self.end_lr)):
            raise ProbeError(f"the probe needs 0 < start_lr < end_lr < inf, got "
                             f"{self.start_lr} and {self.end_lr}")
        if not 8 <= self.min_batches <= self.max_batches <= 1000:
            raise ProbeError(f"the probe needs 8 <= min_batches <= max_batches <= 1000, got "
                             f"{self.min_batches} and {self.max_batches}")
        if not (0 < self.budget_share <= 1 and 0 <= self.beta < 1 and self.divergence > 1):
            raise ProbeError(f"the probe needs 0 < budget_share <= 1, 0 <= beta < 1 and "
                             f"divergence > 1, got {self.budget_share}, {self.beta} and "
                             f"{self.divergence}")

    def batches_for(self, steps_per_epoch: int, epochs: int) -> int:
        """The ramp's length for a run of ``epochs`` epochs of ``steps_per_epoch`` batches."""
        share = round(self.budget_share * max(1, steps_per_epoch) * max(1, epochs))
        return int(min(self.max_batches, max(self.min_batches, share)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProbeError(f"unknown probe setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**data)


@dataclass(frozen=True)
class ProbeResult:
    """What the probe measured.

    Attributes:
        valley: fastai's ``valley`` rate on the curve (the range test's suggestion).
        steepest: the rate where the smoothed loss falls fastest against log(rate).
        minimum: the rate of the lowest smoothed loss: past it the loss leaves its minimum.
        drop: log(lowest smoothed loss / first smoothed loss), <= 0: how much the ramp
            lowered the loss.
        diverged: the ramp stopped on its divergence rule (or a NaN) before its end.
        batches: batches run (compute: divide by the batches per epoch).
        learning_rates, losses: the curve (rates, smoothed losses), for plots and tests.

    When the loss is not finite from the first batch, the three rates are ``start_lr``,
    ``drop`` is 0 and ``diverged`` is true.
    """

    valley: float
    steepest: float
    minimum: float
    drop: float
    diverged: bool
    batches: int
    learning_rates: tuple[float, ...] = ()
    losses: tuple[float, ...] = ()

    @property
    def rates(self) -> tuple[float, float, float]:
        """``(valley, steepest, minimum)``."""
        return (self.valley, self.steepest, self.minimum)

    @property
    def anchors(self) -> dict[str, float]:
        """The rates by name, as a first decision's anchors name them."""
        return {"valley": self.valley, "steepest": self.steepest, "minimum": self.minimum}

    def to_dict(self) -> dict[str, Any]:
        """The figures without the curve (for records and summaries)."""
        return {name: getattr(self, name)
                for name in ("valley", "steepest", "minimum", "drop", "diverged", "batches")}


def probe_batches(
    x: Any, y: Any, batch_size: int, count: int, seed: int
) -> Iterator[tuple[Any, Any, Any]]:
    """The probe's ``(x, y, None)`` batches: ``count`` batches of ``batch_size`` rows in the
    order of a permutation seeded by ``seed``, cycled when the data are short.

    ``x`` and ``y`` are arrays (or nests of arrays, as ``fit`` takes them), or ``x`` is a
    re-iterable source of batches (a ``tf.data.Dataset``, a ``keras.utils.PyDataset``) and
    ``y`` is ``None``: then its first batches, in its own order. A one-shot iterator (a
    generator) cannot be replayed and is refused.
    """
    import keras  # here: the probe's data handling only

    leaves = keras.tree.flatten(x)
    if leaves and all(hasattr(leaf, "shape") for leaf in leaves):
        x = keras.tree.map_structure(np.asarray, x)
        y = None if y is None else keras.tree.map_structure(np.asarray, y)
        rows = len(leaves[0])
        if rows == 0:
            raise ProbeError("the probe needs training data; `x` has no rows")
        order = np.random.default_rng(seed).permutation(rows)
        size = max(1, min(int(batch_size), rows))
        for index in range(count):
            start = (index * size) % rows
            take = np.take(order, np.arange(start, start + size), mode="wrap")
            pick = lambda a, take=take: a[take]  # noqa: E731
            yield (keras.tree.map_structure(pick, x),
                   None if y is None else keras.tree.map_structure(pick, y), None)
        return
    if y is not None or iter(x) is x:
        raise ProbeError(
            "the scale probe needs training data it can read again: arrays, a tf.data.Dataset "
            "or a keras.utils.PyDataset, not a generator; pass those to fit, or probe=False"
        )
    given = 0
    while given < count:
        empty = True
        for batch in x:
            empty = False
            yield keras.utils.unpack_x_y_sample_weight(batch)
            given += 1
            if given >= count:
                return
        if empty:
            raise ProbeError("the probe needs training data; `x` gave no batch")


def scale_probe(
    model: Any, x: Any, y: Any, batch_size: int, steps_per_epoch: int, epochs: int,
    config: ProbeConfig,
) -> ProbeResult:
    """Run the probe on ``model`` with training data ``x``, ``y`` (see :func:`probe_batches`)
    for a run of ``epochs`` epochs of ``steps_per_epoch`` batches, and measure the curve.

    ``model`` (compiled and built, with a float learning rate) is left exactly as it was:
    variables, optimizer state, learning rate.
    """
    count = config.batches_for(steps_per_epoch, epochs)
    ramp = RateRamp(config.start_lr, config.end_lr, count, config.beta, config.divergence)
    run_ramp(model, probe_batches(x, y, batch_size, count, config.seed), ramp)
    return measure(ramp.learning_rates, ramp.losses, count, config.start_lr)


def measure(
    learning_rates: list[float], losses: list[float], count: int, start_lr: float
) -> ProbeResult:
    """The probe's rates and descriptors of a recorded curve (smoothed losses per rate) of a
    ramp of ``count`` batches from ``start_lr``."""
    curve = tuple(float(v) for v in losses)
    rates = tuple(float(v) for v in learning_rates)
    finite = 0
    while finite < len(curve) and math.isfinite(curve[finite]) and curve[finite] > 0:
        finite += 1
    diverged = len(curve) < count or finite < len(curve)
    if finite == 0:
        start = start_lr
        return ProbeResult(start, start, start, 0.0, True, len(curve), rates, curve)
    lrs, kept = np.log(rates[:finite]), np.log(curve[:finite])
    lowest = int(np.argmin(kept))
    if finite >= 3:
        slopes = np.gradient(kept, lrs)  # d log loss / d log rate
        steepest = rates[int(np.argmin(slopes[: lowest + 1]))]
    else:
        steepest = rates[lowest]
    valley, _ = suggest(rates[:finite], curve[:finite], count)
    return ProbeResult(
        valley=float(valley) if valley is not None else rates[lowest],
        steepest=float(steepest),
        minimum=rates[lowest],
        drop=float(kept[lowest] - kept[0]),
        diverged=diverged,
        batches=len(curve),
        learning_rates=rates,
        losses=curve,
    )
