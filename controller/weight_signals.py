"""Weight-dynamics signals of a training run, on a fixed random sample of coordinates.

Fed the model's trainable weights at the start of a run and after each epoch,
:class:`WeightSignals` measures how the optimisation moves (featurizer version 2;
docs/design.md, "The one contract"):

- ``cosine``: the cosine between the last two epochs' weight updates,
  ``delta_t . delta_{t-1} / (|delta_t| |delta_{t-1}|)``; persistently positive: the
  rate is too low, negative: too high;
- ``update_ratio``: ``|delta_t| / |w_t|``, the relative size of the last update;
- ``distance``: ``|w_t - w_0| / |w_0|``, how far the run travelled from its start.

All three are computed on the same ``sample_size`` coordinates (at most 16,384 by
default) drawn once, with a fixed seed, across all trainable variables: the cost
and host memory are bounded by the sample, not the model. The arithmetic is numpy
float64 on the host; the gather runs on the backend (one compiled call on
TensorFlow), so only the sample crosses to the host.

Undefined values are 0: the cosine before two updates exist (the first epoch, the
first epoch after :meth:`WeightSignals.rebase`) or when an update is zero; a ratio
whose two norms are 0. A ratio with a zero denominator and a non-zero numerator is
``inf`` (the featurizer clips it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fitpilot.errors import FitpilotError

#: The default number of sampled coordinates, and the seed that draws them.
SAMPLE_SIZE = 16_384
SAMPLE_SEED = 0
# Compiled gathers kept per variable list (an environment alternates between its tasks' models).
_GATHERS_KEPT = 16


class WeightSignalsError(FitpilotError):
    """Weights that do not fit the sample drawn for the run."""


@dataclass(frozen=True)
class WeightSignalValues:
    """The signals after one epoch (see the module docstring); all >= 0 but ``cosine``."""

    cosine: float = 0.0  # in [-1, 1]
    update_ratio: float = 0.0
    distance: float = 0.0


def sample_indices(sizes: Sequence[int], sample_size: int, seed: int) -> list[np.ndarray]:
    """Per variable, the sorted flat indices of ``min(sample_size, sum(sizes))`` coordinates.

    Drawn without replacement, uniformly over all coordinates, with ``seed``; memory
    and time are O(sample), not O(sum(sizes)) (numpy's set-based draw for a small sample).
    """
    total = int(sum(sizes))
    count = min(int(sample_size), total)
    drawn = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    bounds = np.cumsum([0, *sizes])
    cuts = np.searchsorted(drawn, bounds)
    return [
        (drawn[lo:hi] - start).astype(np.int64)
        for lo, hi, start in zip(cuts[:-1], cuts[1:], bounds[:-1], strict=True)
    ]


class WeightSignals:
    """Tracks :class:`WeightSignalValues` over a run from samples of its weights.

    Call :meth:`start` with the weights a run starts from, :meth:`update` with the
    weights after each epoch, and :meth:`rebase` after weights were put back (a
    rollback). ``weights`` is a sequence of numpy arrays, backend tensors or Keras
    variables, always the same variables in the same order (``model.trainable_variables``).

    Args:
        sample_size: the most coordinates sampled (fewer if the model has fewer).
        seed: the seed of the sample (fixed: every run samples the same coordinates).
    """

    def __init__(self, sample_size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> None:
        if sample_size < 1:
            raise WeightSignalsError(f"`sample_size` must be >= 1, got {sample_size}")
        self.sample_size, self.seed = int(sample_size), int(seed)
        self._shapes: tuple[tuple[int, ...], ...] | None = None  # the run's model
        self._indices: list[np.ndarray] = []
        self._samples: dict[tuple[tuple[int, ...], ...], list[np.ndarray]] = {}  # by shapes
        # by the ids of the variables read (the closures keep them alive: ids stay unique)
        self._gathers: dict[tuple[int, ...], Callable[[], np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the run (the sample of coordinates is kept)."""
        self._initial: np.ndarray | None = None  # w_0, float64[k]
        self._previous: np.ndarray | None = None  # w_{t-1}
        self._last_update: np.ndarray | None = None  # delta_{t-1}

    def start(self, weights: Sequence[Any]) -> None:
        """Start a run from ``weights`` (``w_0``), of this model or another one."""
        self.reset()
        self._shapes = None  # a run may be of another model (an env's next task)
        self._initial = self._previous = self.sample(weights)

    def rebase(self, weights: Sequence[Any]) -> None:
        """The weights were put back to ``weights``: the next update starts from them.

        The cosine is 0 at the next update (the update before it belongs to another path).
        """
        self._previous, self._last_update = self.sample(weights), None

    def update(self, weights: Sequence[Any]) -> WeightSignalValues:
        """Record the weights after an epoch; the signals of that epoch.

        Without :meth:`start`, the first call sets ``w_0`` and returns zeros.
        """
        current = self.sample(weights)
        if self._initial is None or self._previous is None:
            self._initial = self._previous = current
            return WeightSignalValues()
        update = current - self._previous
        update_norm = _norm(update)
        cosine = 0.0
        if self._last_update is not None:
            norms = update_norm * _norm(self._last_update)
            if norms > 0 and math.isfinite(norms):
                cosine = min(max(_dot(update, self._last_update) / norms, -1.0), 1.0)
            elif not math.isfinite(norms):
                cosine = math.nan
        values = WeightSignalValues(
            cosine=cosine,
            update_ratio=_ratio(update_norm, _norm(current)),
            distance=_ratio(_norm(current - self._initial), _norm(self._initial)),
        )
        self._previous, self._last_update = current, update
        return values

    # -- the sample ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of sampled coordinates (0 before the first weights are seen)."""
        return sum(len(i) for i in self._indices)

    def sample(self, weights: Sequence[Any]) -> np.ndarray:
        """The sampled coordinates of ``weights``, float64 of shape ``(size,)``."""
        weights = list(weights)
        shapes = tuple(tuple(int(d) for d in w.shape) for w in weights)
        if self._shapes is None:
            if shapes not in self._samples:
                self._samples[shapes] = sample_indices(
                    [math.prod(s) for s in shapes], self.sample_size, self.seed
                )
            self._shapes, self._indices = shapes, self._samples[shapes]
        elif shapes != self._shapes:
            raise WeightSignalsError(
                f"weights of shapes {shapes} differ from the ones this run sampled "
                f"({self._shapes}); make a new WeightSignals for another model"
            )
        if all(isinstance(w, np.ndarray) for w in weights):
            parts = [w.reshape(-1)[i] for w, i in zip(weights, self._indices, strict=True)]
            return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
        ids = tuple(id(w) for w in weights)
        if ids not in self._gathers:
            if len(self._gathers) >= _GATHERS_KEPT:
                del self._gathers[next(iter(self._gathers))]
            self._gathers[ids] = _backend_gather(weights, self._indices)
        return self._gathers[ids]()


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` without BLAS (whose thread pool costs milliseconds on a busy machine)."""
    return float(np.sum(a * b))


def _norm(a: np.ndarray) -> float:
    return math.sqrt(_dot(a, a))


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; 0 for 0/0, inf for x/0 with x > 0."""
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else math.inf


def _backend_gather(weights: list[Any], indices: list[np.ndarray]) -> Callable[[], np.ndarray]:
    """A function that gathers ``indices`` of ``weights`` (backend values) to one host vector.

    On TensorFlow one compiled call (one host copy); elsewhere one ``take`` per variable.
    """
    import keras  # here, not at import: the command line loads this before TF is configured

    used = [(w, i) for w, i in zip(weights, indices, strict=True) if len(i)]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only on the TensorFlow backend

        constants = [tf.constant(i) for _, i in used]

        def gather() -> Any:
            parts = [
                tf.gather(tf.reshape(tf.convert_to_tensor(w), [-1]), i)
                for (w, _), i in zip(used, constants, strict=True)
            ]
            return tf.concat([tf.cast(p, tf.float64) for p in parts], axis=0)

        compiled = tf.function(gather, autograph=False)
        return lambda: compiled().numpy()

    def gather_each() -> np.ndarray:
        parts = [
            keras.ops.convert_to_numpy(keras.ops.take(keras.ops.reshape(w, (-1,)), i))
            for w, i in used
        ]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    return gather_each
