"""``LearnedController``: the learned policy as an ordinary Keras callback.

    from fitpilot import LearnedController

    controller = LearnedController.load("controller.zip", verbose=1)
    model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[controller])
    print(controller.summary())

At the end of each epoch the callback turns the epoch logs into an observation
with the bundle's featurizer, runs the numpy policy, and either multiplies the
optimizer's learning rate by the chosen factor (clamped to ``[min_lr, max_lr]``)
or stops training. It keeps the best weights by ``monitor`` and puts them back
at the end, as ``EarlyStopping(restore_best_weights=True)`` does. It mirrors
the training environment (:class:`fitpilot.envs.env.KerasTrainingEnv`) step for
step: same featurizer, budget, clamp, divergence rule.

No torch and no stable-baselines3 are imported: the policy is plain arrays.
"""

from __future__ import annotations

import importlib.resources
import math
import warnings
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fitpilot.controller.actions import (
    DEFAULT_MAX_LR,
    DEFAULT_MIN_LR,
    ContinuousActions,
    DiscreteActions,
    apply_decision,
    check_settable_learning_rate,
    get_learning_rate,
)
from fitpilot.controller.bundle import Bundle, BundleError, load_bundle
from fitpilot.errors import FitpilotError

PRETRAINED = "pretrained/controller.zip"
NO_DECISION = -1  # logs["action"] on an epoch the policy was not asked (budget end, NaN)


class ControllerError(FitpilotError):
    """Settings or epoch logs the learned controller cannot work with."""


@dataclass(frozen=True)
class DecisionRecord:
    """What the controller did after one epoch.

    Attributes:
        epoch: 1-based epoch number, as in Keras' progress bar (``epoch + 1`` of ``fit``).
        monitor: the monitored value at the end of that epoch (may be NaN).
        lr_before: the learning rate the epoch was trained with.
        action: the action's name (``lower``, ``keep``, ``raise``, ``stop``, ...), or
            ``end`` (last epoch of the budget: no decision) or ``diverged`` (NaN/inf).
        lr_after: the learning rate for the next epoch.
        stopped: whether training stops after this epoch.
    """

    epoch: int
    monitor: float
    lr_before: float
    action: str
    lr_after: float
    stopped: bool


class LearnedController(keras.callbacks.Callback):
    """Sets the learning rate and decides when to stop, with a policy learned by RL.

    Create it with :meth:`load` (a ``controller.zip`` written by ``fitpilot
    train``) or :meth:`pretrained`, or directly from a :class:`Bundle`.

    Args:
        bundle: the controller bundle (policy, featurizer, action scheme, normalisation).
        monitor: the epoch-log key whose best value picks the weights to restore,
            e.g. ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (as Keras: the metric's own direction,
            ``max`` for accuracy- and AUC-like keys, ``min`` for losses).
        restore_best_weights: put back the weights of the best epoch (by ``monitor``)
            when training ends. (The best weights are kept in host memory either way,
            copied only on an improvement, to recover from a NaN.)
        verbose: 0 silent, 1 one line per decision and one on restore.
        min_lr, max_lr: absolute clamp of the learning rates the controller sets. The
            defaults are the training environment's, so the policy stays in the range
            it was trained in.

    What it reads and writes:

    - The policy sees the bundle featurizer's keys (``loss`` and ``val_loss``). A fit
      without validation data (and a ``monitor`` that is not a ``val_`` key) is fed
      ``val_loss := loss``, so the controller still works, from training loss alone.
    - The epoch budget is ``fit``'s ``epochs`` argument. With ``initial_epoch=k`` the
      run counts as a fresh run of ``epochs`` epochs whose first ``k`` are skipped:
      the featurizer's epoch count starts at 0 for this fit, its budget stays
      ``epochs``. Every ``fit`` call starts afresh (``on_train_begin`` resets all state).
    - It writes into the epoch logs, in place: ``lr``, the learning rate of the next
      epoch, and ``action``, a number (``DiscreteActions``: the action's index in
      :attr:`action_names`; ``ContinuousActions``: the lr factor asked for, 0 = stop;
      ``-1`` when no decision was taken). A number and not the action's name because
      Keras' progress bar and ``TensorBoard`` only take numbers; the names are in
      :attr:`decisions`. Keras adds ``History`` (and the progress bar) after the user's
      callbacks, so ``History`` always records both; ``CSVLogger``, ``TensorBoard`` and
      ``ModelCheckpoint`` see them when they come *after* the controller in the
      ``callbacks`` list (Keras calls callbacks in list order, on one shared logs dict).
    - A NaN or inf ``loss`` (or monitored value) ends training: a warning, the best
      weights back (whatever ``restore_best_weights`` says), no exception.
    - It reads the learning rate at each epoch's start (what the epoch trains with). Do
      not combine it with another callback that sets the learning rate
      (``ReduceLROnPlateau``, ``LearningRateScheduler``): they would fight over it.
    """

    def __init__(
        self,
        bundle: Bundle,
        monitor: str = "val_loss",
        mode: str = "auto",
        restore_best_weights: bool = True,
        verbose: int = 0,
        min_lr: float = DEFAULT_MIN_LR,
        max_lr: float = DEFAULT_MAX_LR,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ControllerError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not 0 <= min_lr < max_lr:
            raise ControllerError(
                f"need 0 <= min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}"
            )
        self.bundle = bundle
        self.featurizer = bundle.make_featurizer()
        self.pipeline = bundle.make_pipeline()
        expected = self.featurizer.size * bundle.frame_stack
        if bundle.policy.input_size != expected:
            raise BundleError(
                f"the bundle's policy takes {bundle.policy.input_size} inputs but its "
                f"featurizer and frame stack give {expected}; re-export the controller"
            )
        self.monitor = monitor
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.decisions: list[DecisionRecord] = []
        self.best: float | None = None
        self.best_epoch = 0  # 1-based, 0 before any finite monitored value
        self.best_weights: list[Any] | None = None  # host copies, in model.weights order
        self.stopped_epoch = 0  # 1-based epoch after which the controller stopped; 0 if not

    # -- construction ------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> LearnedController:
        """A controller from a bundle file; ``kwargs`` as in the constructor.

        Raises :class:`~fitpilot.controller.bundle.BundleError` for a missing, corrupt
        or incompatible bundle.
        """
        return cls(load_bundle(path), **kwargs)

    @classmethod
    def pretrained(cls, **kwargs: Any) -> LearnedController:
        """The controller that ships with this fitpilot; ``kwargs`` as in the constructor."""
        from fitpilot._version import __version__

        resource = importlib.resources.files("fitpilot.controller").joinpath(PRETRAINED)
        if not resource.is_file():
            raise BundleError(
                f"no pretrained controller ships with fitpilot {__version__}; train one "
                f"with `fitpilot train` (see `fitpilot train --help`) and load it with "
                f"LearnedController.load('controller.zip')"
            )
        with importlib.resources.as_file(resource) as path:
            return cls.load(path, **kwargs)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Names of the discrete actions, by index (empty for a continuous scheme)."""
        actions = self.bundle.actions
        return actions.names if isinstance(actions, DiscreteActions) else ()

    # -- Keras hooks ---------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        check_settable_learning_rate(self.model.optimizer)
        self._budget = int((self.params or {}).get("epochs") or 0)  # fit's `epochs`; 0: unknown
        self.featurizer.reset(budget=self._budget or 1)
        self.pipeline.reset()
        self.decisions = []
        self.best, self.best_epoch, self.best_weights = None, 0, None
        self.stopped_epoch = 0
        self._better: Any = None  # set at the first epoch end, once metrics are built
        self._fill_val = False
        self._warned_missing = False
        self._epoch_lr: float | None = None
        self._weights = self.model.weights  # the list, built once per fit (~0.1 ms)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_lr = self._current_lr()  # the lr this epoch trains with

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {} if logs is None else logs
        if self._better is None:
            self._first_epoch_checks(logs)
        lr = self._epoch_lr if self._epoch_lr is not None else self._current_lr()
        self._epoch_lr = None
        config = self.featurizer.config
        observed = {**logs, config.val_key: logs.get(config.train_key)} if self._fill_val else logs
        obs = self.featurizer.observe(observed, lr)
        value = self._monitor_value(logs)

        checked = [logs.get(config.train_key, math.nan), value]
        if config.val_key in observed:
            checked.append(observed[config.val_key])
        if not all(_finite(v) for v in checked if v is not None):
            self._diverged(epoch, logs, value, lr)
            return
        if value is not None and (self.best is None or self._better(value, self.best)):
            self.best, self.best_epoch = value, epoch + 1
            # Kept even without restore_best_weights, for a NaN.
            self.best_weights = _copy_values(self._weights)

        if self._budget and epoch + 1 >= self._budget:  # the budget's last epoch: no decision
            self._record(epoch, logs, value, lr, "end", lr, NO_DECISION, stopped=False)
            return
        action = self.bundle.policy.act(self.pipeline(obs)[None])[0]
        decision = self.bundle.actions.decode(action)
        if decision.stop:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1
            new_lr = lr
        else:
            new_lr = apply_decision(self.model.optimizer, decision, self.min_lr, self.max_lr)
            new_lr = float(np.float32(new_lr))  # as the optimizer's float32 variable holds it
        if isinstance(self.bundle.actions, ContinuousActions):
            code: float = 0.0 if decision.stop else decision.factor
        else:
            code = int(action)
        self._record(epoch, logs, value, lr, decision.name, new_lr, code, decision.stop)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self._restore(reason="the best epoch")

    # -- reading the logs ----------------------------------------------------------------

    def _first_epoch_checks(self, logs: Mapping[str, Any]) -> None:
        """Check ``monitor`` against the first epoch's logs and fix its direction."""
        keys = ", ".join(sorted(k for k in logs if k not in ("lr", "action"))) or "none"
        has_validation = any(k.startswith("val_") for k in logs)
        train_key = self.featurizer.config.train_key
        if train_key not in logs:
            raise ControllerError(
                f"the epoch logs have no {train_key!r} (keys: {keys}), which the controller's "
                f"policy reads; train with a compiled loss"
            )
        if self.monitor not in logs:
            if self.monitor.startswith("val_") and not has_validation:
                raise ControllerError(
                    f"monitor={self.monitor!r} needs validation data, but this fit has "
                    f"none: pass validation_data=... or validation_split=... to fit, or "
                    f"monitor='{self.monitor.removeprefix('val_')}'"
                )
            raise ControllerError(
                f"monitor={self.monitor!r} is not in the epoch logs (keys: {keys}); "
                f"pass one of them as monitor="
            )
        self._fill_val = self.featurizer.config.val_key not in logs and not has_validation
        self._better = _less if self._resolve_mode() == "min" else _greater

    def _resolve_mode(self) -> str:
        """``min`` or ``max`` for ``monitor``, Keras' way for ``mode='auto'``."""
        if self.mode != "auto":
            return self.mode
        name = self.monitor.removeprefix("val_")
        if name == "loss" or name.endswith("_loss"):
            return "min"
        for metric in _flat_metrics(self.model):
            direction = getattr(metric, "_direction", None)
            if metric.name == name and direction in ("up", "down"):
                return "max" if direction == "up" else "min"
        if "acc" in name or name.startswith(("auc", "fmeasure")) or name.endswith("auc"):
            return "max"
        raise ControllerError(
            f"cannot tell whether monitor={self.monitor!r} should go up or down; pass "
            f"mode='max' (higher is better) or mode='min'"
        )

    def _monitor_value(self, logs: Mapping[str, Any]) -> float | None:
        """The monitored value, or None on an epoch without it (``validation_freq > 1``)."""
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned_missing:
                warnings.warn(
                    f"LearnedController: monitor {self.monitor!r} is missing from the logs "
                    f"of some epochs (validation_freq > 1?); those epochs cannot be the "
                    f"best one and the policy sees them without validation. Use "
                    f"validation_freq=1.",
                    stacklevel=3,
                )
                self._warned_missing = True
            return None
        return float(value)

    def _current_lr(self) -> float:
        return get_learning_rate(self.model.optimizer)

    # -- acting --------------------------------------------------------------------------

    def _diverged(self, epoch: int, logs: dict[str, Any], value: float | None, lr: float) -> None:
        """NaN or inf (or no loss at all): warn, put the best weights back, stop; never raise."""
        train_key = self.featurizer.config.train_key
        restore = (" and restoring the weights of epoch "
                   f"{self.best_epoch}" if self.best_weights is not None else
                   " (no finite epoch to restore: lower the initial learning rate)")
        warnings.warn(
            f"LearnedController: epoch {epoch + 1} has a non-finite {train_key} "
            f"({logs.get(train_key)}) or {self.monitor} ({value}) at learning rate "
            f"{lr:.3g}; stopping{restore}",
            stacklevel=3,
        )
        self.model.stop_training = True
        self.stopped_epoch = epoch + 1
        if self.best_weights is not None:
            self._restore(reason="the best epoch, after a non-finite loss")
            self.best_weights = None  # restored once; on_train_end has nothing to add
        self._record(epoch, logs, value, lr, "diverged", lr, NO_DECISION, stopped=True)

    def _restore(self, reason: str) -> None:
        assert self.best_weights is not None
        if self.verbose > 0:
            _print(f"LearnedController: restoring model weights from {reason}: "
                   f"{self.best_epoch}.")
        for variable, value in zip(self._weights, self.best_weights, strict=True):
            variable.assign(value)

    def _record(
        self, epoch: int, logs: dict[str, Any], value: float | None, lr_before: float, name: str,
        lr_after: float, code: float, stopped: bool,
    ) -> None:
        logs["lr"] = lr_after
        logs["action"] = code
        monitor = math.nan if value is None else value
        self.decisions.append(
            DecisionRecord(epoch + 1, monitor, lr_before, name, lr_after, stopped)
        )
        if self.verbose > 0:
            change = f"learning rate {lr_before:.3g}"
            if lr_after != lr_before:
                change += f" -> {lr_after:.3g}"
            _print(f"\nEpoch {epoch + 1}: LearnedController {name}, {change}"
                   + (", stopping." if stopped else "."))

    # -- reading the record ----------------------------------------------------------------

    def summary(self) -> str:
        """The decisions of the last fit as a small text table (``print`` it)."""
        header = ("epoch", self.monitor, "lr before", "action", "lr after", "stopped")
        rows = [
            (str(r.epoch), f"{r.monitor:.4g}", f"{r.lr_before:.3g}", r.action,
             f"{r.lr_after:.3g}", "yes" if r.stopped else "")
            for r in self.decisions
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
                 for row in [header, *rows]]
        if self.best_epoch:
            lines.append(f"best {self.monitor} {self.best:.4g} at epoch {self.best_epoch}")
        return "\n".join(lines)

    def decisions_as_dicts(self) -> list[dict[str, Any]]:
        """:attr:`decisions` as plain dicts (for JSON or a DataFrame)."""
        fields = DecisionRecord.__dataclass_fields__
        return [dict(zip(fields, astuple(r), strict=True)) for r in self.decisions]

    def __repr__(self) -> str:
        return (
            f"LearnedController(bundle={self.bundle.content_hash}, monitor={self.monitor!r}, "
            f"mode={self.mode!r}, decisions={len(self.decisions)}, "
            f"best_epoch={self.best_epoch}, stopped_epoch={self.stopped_epoch})"
        )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _less(a: float, b: float) -> bool:
    return a < b


def _greater(a: float, b: float) -> bool:
    return a > b


def _flat_metrics(model: keras.Model) -> list[Any]:
    """The model's metric objects, compile containers opened up."""
    flat = []
    for metric in getattr(model, "metrics", []):
        inner = getattr(metric, "metrics", None)
        flat.extend(inner if isinstance(inner, list) else [metric])
    return flat


def _copy_values(variables: list[Any]) -> list[Any]:
    """Host copies of ``variables``' values, for a later ``variable.assign(copy)``.

    With TensorFlow, one ``identity_n`` op on the CPU (~0.1 ms for the reference MLP's
    6 variables, against ~0.4 ms for ``model.get_weights()``); the copies are tensors
    that later in-place updates of the variables do not touch (copy-on-write).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.device("/CPU:0"):
            return list(tf.identity_n([v.value for v in variables]))
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _print(message: str) -> None:
    try:  # Keras' own printer honours interactive vs absl logging
        from keras.src.utils.io_utils import print_msg
    except ImportError:  # pragma: no cover - private module moved
        print(message)
    else:
        print_msg(message)
