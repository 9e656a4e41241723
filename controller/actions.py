"""Action schemes: what the policy's output means for the learning rate, and applying it.

The default is discrete: multiply the learning rate by one of a few factors
(lower, keep, raise), or stop. A continuous scheme is available as an option.
Both are versioned and serialised into the controller bundle.

Version 2 adds a rollback action to the discrete scheme (:meth:`DiscreteActions.v2`:
x1/2, x1, x1.5, x2, stop, rollback): put back the best epoch's weights and optimizer
state, then set the rate to the best epoch's times ``rollback_factor``. A scheme
without rollback is version 1 and serialises exactly as before.

Version 3 adds a first decision, taken once before the first epoch on the scale probe's
observation (controller v3): keep the rate the run starts with, or set it to a multiple of
one of the probe's rates (:data:`ANCHORS`). The same action indices mean the first choices
then, the per-epoch actions afterwards (:meth:`DiscreteActions.decode`, ``first=True``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fitpilot.errors import FitpilotError

if TYPE_CHECKING:
    import gymnasium

#: The newest action-scheme version (a scheme without rollback still writes version 1).
ACTIONS_VERSION = 3
ACTIONS_VERSIONS = (1, 2, 3)
#: What a first decision's rate is a multiple of: the run's own starting rate, or one of
#: the scale probe's rates (``ProbeResult.valley``, ``steepest``, ``minimum``).
ANCHORS = ("start", "valley", "steepest", "minimum")


class ActionError(FitpilotError, ValueError):
    """An action scheme that cannot be read, or an optimizer it cannot act on."""


@dataclass(frozen=True)
class Decision:
    """What one policy output means: stop, or multiply the learning rate by ``factor``.

    With ``rollback``, first put back the best epoch's weights and optimizer state; the
    factor then applies to the best epoch's learning rate (:func:`rollback_learning_rate`).
    """

    stop: bool
    factor: float = 1.0
    name: str = ""
    rollback: bool = False
    anchor: str | None = None  # a first decision: the rate is this anchor's times factor


@dataclass(frozen=True)
class DiscreteActions:
    """Action ``i < len(factors)`` multiplies the lr by ``factors[i]``; the next one stops.

    With the default factors the actions are ``lower`` (x1/3), ``keep``,
    ``raise`` (x3) and ``stop``. With ``rollback`` a last action, ``rollback``, puts
    back the best epoch's weights and optimizer state and sets the rate to the best
    epoch's times ``rollback_factor`` (version 2; :meth:`v2` is its default set).
    """

    factors: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    kind: str = "discrete"
    rollback: bool = False
    rollback_factor: float = 0.5
    first: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ActionError(f"learning-rate factors must be positive, got {self.factors}")
        if not (math.isfinite(self.rollback_factor) and self.rollback_factor > 0):
            raise ActionError(f"`rollback_factor` must be positive, got {self.rollback_factor}")
        object.__setattr__(self, "first", tuple((str(a), float(f)) for a, f in self.first))
        for anchor, factor in self.first:
            if anchor not in ANCHORS or not (math.isfinite(factor) and factor > 0):
                raise ActionError(
                    f"a first choice is (anchor, factor) with an anchor of {', '.join(ANCHORS)} "
                    f"and a positive factor, got ({anchor!r}, {factor})"
                )

    @classmethod
    def v2(cls) -> DiscreteActions:
        """The version-2 set: x1/2, x1, x1.5, x2, stop, rollback (then x1/2)."""
        return cls(factors=(0.5, 1.0, 1.5, 2.0), rollback=True, rollback_factor=0.5)

    @classmethod
    def v3(cls) -> DiscreteActions:
        """The version-2 set, and a first decision: keep the start, the probe's valley x1 or
        x4, its steepest-descent rate x1/4 or x1, its minimum's rate x1/2."""
        return cls(
            factors=(0.5, 1.0, 1.5, 2.0), rollback=True, rollback_factor=0.5,
            first=(("start", 1.0), ("valley", 1.0), ("valley", 4.0), ("steepest", 0.25),
                   ("steepest", 1.0), ("minimum", 0.5)),
        )

    @property
    def n(self) -> int:
        return max(len(self.factors) + 1 + int(self.rollback), len(self.first))

    @property
    def first_names(self) -> tuple[str, ...]:
        """One readable name per first choice, by index (``keep start``, ``valley x4``...)."""
        return tuple("keep start" if (anchor, factor) == ("start", 1.0)
                     else f"{anchor} x{factor:g}" for anchor, factor in self.first)

    @property
    def names(self) -> tuple[str, ...]:
        """One readable name per action index."""
        default = {(1 / 3, 1.0, 3.0): ("lower", "keep", "raise")}
        return default.get(tuple(self.factors), tuple(f"lr x{f:.3g}" for f in self.factors)) + (
            "stop",
        ) + (("rollback",) if self.rollback else ())

    def space(self) -> gymnasium.spaces.Discrete:
        import gymnasium

        return gymnasium.spaces.Discrete(self.n)

    def decode(self, action: Any, first: bool = False) -> Decision:
        """What action index ``action`` means; with ``first`` (a version-3 scheme, before the
        first epoch) one of the first choices (an index past them keeps the start)."""
        index = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= index < self.n:
            raise ActionError(f"action {index} is outside 0..{self.n - 1}")
        if first:
            if not self.first:
                raise ActionError("this action scheme has no first decision (version 3 has)")
            anchor, factor = self.first[index] if index < len(self.first) else ("start", 1.0)
            name = self.first_names[index] if index < len(self.first) else "keep start"
            return Decision(stop=False, factor=factor, name=name, anchor=anchor)
        regular = len(self.factors) + 1 + int(self.rollback)
        if index >= regular:  # only the first decision has this many choices: keep
            return Decision(stop=False, factor=1.0, name="keep")
        if index == len(self.factors):
            return Decision(stop=True, name="stop")
        if index > len(self.factors):
            return Decision(stop=False, factor=self.rollback_factor, name="rollback",
                            rollback=True)
        return Decision(stop=False, factor=float(self.factors[index]), name=self.names[index])

    def to_dict(self) -> dict[str, Any]:
        if self.first:
            return {"version": 3, "kind": self.kind, "factors": list(self.factors),
                    "rollback": self.rollback, "rollback_factor": self.rollback_factor,
                    "first": [[anchor, factor] for anchor, factor in self.first]}
        if not self.rollback:  # version 1, as it always was
            return {"version": 1, "kind": self.kind, "factors": list(self.factors)}
        return {"version": 2, "kind": self.kind, "factors": list(self.factors),
                "rollback": True, "rollback_factor": self.rollback_factor}


@dataclass(frozen=True)
class ContinuousActions:
    """Action ``a`` in ``[-1, 1]^2``: stop if ``a[1] > 0``, else lr times ``10 ** (a[0] * m)``.

    ``m`` is ``max_log10_factor``: the largest change per epoch, in decades.
    """

    max_log10_factor: float = 0.5
    kind: str = "continuous"

    def space(self) -> gymnasium.spaces.Box:
        import gymnasium

        return gymnasium.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def decode(self, action: Any) -> Decision:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (2,):
            raise ActionError(f"a continuous action has 2 values, got shape {a.shape}")
        if a[1] > 0:
            return Decision(stop=True, name="stop")
        factor = 10 ** (float(a[0]) * self.max_log10_factor)
        return Decision(stop=False, factor=factor, name=f"lr x{factor:.3g}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": self.kind,
            "max_log10_factor": self.max_log10_factor,
        }


ActionScheme = DiscreteActions | ContinuousActions


def action_scheme_from_dict(data: Mapping[str, Any]) -> ActionScheme:
    """Rebuild an action scheme from :meth:`to_dict` output; refuse other versions.

    Version 1 has no rollback; version 2 reads ``rollback`` and ``rollback_factor``
    (defaults ``False`` and 0.5), so a version-1 dict read as version 2 is the same scheme.
    """
    version = data.get("version")
    if version not in ACTIONS_VERSIONS or isinstance(version, bool):
        raise ActionError(
            f"action scheme version {version!r} is not supported (this fitpilot "
            f"reads versions {', '.join(map(str, ACTIONS_VERSIONS))}); retrain or use the "
            f"fitpilot that made it"
        )
    if data.get("kind") == "discrete":
        factors = tuple(float(f) for f in data["factors"])
        if version == 1:
            return DiscreteActions(factors=factors)
        rollback = data.get("rollback", False)
        if not isinstance(rollback, bool):
            raise ActionError(f"action scheme setting rollback={rollback!r} must be true or false")
        first = tuple((anchor, factor) for anchor, factor in data.get("first", ())) \
            if version >= 3 else ()
        return DiscreteActions(factors=factors, rollback=rollback,
                               rollback_factor=float(data.get("rollback_factor", 0.5)),
                               first=first)
    if data.get("kind") == "continuous":
        return ContinuousActions(max_log10_factor=float(data["max_log10_factor"]))
    raise ActionError(f"unknown action scheme kind {data.get('kind')!r}")


#: A divergence before any finite epoch restarts the run at the rate times this factor (the
#: callback always; the environment with ``restarts``).
RESTART_FACTOR = 0.1
# The absolute learning-rate clamp of the training environment; the deployed
# callback uses the same defaults, so a controller stays in the range it was trained in.
DEFAULT_MIN_LR = 1e-7
DEFAULT_MAX_LR = 10.0


def check_settable_learning_rate(optimizer: Any, owner: str = "the model") -> None:
    """Raise :class:`ActionError` unless ``optimizer``'s learning rate is an assignable variable.

    ``owner`` names the model or task in the message.
    """
    import keras  # not at module import: the command line imports this before TF is configured

    from fitpilot.keras_internals import schedule_of

    if optimizer is None:
        raise ActionError(f"{owner} is not compiled; call model.compile(optimizer=...) first")
    if not isinstance(optimizer.learning_rate, keras.Variable):
        raise ActionError(
            f"{owner}: the optimizer's learning rate is a schedule "
            f"({type(schedule_of(optimizer)).__name__}), which fitpilot cannot change; "
            f"create the optimizer with a float learning_rate (e.g. Adam(learning_rate=1e-3))"
        )


def get_learning_rate(optimizer: Any) -> float:
    """The learning rate of an optimizer that passed :func:`check_settable_learning_rate`."""
    return float(optimizer.learning_rate.numpy())


def set_learning_rate(optimizer: Any, learning_rate: float) -> None:
    """Assign ``learning_rate`` to a Keras 3 optimizer's learning-rate variable (no retrace)."""
    if not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ActionError(f"learning rate must be finite and positive, got {learning_rate}")
    optimizer.learning_rate.assign(learning_rate)


def next_learning_rate(
    lr: float, decision: Decision, min_lr: float = 0.0, max_lr: float = math.inf
) -> float:
    """``lr`` times ``decision.factor``, clamped to ``[min_lr, max_lr]``; ``lr`` on a stop."""
    if decision.stop:
        return lr
    return clamp_learning_rate(lr * decision.factor, min_lr, max_lr)


def first_learning_rate(
    start_lr: float, decision: Decision, anchors: Mapping[str, float], min_lr: float = 0.0,
    max_lr: float = math.inf,
) -> float:
    """The rate of the first epoch after a first decision: its anchor's rate (``start`` is
    ``start_lr``; the others come from ``anchors``, the probe's rates by name) times its
    factor, clamped. The environment and the callback share it."""
    base = start_lr if decision.anchor in (None, "start") else anchors[decision.anchor]
    return clamp_learning_rate(base * decision.factor, min_lr, max_lr)


def rollback_learning_rate(
    best_lr: float, decision: Decision, min_lr: float = 0.0, max_lr: float = math.inf
) -> float:
    """The rate after a rollback: the best epoch's ``best_lr`` times ``decision.factor``, clamped.

    The environment and the callback share it.
    """
    return clamp_learning_rate(best_lr * decision.factor, min_lr, max_lr)


def clamp_learning_rate(lr: float, min_lr: float = 0.0, max_lr: float = math.inf) -> float:
    """``lr`` clamped to ``[min_lr, max_lr]`` (the environment and the callback share it)."""
    return min(max(lr, min_lr), max_lr)


def is_divergent(logs: Mapping[str, Any], keys: Iterable[str] = ("loss",)) -> bool:
    """Whether an epoch diverged: one of ``keys`` of its ``logs`` is missing, NaN or inf.

    The one divergence rule of the training environment and the deployed callback.
    The callback leaves out of ``keys`` the validation keys of an epoch Keras did not
    validate (``validation_freq > 1``); the environment validates every epoch.
    """
    for key in keys:
        try:
            if not math.isfinite(float(logs[key])):
                return True
        except (KeyError, TypeError, ValueError):
            return True
    return False
