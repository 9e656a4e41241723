"""``KerasTrainingEnv``: a gymnasium environment whose steps are Keras epochs.

The class docstring is the environment's spec (spaces, rewards, episode end,
arguments), in the manner of Gymnasium's classic-control environments; its
observation and action tables are generated from the featurizer's
``FEATURE_NAMES`` and the default action scheme.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from fitpilot.controller.actions import (
    DEFAULT_MAX_LR,
    DEFAULT_MIN_LR,
    RESTART_FACTOR,
    ActionScheme,
    DiscreteActions,
    clamp_learning_rate,
    first_learning_rate,
    is_divergent,
    next_learning_rate,
    rollback_learning_rate,
)
from fitpilot.controller.features import Featurizer, FeaturizerConfig
from fitpilot.controller.probe import ProbeResult
from fitpilot.envs import (
    DEFAULT_DIVERGENCE_PENALTY,
    DEFAULT_EPOCH_COST,
    DEFAULT_LR_DISTRIBUTION,
    DEFAULT_LR_FACTOR_RANGE,
    DEFAULT_REWARD,
    DEFAULT_TUNED_FRACTION,
    ENV_ID,
)
from fitpilot.envs.loading import load_tasks
from fitpilot.envs.model_state import Logs
from fitpilot.envs.plateau_run import ReferenceCurves
from fitpilot.envs.runner import EpochRunner, make_runner
from fitpilot.envs.settings import EnvError, check_env_settings
from fitpilot.envs.tasks import TaskError, TrainingTask

__all__ = ["ENV_ID", "EnvError", "KerasTrainingEnv"]
#: ``"tuned"`` draws ``tuned_fraction`` of the starting rates within this factor of the tuned rate.
TUNED_SPREAD = 1.5
#: The keys ``reset(options=...)`` accepts.
RESET_OPTIONS = ("task", "learning_rate", "lr_factor")


class KerasTrainingEnv(gymnasium.Env):
    """Keras training as an MDP: one step is one epoch.

    ## Description

    Each episode trains one :class:`~fitpilot.envs.tasks.TrainingTask` (a model, its
    data, optimizer and epoch budget) from fresh seeded weights. ``reset`` trains the
    first epoch; each ``step(action)`` changes the learning rate (or stops) and trains
    one more epoch. With featurizer version 3 (controller v3) ``reset`` runs the scale
    probe instead (:mod:`~fitpilot.controller.probe`; once per task and seed, cached)
    and returns the observation before the first epoch; the first step's action is the
    first decision (keep the start, or a multiple of a probe rate) and trains epoch 1.
    The agent learns when to lower or raise the learning rate and when to stop: the
    deployed :class:`~fitpilot.controller.callback.LearnedController`
    sees the same observations and takes the same actions inside a user's ``fit``.

    ## Action Space

    By default (``DiscreteActions``) ``Discrete({n_actions})``: an int, the learning rate
    of the next epoch being the current one times a factor, clamped to
    ``[min_lr, max_lr]``; or stop.

{action_table}
    ``DiscreteActions.v2()`` (actions version 2) has the actions

        {v2_actions}

    where ``rollback`` puts back the best epoch's weights and optimizer state, then sets
    the best epoch's rate times ``rollback_factor``. ``DiscreteActions.v3()`` (version 3)
    has the same actions, and on the first step the same indices mean its first choices

        {v3_first}

    With ``ContinuousActions``: ``Box(-1, 1, (2,), float32)``; stop if ``a[1] > 0``,
    else the rate times ``10 ** (a[0] * max_log10_factor)``.

    ``step`` accepts exactly the values of the action space (an ``int`` or numpy
    integer; a float array of its shape within its bounds); anything else raises
    :class:`EnvError`.

    ## Observation Space

    ``Box(-clip, clip, (n,), float32)``, ``n`` = {n_features} (featurizer version 1),
    {n_features_v2} (version 2, which adds the weight features) or {n_features_v3}
    (version 3, which adds the rate's position relative to the scale probe's rates),
    ``clip`` = {clip} by
    default (each feature is clipped to it): features of the epoch logs so far, from
    :class:`~fitpilot.controller.features.Featurizer` (``FEATURE_NAMES`` and
    ``WEIGHT_FEATURE_NAMES``, where each is defined). ``val``/``train``: the
    validation/training loss (the featurizer's ``val_key``/``train_key``); ``log``:
    natural log of a ratio; ``lr``: learning rate. Every value is finite: a NaN or inf
    loss sets ``nonfinite``.

{observation_table}
    ## Rewards

    After each epoch, the improvement of the best ``monitor`` value (validation loss)
    on a log scale, ``log(best_before) - log(best_after)`` (>= 0), minus
    ``epoch_cost`` for every epoch after the first; 0 for the first epoch (``reset``)
    and for ``stop``. Over an episode the rewards add up to ``log(best after epoch 1 /
    best at the end) - epoch_cost * (epochs - 1)``: a good model, paid for with
    epochs. A divergence gives ``-divergence_penalty``. With featurizer version 3 the
    untrained weights' validation loss is the best before epoch 1, so the first step
    (the first decision and epoch 1) is paid for epoch 1's progress from it. A change
    of the rate against the direction of the last change costs ``reversal_cost``.

    With ``reward="relative"`` the same progress is paid *beyond a reference run*: the
    benchmark's ``ReduceLROnPlateau`` trained on the same task, seed and starting rate
    to the full budget ``T`` (trained once per such cell at ``reset``; see
    :mod:`~fitpilot.envs.plateau_run`), whose best ``monitor`` value after epoch
    ``t`` is ``R_t``. Epoch ``t``'s reward is ``[log B_(t-1) - log B_t] - [log R_(t-1) -
    log R_t] - epoch_cost`` (``B``: the policy's best), a stop after epoch ``t`` pays
    ``log R_T - log R_t`` (the progress the reference still made), and a divergence
    after epoch ``t - 1`` pays ``log R_T - log R_(t-1) - divergence_penalty``. Over an
    episode the rewards add up to ``log(R_T / B_end) - epoch_cost * (epochs - 1)``
    (minus the penalty): zero for matching the heuristic, negative for harm. Needs a
    runner that trains one run alone (not the batched copies).

    ## Starting State

    A task drawn uniformly (or ``options["task"]``), fresh weights and data order
    from the episode seed, and a starting learning rate: the task's default times a
    factor drawn log-uniformly from ``lr_factor_range`` (see ``lr_distribution``),
    or ``options["learning_rate"]`` / ``options["lr_factor"]``, clamped to
    ``[min_lr, max_lr]``.

    ## Episode End

    The episode terminates (never truncates) on ``stop``, when the epoch budget
    (``task.epochs``) is spent, or on a divergence (``loss`` or ``monitor`` NaN, inf or
    missing). The terminal step restores the best weights and reports the test
    split's metrics in ``info["test"]``. If the first epoch diverges, ``reset``'s info
    has ``diverged_at_reset`` and the next step ends the episode. With ``restarts`` a NaN
    or inf before any finite epoch does not end it: as the deployed callback does, the
    run starts over from its initial weights at a tenth of the rate, as a fresh run of
    the epochs left, whose first epoch the same step trains (``info["restarted"]``; the
    step pays ``divergence_penalty``); at most ``restarts`` times. After the end,
    ``step`` raises ``gymnasium.error.ResetNeeded`` until ``reset``.

    ## Info

    ``task``, ``epoch``, ``budget``, ``learning_rate``, ``initial_learning_rate``,
    ``logs`` (the epoch's Keras logs), ``best`` and ``best_epoch`` (of ``monitor``),
    ``action``, ``diverged``; at the end also ``test``.

    ## Reset Options

    ``task`` (a name or an index into ``tasks``), ``learning_rate`` (absolute) or
    ``lr_factor`` (times the task's default learning rate); other keys raise
    :class:`EnvError`.

    ## Arguments

    Args:
        tasks: a suite name, an import path ``module:NAME``, or a list of tasks.
        featurizer: featurizer settings (the default is what bundles record).
        actions: the action scheme; discrete lower / keep / raise / stop by default.
        lr_factor_range: the starting lr is the task's default times a factor drawn
            log-uniformly from this range.
        lr_distribution: ``"default"`` (as above) or ``"tuned"``: the starting lr is the
            task's ``tuned_learning_rate`` times a factor drawn log-uniformly within
            ``TUNED_SPREAD`` (x1/1.5 .. x1.5) with probability ``tuned_fraction``, else
            log-uniformly from ``lr_factor_range``. Every task needs a tuned rate.
        tuned_fraction: see ``lr_distribution``; in ``[0, 1]``.
        epoch_cost: reward paid per epoch trained after the first.
        divergence_penalty: reward (negated) when the loss becomes NaN or inf.
        min_lr, max_lr: absolute clamp of the learning rate.
        monitor: the validation key whose best value the reward follows.
        reward: ``"absolute"`` or ``"relative"`` (see Rewards).
        restarts: restarts after a NaN or inf before any finite epoch (see Episode End).
        reversal_cost: reward paid per change of the rate against the last change's
            direction (see Rewards).
        seed_pool: draw each episode's seed (weights, data order) from this many seeds
            (0: any); with version 3 each (task, seed)'s probe is then measured once.

    ## Example

    ::

        import fitpilot, gymnasium
        env = gymnasium.make("{env_id}", tasks="train")
        obs, info = env.reset(seed=0, options={"task": "digits_mlp", "lr_factor": 10.0})
        obs, reward, terminated, truncated, info = env.step(0)  # lower the rate
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        tasks: str | Sequence[TrainingTask] = "train",
        featurizer: FeaturizerConfig | None = None,
        actions: ActionScheme | None = None,
        lr_factor_range: tuple[float, float] = DEFAULT_LR_FACTOR_RANGE,
        epoch_cost: float = DEFAULT_EPOCH_COST,
        divergence_penalty: float = DEFAULT_DIVERGENCE_PENALTY,
        min_lr: float = DEFAULT_MIN_LR,
        max_lr: float = DEFAULT_MAX_LR,
        monitor: str = "val_loss",
        lr_distribution: str = DEFAULT_LR_DISTRIBUTION,
        tuned_fraction: float = DEFAULT_TUNED_FRACTION,
        reward: str = DEFAULT_REWARD,
        restarts: int = 0,
        reversal_cost: float = 0.0,
        seed_pool: int = 0,
    ) -> None:
        self.tasks = load_tasks(tasks) if isinstance(tasks, str) else list(tasks)
        if not self.tasks:
            raise TaskError("KerasTrainingEnv needs at least one task")
        self.featurizer = Featurizer(featurizer)
        self.actions = actions or DiscreteActions()
        check_env_settings(
            lr_factor_range=lr_factor_range, lr_distribution=lr_distribution,
            tuned_fraction=tuned_fraction, reward=reward, restarts=restarts,
            reversal_cost=reversal_cost, seed_pool=seed_pool,
            uses_probe=self.featurizer.config.uses_probe,
            has_first_decision=bool(getattr(self.actions, "first", ())),
        )
        low, high = lr_factor_range
        self.lr_factor_range = (float(low), float(high))
        self.lr_distribution = lr_distribution
        self.reward = reward
        self.reference_curves = ReferenceCurves()
        self.tuned_fraction = float(tuned_fraction)
        self.epoch_cost = float(epoch_cost)
        self.divergence_penalty = float(divergence_penalty)
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.monitor = monitor
        self.restarts = restarts
        self.reversal_cost = float(reversal_cost)
        self.seed_pool = seed_pool
        self.action_space = self.actions.space()
        clip = self.featurizer.config.clip
        self.observation_space = gymnasium.spaces.Box(
            -clip, clip, shape=(self.featurizer.size,), dtype=np.float32
        )
        self._runners: dict[str, EpochRunner] = {}  # one per task name, built on first use
        # The episode, set by reset and each epoch:
        self.runner: EpochRunner | None = None
        self.task: TrainingTask | None = None
        self.initial_learning_rate = math.nan
        self.logs: Logs = {}  # the last epoch's
        self.best, self.best_epoch = math.inf, 0  # of the monitor value
        self.last_action = "start"
        self._epoch_lr = math.nan  # the rate the next (or last) epoch trains with
        self._best_lr = math.nan  # the rate of the best epoch
        self._reference: np.ndarray | None = None  # relative reward: the cell's R_t, t = 1..T
        # Version 3: the scale probe and the initial validation loss per (task, seed), the
        # episode's probe, and whether the first decision (before epoch 1) is still to come.
        self._probes: dict[tuple[str, int], tuple[ProbeResult, float]] = {}
        self.probe: ProbeResult | None = None
        self._awaiting_first = False
        self._seed = 0
        self._epoch_offset = 0  # epochs spent before the last restart
        self._finite_epochs = 0
        self._restarts_left = 0
        self._direction = 0  # of the last change of the rate: -1, 0 (none yet) or +1
        self._step_cost = 0.0  # reward owed by the step being taken (a reversal)
        self._last_obs = np.zeros(self.observation_space.shape, np.float32)
        self._done = False  # the last epoch ended the episode (budget or divergence)
        self._needs_reset = False  # a step returned terminated: only reset may follow

    # -- gymnasium API -------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode and train its first epoch (version 3: measure the scale and
        observe, the first decision and epoch being the first step).

        ``options`` may fix ``"task"`` (name or index), and ``"learning_rate"`` or
        ``"lr_factor"`` (times the task default, whatever ``lr_distribution``) instead
        of sampling them.
        """
        self.begin_reset(seed=seed, options=options)
        assert self.runner is not None
        if self._awaiting_first:
            return self.start_observation()
        return self.end_reset(self.runner.run_epoch())

    def begin_reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """:meth:`reset` up to its first epoch: task, starting lr, runner reset.

        ``reset`` is ``begin_reset``, the runner's ``run_epoch()``, then :meth:`end_reset`
        with the epoch's logs (a batched environment trains that epoch of many copies in
        one call between the two).
        """
        super().reset(seed=seed)
        options = _checked_options(options)
        self.task = self._pick_task(options.get("task"))
        if options.get("learning_rate") is not None:
            lr = options["learning_rate"]
        elif options.get("lr_factor") is not None:
            lr = self.task.learning_rate * options["lr_factor"]
        else:
            lr = self.sample_learning_rate(self.task)
        lr = clamp_learning_rate(lr, self.min_lr, self.max_lr)
        self.runner = self._runner_for(self.task)
        if getattr(self.actions, "rollback", False):  # actions v2: snapshots with optimizer state
            self.runner.track_optimizer_state()
        seed = int(self.np_random.integers(self.seed_pool or 2**31 - 1))
        if self.reward == "relative":
            self._reference = self.reference_curves.get(
                self.task.name, self.runner, seed, lr, self.task.epochs, self.monitor
            )
        self.runner.reset(seed=seed, learning_rate=lr)
        self._seed = seed
        self.probe, start_val = self._probe_for(seed) if self.featurizer.config.uses_probe \
            else (None, math.inf)
        self.featurizer.reset(budget=self.task.epochs, weights=self._weights(), probe=self.probe)
        self.initial_learning_rate = lr
        self.best = math.inf
        self.best_epoch = 0
        self.last_action = "start"
        self._epoch_lr = lr
        self._best_lr = lr
        self._needs_reset = False
        self._epoch_offset = self._finite_epochs = 0
        self._restarts_left = self.restarts
        self._direction, self._step_cost = 0, 0.0
        self._awaiting_first = self.probe is not None
        if self._awaiting_first and math.isfinite(start_val):
            # The untrained weights are the best until an epoch beats them: the first
            # decision is paid for epoch 1's progress from them.
            self.best = start_val
            self.runner.remember_weights()

    def start_observation(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Version 3, :meth:`reset` after :meth:`begin_reset`: the observation before the first
        epoch, on which the first step's action is the first decision."""
        assert self.probe is not None
        self._last_obs = self.featurizer.observe_start(self._epoch_lr)
        info = self._info(final=False)
        info["probe"] = self.probe.to_dict()
        return self._last_obs, info

    def end_reset(self, logs: Logs) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`reset` after its first epoch, given that epoch's ``logs``."""
        obs, _, terminated, info = self._epoch_result(logs)
        if terminated:  # diverged in the first epoch: the episode still has to start
            info["diverged_at_reset"] = True
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ended = self.begin_step(action)
        if ended is not None:
            return ended
        assert self.runner is not None
        return self.end_step(self.runner.run_epoch())

    def begin_step(
        self, action: Any
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]] | None:
        """:meth:`step` up to its epoch: apply ``action``.

        Returns the step's result if it ends the episode without training (stop, or
        the episode is over), else None: train an epoch and pass its logs to
        :meth:`end_step` (as ``step`` does).
        """
        if self.runner is None or self.task is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        if self._needs_reset:
            raise gymnasium.error.ResetNeeded(
                "the episode has ended (a step returned terminated=True); call reset() "
                "before step()"
            )
        self._check_action(action)
        if self._awaiting_first:  # version 3: the first decision, then epoch 1
            assert self.probe is not None
            decision = self.actions.decode(action, first=True)
            self.last_action = decision.name
            lr = first_learning_rate(self.initial_learning_rate, decision, self.probe.anchors,
                                     self.min_lr, self.max_lr)
            self._set_rate(lr)
            self._best_lr = lr  # the untrained weights' stand-in rate, for a rollback to them
            self._awaiting_first = False
            return None
        decision = self.actions.decode(action)
        self.last_action = decision.name
        if decision.stop or self._done:  # _done: the epoch of reset diverged
            self._needs_reset = True
            forfeited = 0.0 if self._done else self._reference_progress_after(self.epoch)
            return self._last_obs.copy(), 0.0 - forfeited, True, False, self._info(final=True)
        previous = self.runner.learning_rate
        if decision.rollback:  # the best epoch's weights, optimizer state and rate
            self.runner.restore_weights()
            self.featurizer.rebase_weights(self._weights() or [])
            lr = rollback_learning_rate(self._best_lr, decision, self.min_lr, self.max_lr)
        else:
            lr = next_learning_rate(previous, decision, self.min_lr, self.max_lr)
        self._set_rate(lr)
        return None

    @property
    def epoch(self) -> int:
        """Epochs trained in this episode (those before a restart included)."""
        return (self.runner.epoch if self.runner is not None else 0) + self._epoch_offset

    def _set_rate(self, lr: float) -> None:
        """The next epoch's rate; a change against the last change's direction costs
        ``reversal_cost`` (a saw-tooth rate path)."""
        assert self.runner is not None
        previous = self.runner.learning_rate
        if lr != previous:
            self.runner.learning_rate = lr
            direction = 1 if lr > previous else -1
            if self._direction and direction != self._direction:
                self._step_cost += self.reversal_cost
            self._direction = direction
        self._epoch_lr = lr

    def end_step(self, logs: Logs) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:meth:`step` after its epoch, given that epoch's ``logs``."""
        obs, reward, terminated, info = self._epoch_result(logs)
        self._needs_reset = terminated
        return obs, reward, terminated, False, info

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self.runner = None

    def sample_learning_rate(self, task: TrainingTask) -> float:
        """A starting learning rate for ``task`` from ``lr_distribution`` (not yet clamped)."""
        low, high = np.log(self.lr_factor_range)
        if self.lr_distribution == "default":
            return task.learning_rate * float(np.exp(self.np_random.uniform(low, high)))
        if task.tuned_learning_rate is None:
            raise TaskError(
                f"task {task.name!r} has no tuned_learning_rate, which lr_distribution="
                f"'tuned' needs; set it (see experiments/tune_suite.py) or use "
                f"lr_distribution='default'"
            )
        if self.np_random.uniform() < self.tuned_fraction:
            low, high = -math.log(TUNED_SPREAD), math.log(TUNED_SPREAD)
        return task.tuned_learning_rate * float(np.exp(self.np_random.uniform(low, high)))

    # -- internals -----------------------------------------------------------

    def _epoch_result(self, logs: Logs) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """Observation, reward, termination and info after an epoch with ``logs``."""
        assert self.runner is not None and self.task is not None
        self.logs = logs
        self._last_obs = self.featurizer.observe(self.logs, self._epoch_lr, self._weights())
        value = self.logs.get(self.monitor, math.nan)
        epoch = self.epoch
        if is_divergent(self.logs, ("loss", self.monitor)):
            if self._finite_epochs == 0 and self._restarts_left > 0 and epoch < self.task.epochs:
                return self._restart()
            self._done = True
            forfeited = self._reference_progress_after(epoch - 1) if epoch > 1 else 0.0
            return self._last_obs, -self.divergence_penalty - forfeited, True, self._info(
                final=True, diverged=True
            )
        self._finite_epochs += 1
        reward = (0.0 if epoch == 1 else -self.epoch_cost) - self._step_cost
        self._step_cost = 0.0
        if value < self.best:
            if math.isfinite(self.best):
                reward += _log(self.best) - _log(value)
            self.best, self.best_epoch = value, epoch
            self._best_lr = self._epoch_lr
            self.runner.remember_weights()
        if epoch > 1:  # the reference's progress in the same epoch is the bar
            reward -= self._reference_progress(epoch - 1, epoch)
        terminated = epoch >= self.task.epochs
        self._done = terminated
        return self._last_obs, float(reward), terminated, self._info(final=terminated)

    def _restart(self) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """A NaN or inf before any finite epoch, with restarts left: as the callback does, start
        over from the initial weights and optimizer state at ``RESTART_FACTOR`` of the rate, as
        a fresh run of the epochs left, and train its first epoch without a decision (the
        callback asks the policy only after a finite epoch). The step pays
        ``divergence_penalty`` on top of what that epoch earns."""
        assert self.runner is not None and self.task is not None
        self._restarts_left -= 1
        self._epoch_offset = self.epoch
        lr = clamp_learning_rate(self._epoch_lr * RESTART_FACTOR, self.min_lr, self.max_lr)
        self.runner.reset(seed=self._seed, learning_rate=lr)
        self.featurizer.reset(budget=max(1, self.task.epochs - self._epoch_offset),
                              weights=self._weights())
        if self.probe is not None and math.isfinite(self.best):  # the untrained weights, again
            self.runner.remember_weights()
        self._epoch_lr = self._best_lr = lr
        self.last_action = "restart"
        obs, reward, terminated, info = self._epoch_result(self.runner.run_epoch())
        info["restarted"] = True
        return obs, reward - self.divergence_penalty, terminated, info

    def _probe_for(self, seed: int) -> tuple[ProbeResult, float]:
        """The scale probe of the episode's task and seed, and the validation loss of the
        initial weights (computed once per task and seed: neither depends on the start)."""
        assert self.runner is not None and self.task is not None
        key = (self.task.name, seed)
        if key not in self._probes:
            self._probes[key] = self.runner.scale_probe(self.featurizer.config.probe)
        return self._probes[key]

    def _reference_progress(self, start: int, end: int) -> float:
        """``log R_start - log R_end`` (epochs, 1-based) with ``reward="relative"``, else 0.

        0 too while the reference has no finite best at ``start`` (its first epoch
        diverged, as the policy's then did).
        """
        if self._reference is None:  # only reset with reward="relative" sets it
            return 0.0
        before, after = self._reference[start - 1], self._reference[end - 1]
        return _log(before) - _log(after) if math.isfinite(before) else 0.0

    def _reference_progress_after(self, epoch: int) -> float:
        """The reference's progress from ``epoch`` to the end of the budget (see above)."""
        assert self.task is not None
        return self._reference_progress(epoch, self.task.epochs)

    def _info(self, final: bool, diverged: bool = False) -> dict[str, Any]:
        assert self.runner is not None and self.task is not None
        info: dict[str, Any] = {
            "task": self.task.name,
            "epoch": self.epoch,
            "budget": self.task.epochs,
            "learning_rate": self.runner.learning_rate,
            "initial_learning_rate": self.initial_learning_rate,
            "logs": dict(self.logs),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "action": self.last_action,
            "diverged": diverged,
        }
        if final:
            if self.best_epoch or (self.probe is not None and math.isfinite(self.best)):
                self.runner.restore_weights()
                info["test"] = self.runner.evaluate_test()
            else:
                info["test"] = {"loss": math.nan}
        return info

    def _check_action(self, action: Any) -> None:
        """Raise :class:`EnvError` unless ``action`` is, as given, a value of the action space."""
        space = self.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            integer = isinstance(action, (int, np.integer)) or (
                isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu"
            )
            valid = integer and not isinstance(action, bool) and space.contains(action)
            wanted = f"an int in 0..{space.n - 1} ({', '.join(self.actions.names)})"
        else:
            valid = (
                isinstance(action, np.ndarray)
                and action.dtype.kind == "f"
                and action.shape == space.shape
                and bool(np.all(np.isfinite(action)))
                and bool(np.all((space.low <= action) & (action <= space.high)))
            )
            bounds = f"[{space.low.min()}, {space.high.max()}]"
            wanted = f"a float array of shape {space.shape} with values in {bounds}"
        if not valid:
            raise EnvError(f"action {action!r} is not in the action space {space}; give {wanted}")

    def _pick_task(self, choice: Any) -> TrainingTask:
        if choice is None:
            return self.tasks[int(self.np_random.integers(len(self.tasks)))]
        names = [t.name for t in self.tasks]
        if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            if not 0 <= choice < len(self.tasks):
                raise TaskError(
                    f"reset option `task` is {choice}, outside 0..{len(self.tasks) - 1}; give "
                    f"a task index in that range or a task name ({', '.join(names)})"
                )
            return self.tasks[int(choice)]
        if isinstance(choice, str):
            for task in self.tasks:
                if task.name == choice:
                    return task
            raise TaskError(f"no task named {choice!r}; tasks are {names}")
        raise TaskError(
            f"reset option `task` must be a task name or index, got {choice!r}; tasks are {names}"
        )

    def _weights(self) -> list[Any] | None:
        """The model's trainable weights if the featurizer reads them (version 2), else None."""
        if not self.featurizer.config.uses_weights:
            return None
        assert self.runner is not None
        return self.runner.trainable_weights()

    def _runner_for(self, task: TrainingTask) -> EpochRunner:
        if task.name not in self._runners:
            self._runners[task.name] = make_runner(task)
        return self._runners[task.name]


def _log(value: float) -> float:
    """Natural log of a loss, floored at 1e-12 (a loss of 0 stays finite)."""
    return math.log(max(value, 1e-12))


def _checked_options(options: Any) -> dict[str, Any]:
    """``reset``'s options as a dict; known keys only, learning rates positive and finite."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise EnvError(f"reset options must be a dict, got {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in RESET_OPTIONS)
    if unknown:
        raise EnvError(
            f"unknown reset option(s) {', '.join(unknown)}; the options are "
            f"{', '.join(RESET_OPTIONS)}"
        )
    checked = dict(options)
    given = [key for key in ("learning_rate", "lr_factor") if checked.get(key) is not None]
    if len(given) > 1:
        raise EnvError("give the reset option `learning_rate` or `lr_factor`, not both")
    for key in given:
        value = checked[key]
        number = isinstance(value, (int, float, np.integer, np.floating))
        if isinstance(value, bool) or not number or not (math.isfinite(value) and value > 0):
            raise EnvError(f"reset option `{key}` must be a positive finite number, got {value!r}")
        checked[key] = float(value)
    return checked


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A Markdown table with aligned columns, indented for a class docstring."""
    cells = [header, *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [cells[0], tuple("-" * width for width in widths), *cells[1:]]
    return "".join(
        "    | " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |\n"
        for line in lines
    )


def _spec_tables() -> dict[str, Any]:
    """The generated parts of :class:`KerasTrainingEnv`'s docstring."""
    actions = DiscreteActions()
    effects = [f"lr x {factor:.3g}" for factor in actions.factors] + ["end the episode"]
    v1, v2 = FeaturizerConfig().feature_names, FeaturizerConfig(version=2).feature_names
    v3 = FeaturizerConfig(version=3).feature_names
    return {
        "env_id": ENV_ID,
        "n_actions": actions.n,
        "action_table": _table(
            ("Num", "Action", "Effect"),
            list(zip(range(actions.n), actions.names, effects, strict=True)),
        ),
        "v2_actions": ", ".join(
            f"{i} ``{name}``" for i, name in enumerate(DiscreteActions.v2().names)
        ),
        "n_features": len(v1),
        "n_features_v2": len(v2),
        "n_features_v3": len(v3),
        "v3_first": ", ".join(
            f"{i} ``{name}``" for i, name in enumerate(DiscreteActions.v3().first_names)
        ),
        "clip": FeaturizerConfig().clip,
        "observation_table": _table(
            ("Num", "Observation", "Featurizer version"),
            [(i, name, 1 if name in v1 else 2 if name in v2 else 3)
             for i, name in enumerate(v3)],
        ),
    }


for _key, _value in _spec_tables().items():
    KerasTrainingEnv.__doc__ = KerasTrainingEnv.__doc__.replace(f"{{{_key}}}", str(_value))

