"""A training recipe in one object: algorithm, tasks, budget, hyperparameters, env settings.

A recipe is built in layers, later layers win: the algorithm's versioned
hyperparameter file (``agents/hyperparams/<algo>.yaml``), the recipe of the
run being resumed, a recipe YAML file (``fitpilot train --config``), options,
then single ``hp`` / ``env`` overrides (``--hp key=value``, ``--env key=value``).
``config.yaml`` in a run folder is :meth:`TrainConfig.to_dict` of the recipe used.

This module does not import torch; :func:`check_hyperparameters` imports
stable-baselines3 to compare keys with the algorithm's signature.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fitpilot.controller.actions import (
    ACTIONS_VERSION,
    DEFAULT_MAX_LR,
    DEFAULT_MIN_LR,
    ActionScheme,
    ContinuousActions,
    DiscreteActions,
    action_scheme_from_dict,
)
from fitpilot.controller.features import FeaturizerConfig
from fitpilot.envs import (
    DEFAULT_DIVERGENCE_PENALTY,
    DEFAULT_EPOCH_COST,
    DEFAULT_LR_DISTRIBUTION,
    DEFAULT_LR_FACTOR_RANGE,
    DEFAULT_REWARD,
    DEFAULT_TUNED_FRACTION,
)
from fitpilot.envs.settings import EnvError, check_env_settings
from fitpilot.errors import FitpilotError

ALGORITHMS = ("ppo", "a2c", "dqn")
# How the environments run: a process each, all in this process, or batched copies of a task.
VEC_ENVS = ("subproc", "dummy", "batched")
# Where they run: here (processes of this machine), or as Ray actors.
BACKENDS = ("local", "ray")
# What `vec='batched'` does with the episodes running when a lane's turn on a task ends.
TASK_SWITCHES = ("cut", "pause")
# TensorFlow threads of each environment process (or of the process holding batched copies).
WORKER_THREADS = 1
# Keyword arguments of the algorithm classes that `fitpilot train` sets itself.
RESERVED_HP = ("policy", "env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model")
# Keys that define what a run learns: resuming with other values is refused.
RUN_KEYS = ("algo", "suite", "tasks", "seed", "stop_bias", "hp", "env")
ACTIVATIONS = ("tanh", "relu")


class TrainError(FitpilotError):
    """A training recipe, run folder or checkpoint that cannot be used."""


class RecipeLoader(yaml.SafeLoader):
    """YAML that reads numbers as people write them: ``1e-4`` and ``2E3`` are floats.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``) and ``1e-4``
    is the string ``"1e-4"``; YAML 1.2 and Python read it as a float, as here.
    """


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """A recipe's YAML text (file, ``config.yaml`` or a ``key=value`` value) as Python data."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader)


@dataclass
class EnvSettings:
    """Environment and observation settings of a training run (all written into the bundle).

    Attributes:
        epoch_cost: reward paid per epoch after the first (log-loss units).
        divergence_penalty: reward (negated) when the loss becomes NaN or inf.
        lr_factor_range: starting lr = task default x a log-uniform factor from this range.
        lr_distribution: ``"default"`` (as above) or ``"tuned"``: around each task's
            ``tuned_learning_rate``, ``tuned_fraction`` of the starts within x1.5 of it,
            the rest x a log-uniform factor from ``lr_factor_range``.
        tuned_fraction: the share of starts near the tuned rate (``"tuned"`` only).
        reward: ``"absolute"`` (the policy's own progress) or ``"relative"`` (its progress
            beyond a ``ReduceLROnPlateau`` reference run of the same cell; single-run
            environments only, see :class:`~fitpilot.envs.env.KerasTrainingEnv`).
        min_lr, max_lr: absolute clamp of the learning rate.
        actions: the action scheme without its version, e.g.
            ``{"kind": "discrete", "factors": [0.333, 1, 3]}`` or
            ``{"kind": "continuous", "max_log10_factor": 0.5}``.
        featurizer: :class:`FeaturizerConfig` fields (``version`` only when it is not 1;
            version 3, controller v3, measures the scale first: it takes an action scheme
            with ``first`` choices, and its ``probe`` settings).
        restarts: a NaN or inf before any finite epoch restarts the run at a tenth of the
            rate, at most this many times, as the deployed callback does (0: the episode ends).
        reversal_cost: reward paid when the rate changes direction (a raise after a cut, or
            the reverse): a saw-tooth rate path costs.
        seed_pool: episodes draw their seed (initial weights, data order) from this many
            seeds (0: any): version 3 then measures each (task, seed)'s scale probe once.
        frame_stack: observations stacked, oldest first (1 = the current one only).
        norm_reward: scale rewards by a running return std (VecNormalize).
        clip_obs: normalised observations are clipped to ``[-clip_obs, clip_obs]``.
    """

    epoch_cost: float = DEFAULT_EPOCH_COST
    divergence_penalty: float = DEFAULT_DIVERGENCE_PENALTY
    lr_factor_range: tuple[float, float] = DEFAULT_LR_FACTOR_RANGE
    lr_distribution: str = DEFAULT_LR_DISTRIBUTION
    tuned_fraction: float = DEFAULT_TUNED_FRACTION
    reward: str = DEFAULT_REWARD
    min_lr: float = DEFAULT_MIN_LR
    max_lr: float = DEFAULT_MAX_LR
    actions: dict[str, Any] = field(default_factory=lambda: {"kind": "discrete"})
    featurizer: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    reversal_cost: float = 0.0
    seed_pool: int = 0
    frame_stack: int = 2
    norm_reward: bool = True
    clip_obs: float = 10.0

    def __post_init__(self) -> None:
        """Spell out every action and featurizer setting, defaults included (for config.yaml)."""
        scheme, featurizer = self.action_scheme().to_dict(), self.featurizer_config().to_dict()
        self.actions = {k: v for k, v in scheme.items() if k != "version"}
        # The default version goes unsaid (config.yaml of v1 recipes stays as it was); another is
        # kept, or featurizer_config() would read its settings against the default version.
        default = FeaturizerConfig().version
        self.featurizer = {
            k: v for k, v in featurizer.items() if k != "version" or v != default
        }

    def action_scheme(self) -> ActionScheme:
        """The scheme of ``actions``; settings it leaves out take the scheme's defaults."""
        kind = self.actions.get("kind", "discrete")
        defaults = {"discrete": DiscreteActions, "continuous": ContinuousActions}.get(kind)
        base = defaults().to_dict() if defaults else {}
        try:
            return action_scheme_from_dict({**base, **self.actions, "version": ACTIONS_VERSION})
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainError(f"bad env.actions {self.actions}: {exc}") from exc

    def featurizer_config(self) -> FeaturizerConfig:
        return FeaturizerConfig.from_dict(
            {"version": FeaturizerConfig().version, **self.featurizer}
        )

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~fitpilot.envs.env.KerasTrainingEnv` (without tasks)."""
        return {
            "featurizer": self.featurizer_config(),
            "actions": self.action_scheme(),
            "lr_factor_range": tuple(self.lr_factor_range),
            "lr_distribution": self.lr_distribution,
            "tuned_fraction": self.tuned_fraction,
            "reward": self.reward,
            "epoch_cost": self.epoch_cost,
            "divergence_penalty": self.divergence_penalty,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "restarts": int(self.restarts),
            "reversal_cost": float(self.reversal_cost),
            "seed_pool": int(self.seed_pool),
        }

    def check(self) -> None:
        """Raise :class:`TrainError` unless every setting can be used."""
        self.action_scheme()
        self.featurizer_config()
        if int(self.frame_stack) < 1:
            raise TrainError(f"env.frame_stack must be >= 1, got {self.frame_stack}")
        try:
            check_env_settings(
                lr_factor_range=tuple(self.lr_factor_range),
                lr_distribution=self.lr_distribution, tuned_fraction=self.tuned_fraction,
                reward=self.reward, restarts=self.restarts, reversal_cost=self.reversal_cost,
                seed_pool=self.seed_pool, uses_probe=self.featurizer_config().uses_probe,
                has_first_decision=bool(getattr(self.action_scheme(), "first", ())),
            )
        except EnvError as exc:
            raise TrainError(f"env.{exc}") from None

    def batched_obstacles(self) -> list[str]:
        """The settings that need single-run environments (``vec`` subproc or dummy)."""
        obstacles = []
        if self.reward == "relative":
            obstacles.append("env.reward 'relative' (reference runs)")
        if self.featurizer_config().uses_probe:
            obstacles.append("env.featurizer version 3 (the scale probe)")
        return obstacles


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``hp`` is the full, merged hyperparameter set.

    ``stop_bias`` is added to the initial output of the policy's stop unit (PPO/A2C):
    the stop logit of discrete actions, the mean of the stop dimension of continuous
    ones. With uniform initial logits a quarter of the exploring actions stop, so
    episodes last ~4 epochs and the agent hardly sees later training; -3 (the packaged
    default) makes an initial stop ~1.6% likely.

    ``processes`` (``vec='batched'`` only) splits the ``n_envs`` copies into that many
    groups, a worker process each (1: all in this process; 0: one per CPU core, at most
    ``n_envs``). Each process holds its own TensorFlow and compiled tasks.

    ``lanes``, ``turn_budgets`` and ``task_switch`` (``vec='batched'`` only) say how the
    copies mix tasks (:class:`~fitpilot.agents.batched_vecenv.BatchedVecEnv`): ``lanes``
    tasks train at once, on ``n_envs / lanes`` copies each; a lane holds a task for
    ``turn_budgets`` times its epoch budget in steps, then moves on, its running
    episodes ``"cut"`` (truncated) or paused (``"pause"``, resumed at the task's next turn).
    """

    algo: str = "ppo"
    suite: str | None = None
    tasks: str | None = None
    timesteps: int = 100_000
    n_envs: int = 2
    vec: str = "subproc"
    processes: int = 1
    backend: str = "local"
    lanes: int = 1
    turn_budgets: float = 4.0
    task_switch: str = "cut"
    seed: int = 0
    eval_every: int = 5000
    eval_tasks: str = "holdout"
    eval_factors: tuple[float, ...] = (0.1, 1.0, 10.0)
    checkpoint_every: int = 10_000
    stop_bias: float = 0.0
    hp: dict[str, Any] = field(default_factory=dict)
    hyperparams_version: int = 0
    env: EnvSettings = field(default_factory=EnvSettings)

    def batched_processes(self) -> int:
        """Worker processes of ``vec='batched'``: ``processes``, or one per core if 0."""
        return self.processes or min(os.cpu_count() or 1, self.n_envs)

    @property
    def task_spec(self) -> str:
        """The suite name or import path the training environments load."""
        return self.tasks or self.suite or "train"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eval_factors"] = list(self.eval_factors)
        data["env"]["lr_factor_range"] = list(self.env.lr_factor_range)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        data = dict(data)
        _refuse_unknown("config", data, [f.name for f in fields(cls)])
        env = data.pop("env", None) or {}
        if not isinstance(env, Mapping):
            raise TrainError(f"env must be a mapping of key: value, got {env!r}")
        _refuse_unknown("env", env, [f.name for f in fields(EnvSettings)])
        settings = EnvSettings(**_typed(EnvSettings, env, "env."))
        return cls(**_typed(cls, data), env=settings)

    def _check_lanes(self) -> None:
        """The settings of how batched copies mix tasks (see the class docstring)."""
        default = TrainConfig()
        changed = [
            name
            for name in ("lanes", "turn_budgets", "task_switch")
            if getattr(self, name) != getattr(default, name)
        ]
        if changed and self.vec != "batched":
            raise TrainError(
                f"{', '.join(f'`{name}`' for name in changed)} set how the copies of "
                f"`vec='batched'` mix tasks; other kinds of environments draw a task per episode"
            )
        if self.task_switch not in TASK_SWITCHES:
            raise TrainError(
                f"unknown `task_switch` {self.task_switch!r}; use one of {', '.join(TASK_SWITCHES)}"
            )
        if self.turn_budgets <= 0:
            raise TrainError(f"`turn_budgets` must be > 0, got {self.turn_budgets}")
        if self.lanes < 1 or self.n_envs % self.lanes:
            raise TrainError(
                f"`lanes` ({self.lanes}) must be >= 1 and divide `n_envs` ({self.n_envs}): "
                f"each lane trains n_envs / lanes copies"
            )
        processes = self.batched_processes() if self.vec == "batched" else 1
        if self.lanes > 1 and processes > 1 and self.lanes % processes:
            raise TrainError(
                f"`lanes` ({self.lanes}) must be a multiple of the worker processes "
                f"({processes}): each process holds whole lanes"
            )

    def check(self) -> None:
        """Raise :class:`TrainError` for values that cannot work (not the hp keys, see below)."""
        if self.algo not in ALGORITHMS:
            raise TrainError(f"unknown algorithm {self.algo!r}; use one of {', '.join(ALGORITHMS)}")
        if self.suite and self.tasks:
            raise TrainError("give `suite` or `tasks`, not both")
        if self.vec not in VEC_ENVS:
            raise TrainError(f"unknown `vec` {self.vec!r}; use one of {', '.join(VEC_ENVS)}")
        if self.backend not in BACKENDS:
            raise TrainError(f"unknown `backend` {self.backend!r}; use one of "
                             f"{', '.join(BACKENDS)}")
        if self.backend == "ray" and self.vec != "subproc":
            raise TrainError(
                f"`vec` {self.vec} is for the local backend: with `backend` ray each "
                f"environment is a Ray actor; drop `vec` (or vec: from the recipe)"
            )
        for name in ("timesteps", "n_envs", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise TrainError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise TrainError(f"`eval_every` must be >= 0 (0 disables), got {self.eval_every}")
        if self.processes < 0:
            raise TrainError(
                f"`processes` must be >= 0 (0: one per core), got {self.processes}"
            )
        if self.processes != 1 and self.vec != "batched":
            raise TrainError(
                "`processes` splits the copies of `vec='batched'`; other kinds of "
                "environments take one process each (subproc) or none (dummy)"
            )
        if self.processes > self.n_envs:
            raise TrainError(
                f"`processes` ({self.processes}) must be <= `n_envs` ({self.n_envs}): "
                f"each process holds at least one copy"
            )
        self._check_lanes()
        self.env.check()
        obstacles = self.env.batched_obstacles() if self.vec == "batched" else []
        if obstacles:
            raise TrainError(
                f"`vec='batched'` cannot run {', '.join(obstacles)}: the batched copies train "
                f"together; use `vec='subproc'` or `vec='dummy'`"
            )
        if self.algo == "dqn" and self.env.actions.get("kind") != "discrete":
            raise TrainError(
                "DQN needs discrete actions; use `algo='ppo'` or `algo='a2c'` for continuous ones"
            )
        if self.stop_bias and self.algo == "dqn":
            raise TrainError("`stop_bias` applies to PPO and A2C; set it to 0 for DQN")


def algorithm_defaults(algo: str) -> dict[str, Any]:
    """The packaged recipe of ``algo``: ``hp``, ``hyperparams_version`` and ``stop_bias``."""
    if algo not in ALGORITHMS:
        raise TrainError(f"unknown algorithm {algo!r}; use one of {', '.join(ALGORITHMS)}")
    text = resources.files("fitpilot.agents").joinpath(f"hyperparams/{algo}.yaml").read_text()
    data = load_yaml(text)
    return {
        "hp": dict(data["hyperparams"]),
        "hyperparams_version": int(data["version"]),
        "stop_bias": float(data.get("stop_bias", 0.0)),
    }


def parse_overrides(items: Iterable[str], option: str) -> dict[str, Any]:
    """``["a=1", "b.c=[1e-4, 2]"]`` -> ``{"a": 1, "b": {"c": [0.0001, 2]}}`` (values: YAML).

    ``option`` names the source in error messages (the command line passes ``"--hp"``).
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TrainError(f"{option} takes key=value, got {item!r}")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as exc:
            raise TrainError(f"{option} {item!r}: the value is not valid YAML ({exc})") from exc
        target = result
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise TrainError(f"{option} {item!r} conflicts with an earlier override")
        target[leaf] = value
    return result


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A recipe YAML file as a dict (keys are checked when the config is built).

    Top-level keys may be spelt like the options (``n-envs``) or the fields (``n_envs``).
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except OSError as exc:
        raise TrainError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise TrainError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainError(f"config file {path} must be a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in data.items()}  # n-envs: n_envs


def build_config(
    *layers: Mapping[str, Any] | None,
    hp: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Merge recipe layers (later wins, ``None`` values skipped) over the algorithm defaults.

    Each layer is a dict with :class:`TrainConfig` keys (``hp`` and ``env`` merged
    key by key, nested dicts too). ``hp``/``env`` are applied last.
    """
    merged: dict[str, Any] = {}
    for layer in [*layers, {"hp": hp, "env": env}]:
        layer = layer or {}
        for key, other in (("suite", "tasks"), ("tasks", "suite")):
            if layer.get(key) is not None and layer.get(other) is None:
                merged.pop(other, None)  # a layer naming one of them replaces the other
        for key in ("hp", "env"):
            if layer.get(key) is not None and not isinstance(layer[key], Mapping):
                raise TrainError(f"{key} must be a mapping of key: value, got {layer[key]!r}")
        actions = (layer.get("env") or {}).get("actions")
        if not isinstance(actions, Mapping | None):
            raise TrainError(f"env.actions must be a mapping of key: value, got {actions!r}")
        kind = (actions or {}).get("kind")
        if kind and kind != merged.get("env", {}).get("actions", {}).get("kind", "discrete"):
            merged.get("env", {}).pop("actions", None)  # another scheme: drop the old settings
        for key, value in layer.items():
            if value is None:
                continue
            merged[key] = _deep_merge(merged.get(key, {}), value) if key in ("hp", "env") else value
    algo = str(merged.get("algo", "ppo")).lower()
    defaults = algorithm_defaults(algo)
    merged["algo"] = algo
    merged["hp"] = _deep_merge(defaults["hp"], merged.get("hp", {}))
    merged["hyperparams_version"] = defaults["hyperparams_version"]
    merged.setdefault("stop_bias", defaults["stop_bias"])
    config = TrainConfig.from_dict(merged)
    config.check()
    return config


def run_differences(config: TrainConfig, other: Mapping[str, Any]) -> list[str]:
    """The dotted keys among :data:`RUN_KEYS` whose values differ from the recipe ``other``.

    An ``env`` setting that ``other`` lacks (a run written before the setting existed)
    counts as its default, which is what that run trained with.
    """
    stored = {k: v for k, v in other.items() if k in RUN_KEYS}
    if isinstance(stored.get("env"), Mapping):
        stored["env"] = {**TrainConfig().to_dict()["env"], **stored["env"]}
    return _diff({k: v for k, v in config.to_dict().items() if k in RUN_KEYS}, stored)


def check_hyperparameters(config: TrainConfig) -> None:
    """Refuse hp keys the algorithm (or its policy) does not take, naming the keys that exist."""
    algorithm = algorithm_class(config.algo)
    accepted = _parameters(algorithm.__init__, RESERVED_HP)
    unknown = sorted(set(config.hp) - set(accepted))
    if unknown:
        raise TrainError(
            f"{config.algo.upper()} takes no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    policy_kwargs = config.hp.get("policy_kwargs") or {}
    if not isinstance(policy_kwargs, Mapping):
        raise TrainError(f"hp policy_kwargs must be a mapping, got {policy_kwargs!r}")
    policy = algorithm.policy_aliases["MlpPolicy"]
    accepted = _parameters(policy.__init__, ("observation_space", "action_space", "lr_schedule"))
    unknown = sorted(set(policy_kwargs) - set(accepted))
    if unknown:
        raise TrainError(
            f"{policy.__name__} takes no policy_kwargs {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    activation = policy_kwargs.get("activation_fn", "tanh")
    if activation not in ACTIVATIONS:
        raise TrainError(
            f"policy_kwargs.activation_fn {activation!r} cannot be exported to a bundle; "
            f"use one of {', '.join(ACTIVATIONS)}"
        )


def algorithm_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``config.hp`` as keyword arguments of the algorithm class (activation names -> torch)."""
    import torch.nn as nn  # torch loads with the learner; recipes are read without it

    kwargs = copy.deepcopy(config.hp)
    policy_kwargs = kwargs.get("policy_kwargs") or {}
    if "activation_fn" in policy_kwargs:
        policy_kwargs["activation_fn"] = {"tanh": nn.Tanh, "relu": nn.ReLU}[
            policy_kwargs["activation_fn"]
        ]
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def algorithm_class(algo: str) -> type:
    """The stable-baselines3 class of ``algo`` (imports torch)."""
    import stable_baselines3  # loads TensorFlow (tensorboard): only after runtime.configure

    return {
        "ppo": stable_baselines3.PPO,
        "a2c": stable_baselines3.A2C,
        "dqn": stable_baselines3.DQN,
    }[algo]


def _typed(cls: type, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` with each value checked against, and converted to, its field type in ``cls``.

    Integers are accepted for floats, and whole floats (``1e5``) for integers;
    nothing else is converted (a string is never a number).
    """
    hints = typing.get_type_hints(cls)
    return {key: _convert(f"{prefix}{key}", value, hints[key]) for key, value in data.items()}


def _convert(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the type ``kind`` (float, int, bool, str, X | None, tuple[...], dict)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [arg for arg in args if arg is not type(None)]
        return _convert(name, value, kind)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if origin is tuple:
        items = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if isinstance(value, list | tuple) and len(value) == len(items):
            pairs = enumerate(zip(value, items, strict=True))
            return tuple(_convert(f"{name}[{i}]", v, k) for i, (v, k) in pairs)
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        raise TrainError(f"{name} must be a list of {count}{_PLURALS[args[0]]}, got {value!r}")
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise TrainError(f"{name} must be a mapping of key: value, got {value!r}")
    if kind is float and number:
        return float(value)
    if kind is int and number and float(value).is_integer():
        return int(value)
    if kind in (bool, str) and isinstance(value, kind):
        return value
    if kind is Any:
        return value
    raise TrainError(f"{name} must be {_KINDS[kind]}, got {value!r}")


_KINDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
_PLURALS = {float: "numbers", int: "integers", bool: "booleans", str: "strings"}


def _parameters(function: Any, reserved: Iterable[str]) -> list[str]:
    names = inspect.signature(function).parameters
    return [n for n in names if n not in ("self", *reserved)]


def _refuse_unknown(where: str, data: Mapping[str, Any], known: list[str]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainError(
            f"unknown {where} keys {', '.join(unknown)}; known keys: {', '.join(known)}"
        )


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        a, b = list(a), list(b)
    return [] if a == b else [f"{prefix.rstrip('.')}: {b!r} -> {a!r}"]
