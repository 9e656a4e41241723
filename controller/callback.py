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
    RESTART_FACTOR,
    ContinuousActions,
    Decision,
    DiscreteActions,
    check_settable_learning_rate,
    clamp_learning_rate,
    first_learning_rate,
    get_learning_rate,
    is_divergent,
    next_learning_rate,
    rollback_learning_rate,
    set_learning_rate,
)
from fitpilot.controller.bundle import Bundle, BundleError, load_bundle
from fitpilot.controller.probe import ProbeError, ProbeResult, scale_probe
from fitpilot.controller.state import assign_values, copy_values, optimizer_state
from fitpilot.errors import FitpilotError
from fitpilot.keras_internals import fit_locals, metric_direction, print_message

PRETRAINED = "pretrained/controller.zip"
NO_DECISION = -1  # logs["action"] on an epoch the policy was not asked (budget end, NaN, wait)
# Callbacks that set the learning rate: with the controller they fight over it.
LR_SETTERS = ("ReduceLROnPlateau", "LearningRateScheduler", "LearnedController")


class ControllerError(FitpilotError, ValueError):
    """Settings or epoch logs the learned controller cannot work with."""


@dataclass(frozen=True)
class DecisionRecord:
    """What the controller did after one epoch.

    Attributes:
        epoch: 1-based epoch number, as in Keras' progress bar (``epoch + 1`` of ``fit``);
            0 for the first decision of a version-3 bundle, before the first epoch.
        monitor: the monitored value at the end of that epoch (may be NaN).
        lr_before: the learning rate the epoch was trained with.
        action: the action's name (``lower``, ``keep``, ``raise``, ``stop``, ...), or
            ``end`` (last epoch of the budget: no decision), ``diverged`` (NaN/inf),
            ``restart`` (NaN/inf before any finite epoch: the fit starts over) or
            ``wait`` (an epoch without validation, ``validation_freq > 1``: no decision).
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
    - A NaN or inf ``loss`` (or monitored value) before any finite epoch means the
      starting rate is far too high: the fit restarts (action ``restart``, a warning)
      from the weights and optimizer state it started from, at ``RESTART_FACTOR`` (a
      tenth) of the rate, as a fresh run of the epochs left; at most ``restarts`` times.
      Any other NaN or inf ends training: a warning, the best weights back (whatever
      ``restore_best_weights`` says; the weights the fit started from if no epoch was
      finite), no exception.
    - With ``validation_freq=k > 1`` it observes and decides only after the epochs with
      validation (its budget counts those: ``epochs // k``), keeps the learning rate
      after the others (action ``wait``) and warns once that the policy learned to
      decide after every epoch.
    - Other callbacks, checked at the start of ``fit``: ones that set the learning rate
      (``ReduceLROnPlateau``, ``LearningRateScheduler``, another ``LearnedController``)
      and a learning-rate schedule in the optimizer are refused, with a
      :class:`ControllerError` (:class:`~fitpilot.controller.actions.ActionError` for a
      schedule); ones that also restore weights (``EarlyStopping(restore_best_weights=True)``)
      get a warning that says whose weights the model ends with (the later in the list).
    - It runs on Keras' TensorFlow, JAX and torch backends: the policy is numpy.
    - A version-2 bundle may read more and do more. Featurizer version 2 also reads the
      trainable weights after each observed epoch (a fixed sample of at most 16,384
      coordinates: :mod:`~fitpilot.controller.weight_signals`). An action scheme with
      ``rollback`` keeps the best epoch's optimizer state and rate too, and its
      ``rollback`` action puts back that epoch's weights and optimizer state, then sets
      the rate to its rate times ``rollback_factor``.
    - A version-3 bundle (controller v3) measures the scale first: at the start of ``fit``
      it runs the scale probe (:mod:`~fitpilot.controller.probe`: an exponential ramp of
      the rate over 5% of the fit's batches, at least 16 and at most 48, on ``fit``'s own
      training data, after which weights, optimizer state and rate are exactly as they
      were; :attr:`probe_batches` counts them, as compute), then takes a first decision
      (keep the starting rate, or a multiple of one of the probe's rates: ``decisions[0]``,
      epoch 0), and observes the rate relative to the probe's rates from then on.

    Args (version 3 only):
        probe: run the scale probe (default). ``False`` skips it, for data ``fit`` cannot
            read twice (a generator): the first decision then keeps the starting rate and
            the probe's rates are taken to be that rate, which the policy never saw in
            training.
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
        restarts: int = 3,
        probe: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise ControllerError(
                f"restarts must be an int >= 0 (0: stop at a divergence), got {restarts!r}"
            )
        if mode not in ("auto", "min", "max"):
            raise ControllerError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not 0 <= min_lr < max_lr:
            raise ControllerError(
                f"need 0 <= min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}"
            )
        self.bundle = bundle
        self.featurizer = bundle.make_featurizer()
        self.pipeline = bundle.make_pipeline()
        self.monitor = monitor
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.restarts = restarts
        self.probe = bool(probe)
        self.probe_result: ProbeResult | None = None  # version 3: the last fit's probe
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
        fit = fit_locals(("callbacks", "validation_freq", "validation_data"))
        self._check_other_callbacks(fit.get("callbacks"))
        self._budget = int((self.params or {}).get("epochs") or 0)  # fit's `epochs`; 0: unknown
        frequency = fit.get("validation_freq", 1)
        self._validation_freq = frequency if isinstance(frequency, int) and frequency > 0 else 1
        # None when not called from Keras' fit (hooks driven by hand): told by the logs.
        self._has_validation: bool | None = (
            fit["validation_data"] is not None if "validation_data" in fit else None
        )
        if self._has_validation is False and self.monitor.startswith("val_"):
            raise self._no_validation_error()
        if self._has_validation and self._validation_freq > 1:
            warnings.warn(
                f"LearnedController: validation_freq={self._validation_freq}: the controller "
                f"observes and decides only after the epochs with validation (every "
                f"{self._validation_freq}th) and keeps the learning rate after the others "
                f"(action 'wait'). It learned to decide after every epoch: for the decisions "
                f"it was trained for, use validation_freq=1.",
                stacklevel=2,
            )
        # Featurizer v2 reads the trainable weights; v1 gets None and reads none.
        self._trainable = self.model.trainable_variables if self.featurizer.config.uses_weights \
            else None
        self._observe_afresh(self._budget)
        self.decisions = []
        self.best, self.best_epoch, self.best_weights = None, 0, None
        # A rollback scheme (actions v2) also keeps the best epoch's optimizer state and rate.
        self._rollback = getattr(self.bundle.actions, "rollback", False)
        self._best_optimizer: list[Any] | None = None
        self._best_lr = math.nan
        self.stopped_epoch = 0
        self._better: Any = None  # set at the first epoch with `monitor`, once metrics are built
        self._fill_val = self._has_validation is False
        self._weights = self.model.weights  # the list, built once per fit (~0.1 ms)
        self._start_weights = copy_values(self._weights)  # for a divergence in epoch 1
        optimizer = self.model.optimizer
        # Keras builds the optimizer before on_train_begin; if not, a restart zeroes its state.
        self._start_optimizer = (
            copy_values(optimizer_state(optimizer)) if getattr(optimizer, "built", False)
            else None
        )
        self._restarts_left = self.restarts
        self._validated_epochs = 0
        self.probe_result = None
        if self.featurizer.config.uses_probe:
            self._first_decision()
            self._start_as_best(fit_locals(("validation_data", "validation_batch_size",
                                            "batch_size")))

    @property
    def probe_batches(self) -> int:
        """Batches the last fit's scale probe trained (version 3; count them as compute)."""
        return self.probe_result.batches if self.probe_result is not None else 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {} if logs is None else logs
        config = self.featurizer.config
        if self._better is None:
            self._first_epoch_checks(logs)
        # The lr this epoch trained with: no other callback sets it (refused at train begin).
        lr = get_learning_rate(self.model.optimizer)
        observed = {**logs, config.val_key: logs.get(config.train_key)} if self._fill_val else logs
        validated = config.val_key in observed and self.monitor in logs
        value = float(logs[self.monitor]) if validated else None
        checked = (config.train_key, config.val_key, self.monitor) if validated else (
            config.train_key,)
        if is_divergent(observed, checked):
            self._diverged(epoch, logs, value, lr)
            return
        last = bool(self._budget) and epoch + 1 >= self._budget  # no decision after it
        if not validated:  # validation_freq > 1: nothing for the policy to see
            self._record(epoch, logs, None, lr, "end" if last else "wait", lr, NO_DECISION,
                         stopped=False)
            return
        self._validated_epochs += 1  # finite: a NaN after one stops instead of restarting
        obs = self.featurizer.observe(observed, lr, self._trainable)
        if self.best is None or self._better(value, self.best):
            self.best, self.best_epoch = value, epoch + 1
            # Kept even without restore_best_weights, for a NaN.
            self.best_weights = copy_values(self._weights)
            if self._rollback:
                self._best_optimizer = copy_values(optimizer_state(self.model.optimizer))
                self._best_lr = lr

        if last:
            self._record(epoch, logs, value, lr, "end", lr, NO_DECISION, stopped=False)
            return
        action = self.bundle.policy.act(self.pipeline(obs)[None])[0]
        decision = self.bundle.actions.decode(action)
        if decision.stop:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1
            new_lr = lr
        else:
            if decision.rollback:
                self._roll_back()
                new_lr = rollback_learning_rate(self._best_lr, decision, self.min_lr, self.max_lr)
            else:
                new_lr = next_learning_rate(lr, decision, self.min_lr, self.max_lr)
            if new_lr != lr:
                new_lr = self._set_learning_rate(new_lr)
        if isinstance(self.bundle.actions, ContinuousActions):
            code: float = 0.0 if decision.stop else decision.factor
        else:
            code = int(action)
        self._record(epoch, logs, value, lr, decision.name, new_lr, code, decision.stop)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._start_weights = None
        if self.restore_best_weights and self.best_weights is not None:
            self._restore(self.best_weights, self._best_source())

    # -- checks --------------------------------------------------------------------------

    def _check_other_callbacks(self, callbacks: Any) -> None:
        """Refuse callbacks that set the learning rate; warn about ones that restore weights.

        ``callbacks`` is ``fit``'s :class:`keras.callbacks.CallbackList` (None if unknown).
        Keras calls ``on_train_end`` in list order, so the last weight restorer wins.
        """
        others = list(getattr(callbacks, "callbacks", None) or [])
        position = next((i for i, c in enumerate(others) if c is self), None)
        for index, callback in enumerate(others):
            name = type(callback).__name__
            if callback is self:
                continue
            if isinstance(callback, LearnedController) or name in LR_SETTERS:
                raise ControllerError(
                    f"{name} is in the callbacks of this fit: it sets the learning rate, "
                    f"which the LearnedController sets after every epoch, and the two would "
                    f"fight over it; remove {name} from callbacks (or the LearnedController)"
                )
            if getattr(callback, "restore_best_weights", False):
                after = position is not None and index > position
                if after or not self.restore_best_weights:
                    winner = (f"{name}'s (its best {getattr(callback, 'monitor', '?')!r}), "
                              f"not the controller's best epoch")
                else:
                    winner = f"the controller's (best {self.monitor!r}); {name}'s are overwritten"
                warnings.warn(
                    f"LearnedController: {name}(restore_best_weights=True) also puts weights "
                    f"back at the end of fit, and the last to do so wins: the model ends with "
                    f"{winner}. To keep one, pass restore_best_weights=False to the other.",
                    stacklevel=3,
                )

    def _no_validation_error(self) -> ControllerError:
        return ControllerError(
            f"monitor={self.monitor!r} needs validation data, but this fit has none: pass "
            f"validation_data=... or validation_split=... to fit, or "
            f"monitor='{self.monitor.removeprefix('val_')}'"
        )

    def _first_epoch_checks(self, logs: Mapping[str, Any]) -> None:
        """Check the logs against ``monitor`` and fix its direction, at its first sight.

        With ``validation_freq > 1`` the ``val_`` keys come at a later epoch; until then
        only the training key is checked.
        """
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
                if self._has_validation:
                    return  # validation_freq > 1 and an epoch without validation
                raise self._no_validation_error()
            raise ControllerError(
                f"monitor={self.monitor!r} is not in the epoch logs (keys: {keys}); "
                f"pass one of them as monitor="
            )
        if self._has_validation is None:
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
            direction = metric_direction(metric)
            if metric.name == name and direction in ("up", "down"):
                return "max" if direction == "up" else "min"
        if "acc" in name or name.startswith(("auc", "fmeasure")) or name.endswith("auc"):
            return "max"
        raise ControllerError(
            f"cannot tell whether monitor={self.monitor!r} should go up or down; pass "
            f"mode='max' (higher is better) or mode='min'"
        )

    # -- acting --------------------------------------------------------------------------

    def _diverged(self, epoch: int, logs: dict[str, Any], value: float | None, lr: float) -> None:
        """NaN or inf (or no loss at all): warn, put the best weights back, stop; never raise.

        Before any finite epoch, the weights the fit started from go back.
        """
        train_key = self.featurizer.config.train_key
        restart_lr = clamp_learning_rate(lr * RESTART_FACTOR, self.min_lr, self.max_lr)
        if self._validated_epochs == 0 and self._restarts_left > 0 and restart_lr < lr:
            self._restart(epoch, logs, value, lr, restart_lr)
            return
        if self.best_weights is not None:
            weights, source = self.best_weights, self._best_source()
        else:
            weights, source = self._start_weights, "the start of this fit (no finite epoch)"
        warnings.warn(
            f"LearnedController: epoch {epoch + 1} has a non-finite {train_key} "
            f"({logs.get(train_key)}) or {self.monitor} ({value}) at learning rate "
            f"{lr:.3g}; stopping and restoring the weights of {source}"
            + ("" if self.best_weights is not None else "; lower the initial learning rate"),
            stacklevel=3,
        )
        self.model.stop_training = True
        self.stopped_epoch = epoch + 1
        if weights is not None:
            self._restore(weights, source + ", after a non-finite loss")
        self.best_weights = None  # restored once; on_train_end has nothing to add
        self._record(epoch, logs, value, lr, "diverged", lr, NO_DECISION, stopped=True)

    def _restart(
        self, epoch: int, logs: dict[str, Any], value: float | None, lr: float, new_lr: float
    ) -> None:
        """Start the fit over from its initial weights and optimizer state at ``new_lr``."""
        self._restarts_left -= 1
        warnings.warn(
            f"LearnedController: epoch {epoch + 1} has a non-finite "
            f"{self.featurizer.config.train_key} ({logs.get(self.featurizer.config.train_key)}) "
            f"or {self.monitor} ({value}) at learning rate {lr:.3g}, before any finite epoch: "
            f"restarting from the weights this fit started from at learning rate {new_lr:.3g} "
            f"({self.restarts - self._restarts_left} of at most {self.restarts} restarts)",
            stacklevel=3,
        )
        assert self._start_weights is not None
        self._restore(self._start_weights, "the start of this fit, after a non-finite loss")
        state = optimizer_state(self.model.optimizer)
        assign_values(state, self._start_optimizer or [
            np.zeros(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)) for v in state
        ])
        new_lr = self._set_learning_rate(new_lr)
        if self.best_weights is not None:  # version 3: the start stays the best, at the new rate
            self._best_lr = new_lr
        # A fresh run of the epochs left, as the policy was trained to see one.
        self._observe_afresh(max(1, self._budget - epoch - 1) if self._budget else 0)
        self._record(epoch, logs, value, lr, "restart", new_lr, NO_DECISION, stopped=False)

    def _roll_back(self) -> None:
        """Put back the best epoch's weights and optimizer state (the rollback action)."""
        assert self.best_weights is not None and self._best_optimizer is not None
        assign_values(self._weights, self.best_weights)
        assign_values(optimizer_state(self.model.optimizer), self._best_optimizer)
        self.featurizer.rebase_weights(self._trainable or [])

    def _restore(self, weights: list[Any], source: str) -> None:
        if self.verbose > 0:
            print_message(f"LearnedController: restoring model weights from {source}.")
        assign_values(self._weights, weights)

    def _first_decision(self) -> None:
        """Version 3, at the start of fit: the scale probe, then the policy's first decision
        sets the rate of epoch 1 (recorded as ``decisions[0]``, epoch 0)."""
        lr = get_learning_rate(self.model.optimizer)
        if self.probe:
            data = fit_locals(("x", "y", "batch_size"))
            if data.get("x") is None:
                raise ControllerError(
                    "the scale probe reads fit's training data, and this hook is not called by "
                    "Keras' fit; call fit, or pass probe=False"
                )
            steps = int((self.params or {}).get("steps") or 1)
            try:
                probe = scale_probe(self.model, data["x"], data.get("y"),
                                    data.get("batch_size") or 32, steps, max(1, self._budget),
                                    self.featurizer.config.probe)
            except ProbeError as exc:
                raise ControllerError(str(exc)) from None
        else:
            probe = ProbeResult(lr, lr, lr, 0.0, False, 0)
        self.probe_result = probe
        self.featurizer.probe = probe
        observation = self.pipeline(self.featurizer.observe_start(lr))
        if self.probe:
            action = self.bundle.policy.act(observation[None])[0]
            decision = self.bundle.actions.decode(action, first=True)
        else:
            decision = Decision(stop=False, name="keep start", anchor="start")
        new_lr = first_learning_rate(lr, decision, probe.anchors, self.min_lr, self.max_lr)
        if new_lr != lr:
            new_lr = self._set_learning_rate(new_lr)
        self.decisions.append(DecisionRecord(0, math.nan, lr, decision.name, new_lr, False))
        if self.verbose > 0:
            print_message(
                f"LearnedController: scale probe of {probe.batches} batches: valley "
                f"{probe.valley:.3g}, steepest {probe.steepest:.3g}, minimum {probe.minimum:.3g};"
                f" first decision {decision.name}: learning rate {lr:.3g} -> {new_lr:.3g}."
            )

    def _start_as_best(self, fit: dict[str, Any]) -> None:
        """Version 3, as in the environment: the weights the fit starts from are the best
        until an epoch beats them, so that a first epoch that leaves the model worse than
        untrained is rolled back to them, and never kept at the end.

        Costs one evaluation pass over the validation data (``monitor`` of the starting
        weights). Without validation data, or with a ``monitor`` the evaluation does not
        give, the first epoch is the first best, as in versions 1 and 2.
        """
        data = fit.get("validation_data")
        if data is None or not self.monitor.startswith("val_"):
            return
        if isinstance(data, (tuple, list)):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(data))
            batch_size = fit.get("validation_batch_size") or fit.get("batch_size") or 32
            scores = self.model.evaluate(x, y, sample_weight=sample_weight,
                                         batch_size=batch_size, verbose=0, return_dict=True)
        else:  # a dataset or PyDataset, batched already
            scores = self.model.evaluate(data, verbose=0, return_dict=True)
        value = scores.get(self.monitor[len("val_"):])
        if value is None or not math.isfinite(float(value)):
            return
        self.best, self.best_epoch = float(value), 0
        self.best_weights = self._start_weights
        if self._rollback:
            self._best_optimizer = copy_values(optimizer_state(self.model.optimizer))
            self._best_lr = get_learning_rate(self.model.optimizer)

    def _best_source(self) -> str:
        """Where the best weights come from, for messages."""
        if self.best_epoch == 0:
            return "the start of this fit (no epoch beat it)"
        return f"the best epoch: {self.best_epoch}"

    def _observe_afresh(self, epochs: int) -> None:
        """Featurizer and frame stack start a run of ``epochs`` epochs (0: budget unknown)."""
        self.featurizer.reset(budget=max(1, epochs // self._validation_freq),
                              weights=self._trainable)
        self.pipeline.reset()

    def _set_learning_rate(self, lr: float) -> float:
        """Set the optimizer's rate to ``lr``; the rate as its float32 variable holds it."""
        set_learning_rate(self.model.optimizer, lr)
        return float(np.float32(lr))

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
            print_message(f"\nEpoch {epoch + 1}: LearnedController {name}, {change}"
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
        if self.probe_result is not None:
            probe = self.probe_result
            lines.insert(0, f"scale probe: {probe.batches} batches; valley {probe.valley:.3g}, "
                            f"steepest {probe.steepest:.3g}, minimum {probe.minimum:.3g}")
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
