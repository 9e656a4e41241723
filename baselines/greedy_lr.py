"""GreedyLR for Keras 3: raise the learning rate after improvements, lower it otherwise.

    from fitpilot import GreedyLR

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    greedy = GreedyLR(factor=0.5, patience=1, min_lr=1e-6, max_lr=1.0)
    model.fit(x, y, validation_split=0.2, epochs=40, callbacks=[greedy])
    print(greedy.summary())

The rule of Subramanian, Krishnamoorthy and Murthy, "Dynamic Learning Rate
Scheduling based on Loss Changes Leads to Faster Convergence" (arXiv 2512.14527,
2025): with a factor ``F`` in (0, 1), divide the learning rate by ``F`` after an
improvement of the loss and multiply it by ``F`` otherwise, with patience,
smoothing, cooldown and warm-up counters and a ``[min_lr, max_lr]`` clamp.

Reference: Hugging Face transformers, ``src/transformers/optimization.py``,
classes ``StreamingAverage`` and ``GreedyLR`` (added by pull request #44271, merge
commit 981ca7b, 2026-03-18; read at release v5.23.0, lines 581-925: ``step``
749-793, ``is_better`` 795-805, ``_reduce_lr`` 807-824, ``_increase_lr`` 826-836,
``_reset`` 838-853). Apache License 2.0. The transformers ``Trainer`` steps it on
the evaluation metric (``metric_for_best_model``, the eval loss by default) after
each evaluation; here it steps once per epoch on ``monitor`` (``val_loss``), which
is that same use with ``eval_strategy="epoch"``.

After each epoch, with ``current`` the monitored value (the mean of the last
``window_size`` values when ``smooth``):

1. During a cooldown (epochs left after a decrease) or a warm-up (epochs left
   after an increase), count one of them down, zero both streaks, and change
   nothing else (``best`` is not updated either).
2. Otherwise ``current`` is an improvement when it beats ``best`` by more than
   ``min_delta`` (``threshold_mode="abs"``: ``current < best - min_delta``;
   ``"rel"``: ``current < best * (1 - min_delta)``; mirrored for ``mode="max"``).
   An improvement sets ``best`` and lengthens the good streak and zeroes the bad
   one; anything else lengthens the bad streak and zeroes the good one.
3. A good streak longer than ``patience`` raises the rate to
   ``min(lr / factor, max_lr)`` and starts a warm-up of ``warmup`` epochs; else a
   bad streak longer than ``patience`` lowers it to ``max(lr * factor, min_lr)`` and
   starts a cooldown of ``cooldown`` epochs. A move smaller than ``eps`` is not
   made. The streak that moved is zeroed.
4. Reset: each decrease asked for while the rate is at ``min_lr`` or below counts
   one; after ``reset_start`` of them the rate goes back to the one the fit started
   with and ``best``, the streaks, the counters and the smoothing window start
   afresh. An increase re-arms the count.

As in transformers, the clamp only bounds the moves: a rate that starts below
``min_lr`` is never lowered and one above ``max_lr`` never raised (nor forced
inside). Beware the defaults carried over from transformers: ``min_lr=1e-3``
means a Keras optimizer at its usual ``1e-3`` is never lowered, and
``patience=10`` with ``factor=0.95`` moves the rate by 5% at most every 11 epochs.

What this callback adds, none of which changes the rule:

- A NaN or inf monitored value never crashes: it counts as no improvement (as a
  NaN does in transformers) and is left out of the smoothing window (where in
  transformers it would stay in the running sum for good). The weights are not
  touched then; add ``keras.callbacks.TerminateOnNaN`` to stop such a run.
- ``restore_best_weights`` (default ``True``): the weights of the epoch with the
  best raw (unsmoothed, finite) monitored value are kept in host memory and put
  back when training ends, as ``EarlyStopping(restore_best_weights=True)`` does.
- After each epoch ``logs["lr"]`` holds the rate of the next epoch and
  :attr:`decisions` gets a :class:`~fitpilot.controller.callback.DecisionRecord`
  whose action is ``keep``, ``raise``, ``lower``, ``at max_lr`` or ``at min_lr`` (a
  move the clamp or ``eps`` left undone), ``cooldown``, ``warmup``, ``reset``, or
  ``wait`` (no ``monitor`` in the logs).

It runs on Keras 3's TensorFlow, JAX and torch backends (numpy and ``keras.ops``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from fitpilot.baselines._rule_callback import RuleCallback, check_common, is_integer, is_real
from fitpilot.controller.actions import get_learning_rate, set_learning_rate
from fitpilot.errors import FitpilotError


class GreedyLRError(FitpilotError, ValueError):
    """An argument or a model GreedyLR cannot work with; the message says what to pass."""


class GreedyLR(RuleCallback):
    """Multiply the learning rate by ``1 / factor`` after improvements and by ``factor`` after none.

    The transformers ``GreedyLR`` scheduler as a Keras callback, applied after each
    epoch to ``monitor`` (see the module docstring for the rule, step by step).
    Defaults are transformers', and so are the argument names but one, in Keras'
    words: ``min_delta`` is its ``threshold``.

    Args:
        monitor: the epoch-log key the rule reads. Default ``"val_loss"``.
        mode: ``"min"`` (lower is better) or ``"max"``. Default ``"min"``.
        factor: ``F`` in (0, 1): the rate is divided by it to raise and multiplied
            by it to lower. Default 0.95.
        patience: a streak of improvements (or of none) must be longer than this,
            in epochs, for a move. Default 10.
        min_delta: how much better than ``best`` counts as an improvement, in the
            monitored value's units (``threshold_mode="abs"``) or as a fraction of
            ``best`` (``"rel"``). Default 1e-6.
        threshold_mode: ``"abs"`` or ``"rel"``, as above. Default ``"abs"``.
        cooldown: epochs after a decrease in which the rule only counts down.
            Default 0.
        warmup: epochs after an increase in which the rule only counts down.
            Default 0.
        min_lr: no decrease goes below it. Default 1e-3 (transformers' default).
        max_lr: no increase goes above it. Default 1.0.
        eps: a move by less than this (in learning-rate units) is not made.
            Default 1e-8.
        smooth: judge the mean of the last ``window_size`` monitored values instead
            of the last one. Default ``False``.
        window_size: the smoothing window, in epochs. Default 50.
        reset_start: decreases asked for at ``min_lr`` before the rate goes back to
            its starting value and the rule starts afresh. Default 500.
        restore_best_weights: put back the weights of the best epoch (raw
            ``monitor``) when training ends. Default ``True``.
        verbose: 0 silent, 1 a line per move and one on restore. Default 0.

    Raises:
        GreedyLRError: a bad argument (at construction), or an optimizer whose rate
            is a schedule or that is missing (at the start of ``fit``).
    """

    error = GreedyLRError

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        factor: float = 0.95,
        patience: int = 10,
        min_delta: float = 1e-6,
        threshold_mode: str = "abs",
        cooldown: int = 0,
        warmup: int = 0,
        min_lr: float = 1e-3,
        max_lr: float = 1.0,
        eps: float = 1e-8,
        smooth: bool = False,
        window_size: int = 50,
        reset_start: int = 500,
        restore_best_weights: bool = True,
        verbose: int = 0,
    ) -> None:
        _check_arguments(locals())
        super().__init__(monitor, mode, restore_best_weights, verbose)
        self.factor, self.patience = float(factor), int(patience)
        self.min_delta, self.threshold_mode = float(min_delta), threshold_mode
        self.cooldown, self.warmup = int(cooldown), int(warmup)
        self.min_lr, self.max_lr, self.eps = float(min_lr), float(max_lr), float(eps)
        self.smooth, self.window_size, self.reset_start = smooth, int(window_size), int(reset_start)
        self._initial_lr = math.nan
        self._reset_rule()

    def _start(self) -> None:
        self._initial_lr = get_learning_rate(self.model.optimizer)
        self._reset_rule()

    def _decide(self, epoch: int, value: float, lr: float) -> str:
        """transformers' ``GreedyLR.step`` on one epoch's value; returns the action's name."""
        finite = math.isfinite(value)
        current = value
        if self.smooth and finite:
            self._window.append(value)
            current = sum(self._window) / len(self._window)
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            self._good = self._bad = 0
            return "cooldown"
        if self._warmup_left > 0:
            self._warmup_left -= 1
            self._good = self._bad = 0
            return "warmup"
        if finite and self._improves(current):
            self.best, self._bad, self._good = current, 0, self._good + 1
        else:
            self._bad, self._good = self._bad + 1, 0
        if self._good > self.patience:
            action = self._increase(lr)
            self._warmup_left, self._good = self.warmup, 0
            return action
        if self._bad > self.patience:
            action = self._reduce(lr)
            self._cooldown_left, self._bad = self.cooldown, 0
            return action
        return "keep"

    def _improves(self, current: float) -> bool:
        if self.threshold_mode == "rel":
            scale = 1.0 - self.min_delta if self.mode == "min" else 1.0 + self.min_delta
            return self._better(current, self.best * scale)
        shift = -self.min_delta if self.mode == "min" else self.min_delta
        return self._better(current, self.best + shift)

    def _reduce(self, lr: float) -> str:
        new_lr = max(lr * self.factor, self.min_lr)
        moved = lr - new_lr > self.eps
        if moved:
            self._set(new_lr)
        # The variable holds float32: compare there, as Keras' ReduceLROnPlateau does.
        if np.float32(get_learning_rate(self.model.optimizer)) <= np.float32(self.min_lr):
            self._resets_left -= 1
            if self._resets_left <= 0:
                self._set(self._initial_lr)
                self._reset_rule()
                return "reset"
        return "lower" if moved else "at min_lr"

    def _increase(self, lr: float) -> str:
        new_lr = min(lr / self.factor, self.max_lr)
        moved = new_lr - lr > self.eps
        if moved:
            self._set(new_lr)
        self._resets_left = self.reset_start
        return "raise" if moved else "at max_lr"

    def _reset_rule(self) -> None:
        """``best``, the streaks, the counters and the window afresh (transformers' ``_reset``)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self._good = self._bad = 0
        self._cooldown_left = self._warmup_left = 0
        self._resets_left = self.reset_start
        self._window: deque[float] = deque(maxlen=self.window_size)

    def _set(self, lr: float) -> None:
        set_learning_rate(self.model.optimizer, lr)
        self._say(f"learning rate {lr:.4g}")


def _check_arguments(arguments: dict[str, Any]) -> None:
    """Raise :class:`GreedyLRError` for the first bad argument, naming it and the fix."""
    a = arguments
    check_common(a, GreedyLRError)
    if a["threshold_mode"] not in ("abs", "rel"):
        raise GreedyLRError(f"`threshold_mode` must be 'abs' or 'rel', got {a['threshold_mode']!r}")
    if not is_real(a["factor"]) or not 0 < a["factor"] < 1:
        raise GreedyLRError(f"`factor` must be in (0, 1): the rate is divided by it to raise "
                            f"and multiplied by it to lower; got {a['factor']!r} (0.95 is usual)")
    for name in ("patience", "cooldown", "warmup"):
        if not is_integer(a[name]) or a[name] < 0:
            raise GreedyLRError(f"`{name}` must be a whole number of epochs >= 0, "
                                f"got {a[name]!r}")
    for name in ("window_size", "reset_start"):
        if not is_integer(a[name]) or a[name] < 1:
            raise GreedyLRError(f"`{name}` must be a whole number >= 1, got {a[name]!r}")
    for name in ("min_delta", "eps"):
        if not is_real(a[name]) or not 0 <= a[name] < math.inf:
            raise GreedyLRError(f"`{name}` must be a finite number >= 0, got {a[name]!r}")
    if not isinstance(a["smooth"], bool):
        raise GreedyLRError(f"`smooth` must be True or False, got {a['smooth']!r}")
