"""What the hand-written learning-rate rules share, as Keras' ``MonitorCallback`` is for its own.

:class:`RuleCallback` reads ``monitor`` after each epoch, keeps the best epoch's
weights and puts them back at the end, writes ``logs["lr"]`` and keeps a
:class:`~fitpilot.controller.callback.DecisionRecord` per epoch; a subclass
(:class:`~fitpilot.baselines.greedy_lr.GreedyLR`,
:class:`~fitpilot.baselines.adalrs.AdaLRS`) says what the rule does with the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any, ClassVar

import keras
import numpy as np

from fitpilot.controller.actions import (
    ActionError,
    check_settable_learning_rate,
    get_learning_rate,
)
from fitpilot.controller.callback import DecisionRecord
from fitpilot.errors import FitpilotError


class RuleCallback(keras.callbacks.Callback):
    """A learning-rate rule applied after each epoch to ``monitor``, with best-weight restore.

    Subclasses set :attr:`error` and implement :meth:`_start` (fresh state for a
    fit) and :meth:`_decide` (the rule on one epoch's value; returns its action's
    name). A NaN or inf value reaches :meth:`_decide` too; it never becomes the best.
    """

    #: The exception a subclass raises (a FitpilotError and a ValueError).
    error: ClassVar[type[FitpilotError]] = FitpilotError

    def __init__(self, monitor: str, mode: str, restore_best_weights: bool, verbose: int) -> None:
        super().__init__()
        self.monitor, self.mode = monitor, mode
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self.decisions: list[DecisionRecord] = []
        self._clear_best()

    # -- Keras hooks ---------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        name = type(self).__name__
        try:
            check_settable_learning_rate(getattr(self.model, "optimizer", None), f"{name}'s model")
        except ActionError as exc:
            raise self.error(str(exc)) from None
        self._clear_best()
        self.decisions = []
        self._start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {} if logs is None else logs
        lr = get_learning_rate(self.model.optimizer)
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned:
                warnings.warn(
                    f"{type(self).__name__}: monitor={self.monitor!r} is not in the epoch logs "
                    f"(keys: {', '.join(sorted(logs)) or 'none'}); the learning rate stays "
                    f"until it is",
                    stacklevel=2,
                )
                self._warned = True
            self._record(epoch, logs, math.nan, lr, "wait")
            return
        value = float(value)
        if math.isfinite(value) and self._better(value, self.best_value):
            self.best_value, self.best_epoch = value, epoch + 1
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        self._record(epoch, logs, value, lr, self._decide(epoch, value, lr))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self._say(f"restoring the weights of the best epoch, {self.best_epoch}")
            self.model.set_weights(self.best_weights)

    # -- for subclasses --------------------------------------------------------------------

    def _start(self) -> None:
        raise NotImplementedError

    def _decide(self, epoch: int, value: float, lr: float) -> str:
        raise NotImplementedError

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _say(self, message: str) -> None:
        if self.verbose > 0:
            print(f"{type(self).__name__}: {message}.")

    # -- the record ------------------------------------------------------------------------

    def _clear_best(self) -> None:
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0  # 1-based; 0: none yet
        self.best_weights: list[np.ndarray] | None = None
        self._warned = False

    def _record(
        self, epoch: int, logs: dict[str, Any], value: float, lr_before: float, action: str
    ) -> None:
        lr_after = get_learning_rate(self.model.optimizer)
        logs["lr"] = lr_after
        self.decisions.append(DecisionRecord(epoch + 1, value, lr_before, action, lr_after, False))

    @property
    def probe_batches(self) -> int:
        """Batches trained before the first epoch: none (a rule only reads the epochs)."""
        return 0

    def decisions_as_dicts(self) -> list[dict[str, Any]]:
        """:attr:`decisions` as plain dicts (epoch, monitor, lr_before, action, lr_after, ...)."""
        return [dataclasses.asdict(record) for record in self.decisions]

    def summary(self) -> str:
        """One line per epoch: epoch, monitored value, rate before, action, rate after."""
        return "\n".join(
            f"{r.epoch:>4}  {r.monitor:>10.4g}  {r.lr_before:>10.3g}  {r.action:<10}"
            f"  {r.lr_after:.3g}"
            for r in self.decisions
        )


def check_common(arguments: dict[str, Any], error: type[FitpilotError]) -> None:
    """Check the arguments every rule has: ``monitor``, ``mode``, the clamp, restore, verbose."""
    a = arguments
    if not isinstance(a["monitor"], str) or not a["monitor"]:
        raise error(f"`monitor` must be an epoch-log key such as 'val_loss', got {a['monitor']!r}")
    if a["mode"] not in ("min", "max"):
        raise error(f"`mode` must be 'min' (lower is better) or 'max', got {a['mode']!r}")
    if not is_real(a["min_lr"]) or not 0 <= a["min_lr"] < math.inf:
        raise error(f"`min_lr` must be a finite number >= 0, got {a['min_lr']!r}")
    if not is_real(a["max_lr"]) or not a["max_lr"] > a["min_lr"]:
        raise error(f"`max_lr` must be a number above `min_lr` ({a['min_lr']!r}), "
                    f"got {a['max_lr']!r}")
    if not isinstance(a["restore_best_weights"], bool):
        raise error(f"`restore_best_weights` must be True or False, "
                    f"got {a['restore_best_weights']!r}")
    if not is_integer(a["verbose"]):
        raise error(f"`verbose` must be 0 or 1, got {a['verbose']!r}")


def is_real(value: Any) -> bool:
    """A real number, not a bool, not NaN (inf passes)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def is_integer(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
