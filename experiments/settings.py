"""What a benchmark is made of: strategy names, cells, the oracle grid, settings and run records.

Nothing here imports TensorFlow or Keras: the command line validates its
input with these helpers before any worker starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from fitpilot.errors import FitpilotError
from fitpilot.experiments.strategies import ORACLE, is_factor_free, strategy_names

#: Where the starting factors point: the tuned rate (grid winner on validation) or the default.
LR_REFERENCES: tuple[str, ...] = ("tuned", "default")
#: The benchmark protocol (docs/benchmark.md) a store is written by.
PROTOCOL = 3
#: Stores of these protocols can be continued: v3 runs what v2 ran (it adds strategies, and
#: records each cell's untrained test loss, which scores diverged and failed runs).
RESUMABLE_PROTOCOLS = (2, 3)
#: How a store's header describes a task's loss, metrics and optimizer: 1 (stores before
#: this rule) by ``repr``, which may hold a memory address; 2 by value (``envs.tasks.describe``).
DESCRIPTIONS = 2
#: The oracle grid spans 10**-ORACLE_DECADES/2 .. 10**+ORACLE_DECADES/2 times the task default.
ORACLE_DECADES = 4.0
#: At most this many decades are added to an edge of the grid to bring the tuned rate inside.
MAX_EXTENSION_DECADES = 2.0
#: docs/benchmark.md's minimum for a published report.
MIN_PUBLISHED_SEEDS, MIN_PUBLISHED_GRID = 3, 7
#: The tuned reference needs a grid with edges and an inside.
MIN_TUNED_GRID = 3


class BenchmarkError(FitpilotError, ValueError):
    """Bad benchmark input or a results store that cannot be used."""


def parse_strategies(text: str | None) -> list[str]:
    """``"constant,learned"`` -> ``["constant", "learned"]``; ``None`` or ``"all"`` -> all."""
    known = strategy_names()
    if text is None or text.strip() == "all":
        return list(known)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise BenchmarkError(
            f"unknown strategy {', '.join(map(repr, unknown)) or '(none given)'} in "
            f"`strategies`; valid strategies are {', '.join(known)}"
        )
    return [name for name in known if name in names]  # report order, no duplicates


def parse_lr_factors(text: str) -> list[float]:
    """``"0.1,1,10"`` -> ``[0.1, 1.0, 10.0]``: positive, distinct, sorted."""
    try:
        factors = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        factors = []
    if not factors or any(not math.isfinite(f) or f <= 0 for f in factors):
        raise BenchmarkError(
            f"bad `lr_factors` {text!r}; give positive numbers separated by commas, e.g. 0.1,1,10"
        )
    return factors


def oracle_factors(points: int) -> list[float]:
    """``points`` log-spaced learning-rate factors over 4 decades around 1 (4 significant digits).

    ``oracle_factors(7)`` is ``[0.01, 0.04642, 0.2154, 1.0, 4.642, 21.54, 100.0]``;
    0 points means no oracle, 1 point is the default learning rate alone.
    """
    if points < 0:
        raise BenchmarkError(
            f"`oracle_grid` must be 0 (no oracle) or a positive count, not {points}"
        )
    if points == 0:
        return []
    if points == 1:
        return [1.0]
    exponents = np.linspace(-ORACLE_DECADES / 2, ORACLE_DECADES / 2, points)
    return [_factor(e) for e in exponents]


def parse_lr_reference(text: str) -> str:
    """``"tuned"`` or ``"default"``; anything else is a :class:`BenchmarkError` naming both."""
    if text not in LR_REFERENCES:
        raise BenchmarkError(
            f"unknown `lr_reference` {text!r}; valid references are {', '.join(LR_REFERENCES)}"
        )
    return text


def _factor(exponent: float) -> float:
    """``10**exponent`` to 4 significant digits (grid factors are stored and compared so)."""
    return float(f"{10.0**exponent:.4g}")


def grid_extension(points: int, side: int, done: int) -> float | None:
    """The next grid factor beyond one edge of :func:`oracle_factors`, or ``None`` when the
    grid already reaches :data:`MAX_EXTENSION_DECADES` beyond it.

    ``side`` is -1 (below the lowest factor) or +1 (above the highest); ``done``
    the number of points already added on that side. The step is the grid's.
    """
    step = ORACLE_DECADES / (points - 1)
    if (done + 1) * step > MAX_EXTENSION_DECADES + 1e-9:
        return None
    return _factor(side * (ORACLE_DECADES / 2 + (done + 1) * step))


@dataclass(frozen=True)
class RunKey:
    """One run: a strategy (or the oracle at a grid factor) on one cell.

    For strategies, ``lr_factor`` is the cell's starting-learning-rate factor;
    for the oracle it is the grid point (the oracle does not depend on the
    cell's factor, so it runs once per task and seed).
    """

    task: str
    seed: int
    lr_factor: float
    strategy: str

    def label(self) -> str:
        """``"digits_lstm seed 0 lr x0.1 cosine"``, ``"digits_lstm seed 0 oracle lr x4.642"``."""
        if self.strategy == ORACLE:
            return f"{self.task} seed {self.seed} oracle lr x{self.lr_factor:g}"
        return f"{self.task} seed {self.seed} lr x{self.lr_factor:g} {self.strategy}"



@dataclass(frozen=True)
class RunOrder:
    """What a worker is handed: a run and the learning rate it starts from.

    The rate is not part of the run's identity: it follows from the key and
    the task's reference rate, which for the tuned reference is known only
    after the grid runs.
    """

    key: RunKey
    learning_rate: float

    def label(self) -> str:
        return self.key.label()


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as the store keeps it (one JSON line) and the report reads it.

    Losses are floats, ``nan`` where not finite (``null`` in the file).
    ``epochs`` is the number of training epochs run (the length of the
    trajectories ``lr``, ``val_loss``, ``loss``); ``probe_epochs`` the batches of a probe
    before training (the range test of ``lr_finder``, a v3 controller's scale probe) as a
    fraction of an epoch.
    ``learning_rate`` is the rate training started at; ``decisions`` what the
    learned controller (or a rule that records them) did per epoch; ``warning`` what
    went wrong but did not stop the run (e.g. a range test that fell back to the
    task's rate).

    ``untrained_test_loss`` is the test loss of the cell's initial weights (``None`` in
    stores before protocol v3); ``finite_weights`` whether every final weight was
    finite; ``error`` the first line of the exception a run raised (a *failed* run:
    its figures are empty). A failed or diverged run (:attr:`counts_as_untrained`)
    is scored with the untrained model's test loss: what the user is left with.
    """

    task: str
    seed: int
    lr_factor: float
    strategy: str
    learning_rate: float
    budget: int
    epochs: int
    test_loss: float
    wall_seconds: float
    controller: str | None = None
    metric: str | None = None
    test_metric: float | None = None
    lr: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    loss: tuple[float, ...] = ()
    probe_epochs: float = 0.0
    decisions: tuple[dict[str, Any], ...] | None = None
    warning: str | None = None
    untrained_test_loss: float | None = None
    finite_weights: bool = True
    error: str | None = None

    @property
    def key(self) -> RunKey:
        return RunKey(self.task, self.seed, self.lr_factor, self.strategy)

    @property
    def is_oracle(self) -> bool:
        return self.strategy == ORACLE

    @property
    def cell(self) -> tuple[str, float, int]:
        """``(task, lr_factor, seed)``."""
        return (self.task, self.lr_factor, self.seed)

    @property
    def failed(self) -> bool:
        """The run raised an exception (its ``error``); a resumed benchmark runs it again."""
        return self.error is not None

    @property
    def diverged(self) -> bool:
        """It ran, but its final weights or its test loss are not finite."""
        return not self.failed and not (self.finite_weights and math.isfinite(self.test_loss))

    @property
    def counts_as_untrained(self) -> bool:
        """Scored with the untrained model's test loss: it failed or diverged."""
        return self.failed or self.diverged

    @property
    def finite_test_loss(self) -> float:
        """The test loss; ``inf`` if it was not finite (a diverged run)."""
        return self.test_loss if math.isfinite(self.test_loss) else math.inf

    @property
    def best_val_loss(self) -> float:
        """The lowest finite validation loss of the run; ``inf`` if none was finite."""
        finite = [v for v in self.val_loss if math.isfinite(v)]
        return min(finite) if finite else math.inf

    @property
    def compute(self) -> float:
        """Epochs run, probes included, as a share of the budget."""
        return (self.epochs + self.probe_epochs) / self.budget

    def to_json(self) -> dict[str, Any]:
        """The store's line (before non-finite numbers become ``null``)."""
        data = asdict(self)
        data["decisions"] = list(self.decisions) if self.decisions is not None else None
        return {"type": "run", **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Read a store line; :class:`ValueError` if it is not a run record.

        Lines of protocol v1 stores read too (no ``probe_epochs``, extra ``oracle``).
        """
        if not isinstance(data, dict) or data.get("type") != "run":
            raise ValueError("not a run record")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"run record without {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        decisions = values.get("decisions")
        return cls(
            **{
                **values,
                "task": str(data["task"]),
                "seed": int(data["seed"]),
                "lr_factor": float(data["lr_factor"]),
                "strategy": str(data["strategy"]),
                "learning_rate": _float(data.get("learning_rate")),
                "budget": int(data["budget"]),
                "epochs": int(data["epochs"]),
                "test_loss": _float(data["test_loss"]),
                "wall_seconds": _float(data.get("wall_seconds")),
                "test_metric": (
                    None if data.get("test_metric") is None else float(data["test_metric"])
                ),
                "lr": _floats(data.get("lr")),
                "val_loss": _floats(data.get("val_loss")),
                "loss": _floats(data.get("loss")),
                "probe_epochs": float(data.get("probe_epochs") or 0.0),
                "decisions": tuple(decisions) if decisions is not None else None,
                "untrained_test_loss": (
                    None if data.get("untrained_test_loss") is None
                    else float(data["untrained_test_loss"])
                ),
                "finite_weights": bool(data.get("finite_weights", True)),
            }
        )


_REQUIRED = ("task", "seed", "lr_factor", "strategy", "test_loss", "epochs", "budget")


def _float(value: Any) -> float:
    """A stored number; ``null`` (a non-finite value) as ``nan``."""
    return math.nan if value is None else float(value)


def _floats(values: Iterable[Any] | None) -> tuple[float, ...]:
    return tuple(_float(v) for v in values or ())


#: The fields of :class:`TaskInfo` that describe Keras objects (by ``repr`` in old stores).
_DESCRIBED = ("optimizer", "loss", "metrics")


@dataclass(frozen=True)
class TaskInfo:
    """What the store remembers of a task, enough to refuse a store made with another one.

    ``optimizer``, ``loss`` and ``metrics`` are described by value
    (:func:`fitpilot.envs.tasks.describe`: a name, or a Keras object's class and config),
    never by ``repr``, so that a new process sees the same task as the same.
    ``legacy`` holds the same three the way stores before that rule wrote them (addresses
    cut out), to continue such a store; it is not written.
    """

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    loss: str
    metrics: tuple[str, ...]
    legacy: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, task: Any) -> TaskInfo:
        from fitpilot.envs.tasks import describe, legacy_description

        return cls(
            task.name,
            int(task.epochs),
            int(task.batch_size),
            float(task.learning_rate),
            describe(task.optimizer),
            describe(task.loss),
            tuple(describe(m) for m in task.metrics),
            legacy=(
                task.optimizer_name,
                legacy_description(task.loss),
                tuple(legacy_description(m) for m in task.metrics),
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("legacy")
        return data

    def differences(self, stored: TaskInfo, by_value: bool = True) -> list[str]:
        """``"task NAME: FIELD: store X, now Y"`` per field that differs from ``stored``.

        ``by_value=False``: ``stored`` comes from a store that described Keras objects by
        ``repr``; those fields are compared the old way, memory addresses left out.
        """
        out = []
        for name in ("epochs", "batch_size", "learning_rate", *_DESCRIBED):
            mine, theirs = getattr(self, name), getattr(stored, name)
            if not by_value and name in _DESCRIBED and self.legacy is not None:
                from fitpilot.envs.tasks import without_addresses

                mine = self.legacy[_DESCRIBED.index(name)]
                theirs = (tuple(map(without_addresses, theirs)) if isinstance(theirs, tuple)
                          else without_addresses(theirs))
            if mine != theirs:
                out.append(f"task {self.name}: {name}: store {theirs!r}, now {mine!r}")
        return out


@dataclass(frozen=True)
class Settings:
    """Everything that decides a benchmark's results; written as the store's header.

    ``controller`` is the content hash of the controller bundle (``None`` when
    ``learned`` is not benchmarked). ``lr_reference`` says what the starting
    factors multiply: the ``"tuned"`` rate (the grid's winner on validation)
    or the task's ``"default"``. ``protocol`` is the docs/benchmark.md version the
    store was written by (1 for stores without it); ``descriptions`` how its tasks'
    Keras objects are described (:data:`DESCRIPTIONS`). ``task_source`` and
    ``controller_source`` say where they came from and are informative only.
    """

    tasks: tuple[TaskInfo, ...]
    strategies: tuple[str, ...]
    lr_factors: tuple[float, ...]
    seeds: int
    oracle_grid: int
    controller: str | None
    fitpilot_version: str
    task_source: str = ""
    controller_source: str = ""
    lr_reference: str = "tuned"
    protocol: int = PROTOCOL
    descriptions: int = DESCRIPTIONS
    strategy_settings: dict[str, dict[str, Any]] | None = None
    compared: tuple[str, ...] = field(
        default=(
            "protocol",
            "controller",
            "tasks",
            "strategies",
            "lr_reference",
            "lr_factors",
            "seeds",
            "oracle_grid",
            "fitpilot_version",
            "strategy_settings",
        ),
        repr=False,
        compare=False,
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("compared")
        data["tasks"] = [task.to_dict() for task in self.tasks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        protocol = int(data.get("protocol", 1))
        known = {f.name for f in fields(TaskInfo)} - {"legacy"}
        return cls(
            tasks=tuple(
                TaskInfo(**{**{k: v for k, v in t.items() if k in known},
                            "metrics": tuple(t.get("metrics", ()))})
                for t in data["tasks"]
            ),
            strategies=tuple(data["strategies"]),
            lr_factors=tuple(float(f) for f in data["lr_factors"]),
            seeds=int(data["seeds"]),
            oracle_grid=int(data["oracle_grid"]),
            controller=data.get("controller"),
            fitpilot_version=str(data.get("fitpilot_version", "")),
            task_source=str(data.get("task_source", "")),
            controller_source=str(data.get("controller_source", "")),
            lr_reference=str(data.get("lr_reference", "tuned" if protocol >= 2 else "default")),
            protocol=protocol,
            descriptions=int(data.get("descriptions", 1)),
            strategy_settings=data.get("strategy_settings"),
        )

    def differences(self, other: Settings) -> list[str]:
        """``"name: store X, now Y"`` for each result-deciding setting that ``other`` (a
        store's settings) changes; for tasks, each field of each task that differs.

        Protocols of :data:`RESUMABLE_PROTOCOLS` count as the same; tasks described by
        ``repr`` in ``other`` (``descriptions`` 1) are compared the old way.
        """
        out = []
        for name in self.compared:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "protocol" and {mine, theirs} <= set(RESUMABLE_PROTOCOLS):
                continue
            if name == "strategy_settings" and theirs is None:  # a store before they were kept
                continue
            if name == "tasks":
                out += _task_differences(mine, theirs, by_value=other.descriptions >= 2)
            elif mine != theirs:
                out.append(f"{name}: store {theirs}, now {mine}")
        return out

    @property
    def tuned(self) -> bool:
        return self.lr_reference == "tuned"

    def oracle_factors(self) -> list[float]:
        """The grid's factors of the task default, before any extension."""
        return oracle_factors(self.oracle_grid)

    def grid_keys(self) -> list[RunKey]:
        """The constant-rate grid runs, before any extension, grouped by task then seed."""
        return [
            RunKey(task.name, seed, factor, ORACLE)
            for task in self.tasks
            for seed in range(self.seeds)
            for factor in self.oracle_factors()
        ]

    def strategy_keys(self) -> list[RunKey]:
        """Every strategy run of every cell, grouped by task then seed (cache-friendly order).

        A factor-free strategy (``Strategy.factor_free``) is listed at every factor, but
        runs only at the first one (:meth:`runs_at`); the others copy its record.
        """
        return [
            RunKey(task.name, seed, factor, strategy)
            for task in self.tasks
            for seed in range(self.seeds)
            for factor in self.lr_factors
            for strategy in self.strategies
        ]

    def runs_at(self, key: RunKey) -> RunKey:
        """The run whose record stands for ``key``: itself, or for a factor-free strategy
        (``Strategy.factor_free``) the same run at the first starting factor."""
        if is_factor_free(key.strategy) and key.lr_factor != self.lr_factors[0]:
            return RunKey(key.task, key.seed, self.lr_factors[0], key.strategy)
        return key

    def run_keys(self) -> list[RunKey]:
        """Every run of the plan but the grid's extensions: the grid, then the strategies."""
        return self.grid_keys() + self.strategy_keys()

    def warnings(self) -> list[str]:
        """Why this configuration is below docs/benchmark.md's bar for a published report."""
        out = []
        if self.seeds < MIN_PUBLISHED_SEEDS:
            out.append(
                f"{self.seeds} seed(s) per cell; a published report needs at least "
                f"{MIN_PUBLISHED_SEEDS}"
            )
        if self.oracle_grid == 0:
            out.append("no hindsight oracle (`oracle_grid` 0): regret is undefined")
        elif self.oracle_grid < MIN_PUBLISHED_GRID:
            out.append(
                f"oracle grid of {self.oracle_grid} learning rates; a published report "
                f"needs at least {MIN_PUBLISHED_GRID}"
            )
        if self.protocol < 2:
            out.append(
                f"written by benchmark protocol v{self.protocol}: starting rates are factors "
                f"of the task defaults, and the report's v{PROTOCOL} figures may be missing"
            )
        return out


def _task_differences(
    now: Sequence[TaskInfo], stored: Sequence[TaskInfo], by_value: bool
) -> list[str]:
    """What differs between the tasks ``now`` and those of a store: the list of names, or
    each field of each task (see :meth:`TaskInfo.differences`)."""
    names, stored_names = [t.name for t in now], [t.name for t in stored]
    if names != stored_names:
        return [f"tasks: store {stored_names}, now {names}"]
    return [line for mine, theirs in zip(now, stored, strict=True)
            for line in mine.differences(theirs, by_value)]
