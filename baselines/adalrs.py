"""AdaLRS for Keras 3: raise the learning rate while the loss falls faster; undo a raise that fails.

    from fitpilot import AdaLRS

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    adalrs = AdaLRS(window=3, raise_factor=2.0, lower_factor=0.5)
    model.fit(x, y, validation_split=0.2, epochs=40, callbacks=[adalrs])
    print(adalrs.summary())

The rule of Dong, Yang, Liang, Feng and Ran, "AdaLRS: Loss-Guided Adaptive
Learning Rate Search for Efficient Foundation Model Pretraining" (NeurIPS 2025,
arXiv 2506.13274): the loss and its descent velocity (minus the slope of the loss
fitted by least squares over a window) are both convex in the learning rate with
the same optimum, so try a larger rate and keep it while the velocity improves;
when a raise does not improve it, roll back to the weights and optimizer state
from before the raise and lower the rate.

Sources: no code was released, and the paper's text beyond its abstract and
introduction (its Algorithm 1, its constants) could not be retrieved here. This
follows the abstract, the published summaries of the method (a least-squares
slope over a window of k steps; a raise when the descent slows; a rollback and a
lower rate when a raise fails; a search in the early part of training; errors
that decay geometrically) and fitpilot issue 22. Every constant and every choice
below is this module's, stated as such.

The rule, once per epoch, on ``monitor`` (the paper works per optimizer step on
the training loss; here it is per epoch on ``val_loss``, because a window of k
epochs is the only slope a Keras callback can fit on a held-out loss, and budgets
of 10-40 epochs leave room for a few trials only):

- **Velocity.** ``v`` = minus the least-squares slope of the last ``window``
  monitored values against the epoch index (per epoch, in the monitored units;
  plus the slope for ``mode="max"``), over values all trained at one rate: the
  first point of a window is the value at the end of the epoch before that rate
  took effect, so ``window`` points span ``window - 1`` epochs at it. Before the
  first change the first point is epoch 1's.
- **Raise.** When a full window at the current rate is there, a raise may start
  (the paper's trigger, a slowing descent, is taken as always met: at epoch
  scale the descent of a healthy run slows nearly every epoch, and waiting for it
  costs an epoch per trial). It keeps ``v_before``, the velocity at the current
  rate, snapshots the model's variables and the optimizer's state (``iterations``,
  moments...), and multiplies the rate by ``raise_factor``, clamped to ``max_lr``.
- **Verdict.** After ``window - 1`` epochs at the raised rate: the raise succeeded
  if the velocity over that window is strictly greater than ``v_before`` (no
  tolerance). Then the raised rate stays, and since that window is a full window
  at it, the next raise may start at once ("raise while the slope improves").
  Otherwise the raise failed: the variables and optimizer state go back to the
  snapshot (the epochs in between are spent: they count in the budget) and the
  rate becomes the rate before the raise times ``lower_factor``, clamped to
  ``min_lr``. A NaN or inf monitored value during a trial fails it at once.
- **How many raises.** A raise must land strictly below every rate whose trial
  failed (the lowest failed rate is a ceiling: by the convexity the paper
  reports, the optimum lies below it), so raise, fail, lower, raise again cannot
  cycle; a raise must also stay within ``[min_lr, max_lr]`` and move the rate.
- **Search phase.** Raises start only while at most ``search_fraction`` of
  ``fit``'s ``epochs`` are done, and only if their verdict falls within the
  budget; after that the rate stays (with a base schedule in the paper; none
  here). So no trial is left open at the budget's end, unless another callback
  stops training during one: then the raised rate and weights stay as they are.
- **NaN or inf outside a trial** changes nothing (action ``nonfinite``); the
  window starts afresh from the next finite value. With no snapshot to go back
  to, a diverged run stays diverged until the end, where the best weights return;
  add ``keras.callbacks.TerminateOnNaN`` to stop it.

Defaults: ``window=3`` (the shortest window with a least-squares fit over more
than one difference: 2 epochs per trial); ``raise_factor=2`` and
``lower_factor=0.5`` (an octave up, an octave down: the rollback undoes the raise
and goes one step below; the learned controller's largest raise is also x2);
``search_fraction=0.5`` ("early stages"); ``min_lr=1e-7`` and ``max_lr=10``, the
learned controller's clamp, so both search the same range.

Also, as in :class:`~fitpilot.baselines.greedy_lr.GreedyLR`: ``restore_best_weights``
(default ``True``) keeps the weights of the epoch with the best finite monitored
value (a rolled-back epoch included: its weights did exist) and puts them back when
training ends; ``logs["lr"]`` holds the rate of the next epoch; :attr:`decisions`
records each epoch, with the action ``observe`` (a window fills), ``raise`` (a trial
starts, also right after a successful one), ``trial`` (a trial goes on), ``accept``
(a trial succeeded, no new raise), ``rollback``, ``nonfinite`` or ``wait`` (no
``monitor`` in the logs). It runs on Keras 3's TensorFlow, JAX and torch backends.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fitpilot.baselines._rule_callback import RuleCallback, check_common, is_integer, is_real
from fitpilot.controller.actions import set_learning_rate
from fitpilot.controller.state import Snapshot
from fitpilot.errors import FitpilotError

#: A raise must land below the lowest failed rate by this relative margin (float32 rounding).
CEILING_MARGIN = 1e-6


class AdaLRSError(FitpilotError, ValueError):
    """An argument or a model AdaLRS cannot work with; the message says what to pass."""


def descent_velocity(values: list[float], mode: str = "min") -> float:
    """Minus the least-squares slope of ``values`` against 0, 1, 2...; plus it for ``"max"``.

    In monitored units per epoch: positive while the loss falls (or the metric rises).
    """
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64) - (len(y) - 1) / 2
    slope = float(np.dot(x, y - y.mean()) / np.dot(x, x))
    return -slope if mode == "min" else slope


class AdaLRS(RuleCallback):
    """Raise the rate while the fitted loss-descent velocity improves; roll back a failed raise.

    See the module docstring for the rule and for which of its parts are this
    module's choices (the paper's text could not be read).

    Args:
        monitor: the epoch-log key the rule reads. Default ``"val_loss"``.
        mode: ``"min"`` (lower is better) or ``"max"``. Default ``"min"``.
        window: monitored values in a least-squares fit of the slope (>= 2; a trial
            lasts ``window - 1`` epochs). Default 3.
        raise_factor: a trial multiplies the rate by it (> 1). Default 2.0.
        lower_factor: after a failed trial the rate is the one before the raise
            times it (in (0, 1)). Default 0.5.
        search_fraction: raises start only while this share of ``fit``'s ``epochs``
            or less is done (in (0, 1]). Default 0.5.
        min_lr: no rate set below it. Default 1e-7.
        max_lr: no rate set above it. Default 10.0.
        restore_best_weights: put back the weights of the best epoch when training
            ends. Default ``True``.
        verbose: 0 silent, 1 a line per raise, verdict and restore. Default 0.

    Raises:
        AdaLRSError: a bad argument (at construction), or an optimizer whose rate is
            a schedule or that is missing (at the start of ``fit``).
    """

    error = AdaLRSError

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        window: int = 3,
        raise_factor: float = 2.0,
        lower_factor: float = 0.5,
        search_fraction: float = 0.5,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        restore_best_weights: bool = True,
        verbose: int = 0,
    ) -> None:
        _check_arguments(locals())
        super().__init__(monitor, mode, restore_best_weights, verbose)
        self.window = int(window)
        self.raise_factor, self.lower_factor = float(raise_factor), float(lower_factor)
        self.search_fraction = float(search_fraction)
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self._start()

    def _start(self) -> None:
        self._points: list[float] = []  # monitored values at the current rate, oldest first
        self._snapshot: Snapshot | None = None  # set while a trial is on
        self._velocity_before = math.nan
        self._lr_before = math.nan
        self._ceiling = math.inf  # the lowest rate whose trial failed

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        optimizer = self.model.optimizer
        if not optimizer.built:  # so that a snapshot holds its whole state
            optimizer.build(self.model.trainable_variables)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._snapshot = None
        super().on_train_end(logs)

    def _decide(self, epoch: int, value: float, lr: float) -> str:
        """Apply the rule after epoch ``epoch`` (0-based); returns the action's name."""
        done = epoch + 1
        if self._snapshot is not None:  # a trial is on
            if not math.isfinite(value):
                return self._fail(lr, "a non-finite value")
            self._points.append(value)
            if len(self._points) < self.window:
                return "trial"
            velocity = descent_velocity(self._points, self.mode)
            if not velocity > self._velocity_before:
                return self._fail(lr, f"velocity {velocity:.3g} <= {self._velocity_before:.3g}")
            self._snapshot = None
            self._say(f"the raise to {lr:.3g} held (velocity {velocity:.3g} > "
                      f"{self._velocity_before:.3g})")
            return "raise" if self._try_raise(done, lr) else "accept"
        if not math.isfinite(value):
            self._points = []
            return "nonfinite"
        self._points.append(value)
        return "raise" if self._try_raise(done, lr) else "observe"

    def _try_raise(self, done: int, lr: float) -> bool:
        """Start a trial if a full window at ``lr`` is there and the search allows one."""
        if len(self._points) < self.window:
            return False
        budget = int((self.params or {}).get("epochs") or 0)  # 0: unknown, no limit
        if budget and (done > self.search_fraction * budget
                       or done + self.window - 1 > budget):
            return False
        new_lr = min(lr * self.raise_factor, self.max_lr)
        if not lr < new_lr < self._ceiling * (1 - CEILING_MARGIN) or new_lr < self.min_lr:
            return False
        self._velocity_before = descent_velocity(self._points[-self.window:], self.mode)
        self._snapshot = Snapshot(self.model)
        self._lr_before = lr
        self._points = self._points[-1:]  # the value at the raise opens the next window
        self._set(new_lr)
        self._say(f"raising the learning rate to {new_lr:.3g} on trial")
        return True

    def _fail(self, lr: float, why: str) -> str:
        """Roll back to before the raise and lower the rate; the failed rate becomes a ceiling."""
        assert self._snapshot is not None
        self._ceiling = min(self._ceiling, lr)
        self._snapshot.restore()
        self._snapshot = None
        new_lr = max(self._lr_before * self.lower_factor, self.min_lr)
        self._set(new_lr)
        self._points = self._points[:1]  # back at the raise: its value opens the window
        self._say(f"the raise to {lr:.3g} failed ({why}): weights and optimizer state "
                  f"rolled back, learning rate {new_lr:.3g}")
        return "rollback"

    def _set(self, lr: float) -> None:
        set_learning_rate(self.model.optimizer, lr)


def _check_arguments(arguments: dict[str, Any]) -> None:
    """Raise :class:`AdaLRSError` for the first bad argument, naming it and the fix."""
    a = arguments
    check_common(a, AdaLRSError)
    if not is_integer(a["window"]) or a["window"] < 2:
        raise AdaLRSError(f"`window` must be a whole number of values >= 2 (a slope needs two), "
                          f"got {a['window']!r}")
    if not is_real(a["raise_factor"]) or not 1 < a["raise_factor"] < math.inf:
        raise AdaLRSError(f"`raise_factor` must be a finite number above 1, "
                          f"got {a['raise_factor']!r} (2.0 is the default)")
    if not is_real(a["lower_factor"]) or not 0 < a["lower_factor"] < 1:
        raise AdaLRSError(f"`lower_factor` must be in (0, 1), got {a['lower_factor']!r} "
                          f"(0.5 is the default)")
    if not is_real(a["search_fraction"]) or not 0 < a["search_fraction"] <= 1:
        raise AdaLRSError(f"`search_fraction` must be in (0, 1], got {a['search_fraction']!r} "
                          f"(0.5 is the default)")
