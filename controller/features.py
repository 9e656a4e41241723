"""The observation featurizer: epoch logs in, a fixed-size task-agnostic vector out.

The training environment and the deployed callback both build observations
with this one class, from the same Keras epoch logs, so the policy sees the
world identically in both. Its config is versioned and written into every
controller bundle; a bundle of another featurizer version is refused.

Every feature is scale-free (log ratios, fractions, counts relative to the
budget), so a loss of 1e-4 or of 300, a budget of 10 or of 500 epochs look
alike to the policy.

Version 2 adds three weight-dynamics features (:mod:`fitpilot.controller.weight_signals`)
after the version-1 ones, which it leaves as they are: :meth:`Featurizer.observe` then
needs the model's trainable weights alongside the logs.

Version 3 (controller v3) adds the measured coordinates after the version-2 ones: the
learning rate relative to the three rates of the run's scale probe
(:mod:`fitpilot.controller.probe`), the probe's two descriptors, and a flag for the one
observation made before the first epoch (:meth:`Featurizer.observe_start`), on which the
policy takes its first decision. Its config holds the probe's settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fitpilot.controller.probe import ProbeConfig, ProbeResult
from fitpilot.controller.weight_signals import SAMPLE_SEED, SAMPLE_SIZE, WeightSignals
from fitpilot.errors import FitpilotError

#: The default featurizer version (what ``FeaturizerConfig()`` builds).
FEATURIZER_VERSION = 1
#: The versions this fitpilot reads.
FEATURIZER_VERSIONS = (1, 2, 3)

FEATURE_NAMES: tuple[str, ...] = (
    "progress",  # epochs run / epoch budget, in (0, 1]
    "log_val_vs_first",  # log(val / val after the first epoch)
    "log_val_vs_best",  # log(val / best val so far), >= 0
    "log_val_change",  # log(val_t / val_{t-1})
    "log_val_slope",  # mean log change of val over the last `window` epochs
    "val_noise",  # std of the log changes of val over the last `window` epochs
    "log_train_vs_first",  # log(train / train after the first epoch)
    "log_train_change",  # log(train_t / train_{t-1})
    "log_train_slope",  # mean log change of train over the last `window` epochs
    "log_gap",  # log(val / train): overfitting
    "since_best_short",  # epochs since the best val, capped at 10, / 10
    "since_best_budget",  # epochs since the best val / epoch budget
    "log10_lr_vs_initial",  # log10(lr / lr at the first epoch)
    "log10_lr_change",  # log10(lr_t / lr_{t-1}): what the last decision did
    "nonfinite",  # 1 if this epoch's train or val loss is NaN, inf or missing
)
#: Version 2: FEATURE_NAMES, then these (weight_signals.WeightSignalValues; 0 when undefined).
WEIGHT_FEATURE_NAMES: tuple[str, ...] = (
    "weight_update_cosine",  # cosine of the last two epochs' weight updates, in [-1, 1]
    "log10_update_ratio",  # log10(|w_t - w_{t-1}| / |w_t|), clipped
    "log10_distance_from_init",  # log10(|w_t - w_0| / |w_0|), clipped
)
#: Version 3: the version-2 names, then these (the measured coordinates; 0 when undefined).
PROBE_FEATURE_NAMES: tuple[str, ...] = (
    "log10_lr_vs_probe_valley",  # log10(lr / the probe's valley rate)
    "log10_lr_vs_probe_steepest",  # log10(lr / the probe's steepest-descent rate)
    "log10_lr_vs_probe_minimum",  # log10(lr / the rate of the probe's lowest loss)
    "probe_drop",  # log(lowest / first smoothed loss of the probe), <= 0
    "probe_diverged",  # 1 if the probe's ramp ended on a divergence
    "before_first_epoch",  # 1 on the observation before the first epoch (first decision)
)
# Settings only version 2 has (left out of a version-1 config's dict, which stays as it was).
_V2_SETTINGS = ("weight_sample", "weight_seed")
# Settings only version 3 has (left out of version-1 and -2 dicts).
_V3_SETTINGS = ("probe",)


class FeaturizerError(FitpilotError, ValueError):
    """A featurizer config this version of fitpilot cannot read."""


@dataclass(frozen=True)
class FeaturizerConfig:
    """Versioned settings of :class:`Featurizer`; serialised into bundles as a dict."""

    version: int = FEATURIZER_VERSION
    train_key: str = "loss"
    val_key: str = "val_loss"
    window: int = 3
    clip: float = 5.0
    weight_sample: int = SAMPLE_SIZE  # version 2: coordinates sampled for the weight signals
    weight_seed: int = SAMPLE_SEED  # version 2: the seed of that sample
    probe: ProbeConfig = ProbeConfig()  # version 3: the scale probe's settings

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The names of the observation's features, in order."""
        return (FEATURE_NAMES + (WEIGHT_FEATURE_NAMES if self.version >= 2 else ())
                + (PROBE_FEATURE_NAMES if self.version >= 3 else ()))

    @property
    def size(self) -> int:
        """The observation's length."""
        return len(self.feature_names)

    @property
    def uses_weights(self) -> bool:
        """Whether :meth:`Featurizer.observe` needs the model's weights (version 2)."""
        return self.version >= 2

    @property
    def uses_probe(self) -> bool:
        """Whether a run starts with the scale probe and a first decision (version 3)."""
        return self.version >= 3

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        dropped = (_V2_SETTINGS if self.version < 2 else ()) + (
            _V3_SETTINGS if self.version < 3 else ())
        for name in dropped:
            del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturizerConfig:
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise FeaturizerError(
                f"featurizer version {version!r} is a {type(version).__name__}, not an integer "
                f"(this fitpilot reads version {FEATURIZER_VERSION}); the bundle was edited or "
                f"damaged: re-export the controller"
            )
        if version not in FEATURIZER_VERSIONS:
            raise FeaturizerError(
                f"featurizer version {version} is not supported by this fitpilot "
                f"(it reads versions {', '.join(map(str, FEATURIZER_VERSIONS))}); retrain the "
                f"controller with this version or install the fitpilot version that made it"
            )
        fields = cls.__dataclass_fields__
        dropped = (_V2_SETTINGS if version < 2 else ()) + (_V3_SETTINGS if version < 3 else ())
        fields = {k: v for k, v in fields.items() if k not in dropped}
        unknown = set(data) - set(fields)
        if unknown:
            known = sorted(set(fields) - {"version"})
            raise FeaturizerError(
                f"unknown featurizer settings {sorted(unknown)}; known: {', '.join(known)}"
            )
        data = dict(data)
        if "probe" in data:
            probe = data.pop("probe")
            if not isinstance(probe, Mapping):
                raise FeaturizerError(f"featurizer setting probe={probe!r} must be a mapping")
            try:
                data["probe"] = ProbeConfig.from_dict(dict(probe))
            except FitpilotError as exc:
                raise FeaturizerError(f"featurizer setting probe: {exc}") from exc
        for name, value in data.items():
            if name == "probe":
                continue
            kind = type(fields[name].default)  # str, int or float
            allowed = (int, float) if kind is float else (kind,)
            if not isinstance(value, allowed) or isinstance(value, bool):
                raise FeaturizerError(
                    f"featurizer setting {name}={value!r} must be {kind.__name__}, not "
                    f"{type(value).__name__}"
                )
        return cls(**data)


class Featurizer:
    """Turns the history of epoch logs into observations of shape ``(config.size,)``.

    Call :meth:`reset` at the start of a run, then :meth:`observe` once per
    finished epoch with that epoch's logs and the learning rate it ran with.
    Missing keys, NaN and inf never produce a non-finite feature.

    Version 2 (``config.uses_weights``) also takes the model's trainable weights (the
    same variables every call): at :meth:`reset` (the weights the run starts from), at
    each :meth:`observe`, and at :meth:`rebase_weights` after weights were put back.

    Version 3 (``config.uses_probe``) takes the run's probe at :meth:`reset`, and
    :meth:`observe_start` gives the observation before the first epoch.
    """

    # Version 1's; an instance has its config's (``config.feature_names``, ``config.size``).
    feature_names = FEATURE_NAMES
    size = len(FEATURE_NAMES)

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.feature_names = self.config.feature_names
        self.size = self.config.size
        self.weight_signals = (
            WeightSignals(self.config.weight_sample, self.config.weight_seed)
            if self.config.uses_weights
            else None
        )
        self.reset(budget=1)

    def reset(
        self, budget: int, weights: Sequence[Any] | None = None, probe: ProbeResult | None = None
    ) -> None:
        """Start a new run with an epoch budget of ``budget`` epochs (>= 1).

        ``weights``: version 2, the trainable weights the run starts from (without them
        the first :meth:`observe` takes its weights as the start); version 1 ignores them.
        ``probe``: version 3, the run's scale probe (kept when omitted: a restart of the
        same run); versions 1 and 2 ignore it.
        """
        if probe is not None:
            self.probe = probe
        if self.weight_signals is not None:
            if weights is None:
                self.weight_signals.reset()
            else:
                self.weight_signals.start(weights)
        self.budget = max(1, int(budget))
        self.epochs = 0
        self._val: list[float] = []  # log of the last finite val loss, per epoch
        self._train: list[float] = []
        self._log_lr: list[float] = []
        self._best_log_val = math.inf
        self._best_epoch = 0

    probe: ProbeResult | None = None

    def observe_start(self, learning_rate: float) -> np.ndarray:
        """Version 3: the observation before the first epoch, at the rate the run would start
        with: the epoch and weight features 0, the probe's coordinates, ``before_first_epoch``
        1. The policy's first decision reads it."""
        cfg = self.config
        if not cfg.uses_probe:
            raise FeaturizerError(
                f"featurizer version {cfg.version} takes no decision before the first epoch"
            )
        epoch_part = np.zeros(len(cfg.feature_names) - len(PROBE_FEATURE_NAMES), np.float32)
        return self._finish(np.concatenate([epoch_part, self._probe_features(learning_rate, 1.0)]))

    def _probe_features(self, learning_rate: float, before_first: float) -> np.ndarray:
        """The measured coordinates of ``learning_rate`` (version 3)."""
        if self.probe is None:
            raise FeaturizerError(
                f"featurizer version {self.config.version} reads the run's scale probe: pass "
                f"`probe` to reset"
            )
        lr = math.log10(max(float(learning_rate), 1e-30))
        probe = self.probe
        return np.asarray(
            [lr - math.log10(rate) for rate in probe.rates]
            + [probe.drop, float(probe.diverged), before_first],
            dtype=np.float32,
        )

    def _finish(self, features: np.ndarray) -> np.ndarray:
        """float32, NaN as 0, clipped to ``[-clip, clip]``."""
        clip = self.config.clip
        obs = np.asarray(features, dtype=np.float32)
        return np.clip(np.nan_to_num(obs, nan=0.0, posinf=clip, neginf=-clip), -clip, clip)

    def rebase_weights(self, weights: Sequence[Any]) -> None:
        """The model's weights were put back to ``weights`` (a rollback); version 1: no-op."""
        if self.weight_signals is not None:
            self.weight_signals.rebase(weights)

    def observe(
        self, logs: Mapping[str, Any], learning_rate: float, weights: Sequence[Any] | None = None
    ) -> np.ndarray:
        """Record one finished epoch and return the observation, float32, all finite.

        Args:
            logs: the epoch logs (``loss``, ``val_loss``, ...); values may be NaN or missing.
            learning_rate: the learning rate the epoch was trained with (> 0).
            weights: the model's trainable weights after the epoch; version 2 needs them,
                version 1 ignores them.
        """
        cfg = self.config
        signals = None
        if self.weight_signals is not None:
            if weights is None:
                raise FeaturizerError(
                    f"featurizer version {cfg.version} reads the model's weights: pass "
                    f"`weights` (model.trainable_variables) to observe"
                )
            signals = self.weight_signals.update(weights)
        self.epochs += 1
        val, val_ok = self._log_value(logs.get(cfg.val_key), self._val)
        train, train_ok = self._log_value(logs.get(cfg.train_key), self._train)
        self._val.append(val)
        self._train.append(train)
        self._log_lr.append(math.log10(max(float(learning_rate), 1e-30)))
        if val_ok and val < self._best_log_val:
            self._best_log_val, self._best_epoch = val, self.epochs
        best = self._best_log_val if math.isfinite(self._best_log_val) else val
        since_best = self.epochs - self._best_epoch if self._best_epoch else self.epochs
        val_changes = _changes(self._val, cfg.window)
        train_changes = _changes(self._train, cfg.window)
        features = (
            self.epochs / self.budget,
            val - self._val[0],
            val - best,
            val_changes[-1] if val_changes else 0.0,
            _mean(val_changes),
            _std(val_changes),
            train - self._train[0],
            train_changes[-1] if train_changes else 0.0,
            _mean(train_changes),
            val - train,
            min(since_best, 10) / 10,
            since_best / self.budget,
            self._log_lr[-1] - self._log_lr[0],
            self._log_lr[-1] - self._log_lr[-2] if len(self._log_lr) > 1 else 0.0,
            0.0 if (val_ok and train_ok) else 1.0,
        )
        if signals is not None:
            with np.errstate(divide="ignore"):  # log10(0) = -inf, clipped below
                features += (
                    signals.cosine,
                    float(np.log10(signals.update_ratio)),
                    float(np.log10(signals.distance)),
                )
        obs = np.asarray(features, dtype=np.float32)
        if cfg.uses_probe:
            obs = np.concatenate([obs, self._probe_features(learning_rate, 0.0)])
        return self._finish(obs)

    @staticmethod
    def _log_value(value: Any, history: list[float]) -> tuple[float, bool]:
        """log(value) if finite and > 0, else the previous entry (or 0): (log value, ok)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number) and number > 0:
            return math.log(number), True
        if math.isfinite(number) and number <= 0:  # a loss can reach 0 (or go negative)
            return math.log(1e-12), True
        return (history[-1] if history else 0.0), False


def _changes(history: list[float], window: int) -> list[float]:
    """The last ``window`` successive differences of ``history`` (fewer early in a run)."""
    recent = history[-(window + 1) :]
    return [b - a for a, b in zip(recent[:-1], recent[1:], strict=True)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: list[float]) -> float:
    """Population standard deviation; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
