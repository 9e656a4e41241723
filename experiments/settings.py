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

#: The strategies of BENCHMARK.md, in report order.
STRATEGIES: tuple[str, ...] = (
    "constant",
    "early_stopping",
    "reduce_lr",
    "es_reduce_lr",
    "cosine",
    "lr_finder",
    "prodigy",
    "learned",
)
#: Strategies whose run does not depend on the cell's starting learning rate: each runs once
#: per task and seed, and its record stands for every starting factor of that cell.
FACTOR_FREE = frozenset({"lr_finder", "prodigy"})
#: Where the starting factors point: the tuned rate (grid winner on validation) or the default.
LR_REFERENCES: tuple[str, ...] = ("tuned", "default")
#: The benchmark protocol (BENCHMARK.md) a store was written by; stores of another refuse resume.
PROTOCOL = 2
#: Strategy name of the hindsight-oracle runs (a reference, not a strategy).
ORACLE = "oracle"
#: The oracle grid spans 10**-ORACLE_DECADES/2 .. 10**+ORACLE_DECADES/2 times the task default.
ORACLE_DECADES = 4.0
#: At most this many decades are added to an edge of the grid to bring the tuned rate inside.
MAX_EXTENSION_DECADES = 2.0
#: BENCHMARK.md's minimum for a published report.
MIN_PUBLISHED_SEEDS, MIN_PUBLISHED_GRID = 3, 7
#: The tuned reference needs a grid with edges and an inside.
MIN_TUNED_GRID = 3


class BenchmarkError(FitpilotError):
    """Bad benchmark input or a results store that cannot be used."""


def parse_strategies(text: str | None) -> list[str]:
    """``"constant,learned"`` -> ``["constant", "learned"]``; ``None`` or ``"all"`` -> all."""
    if text is None or text.strip() == "all":
        return list(STRATEGIES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names:
        raise BenchmarkError(
            f"unknown strategy {', '.join(map(repr, unknown)) or '(none given)'} in "
            f"`strategies`; valid strategies are {', '.join(STRATEGIES)}"
        )
    return [name for name in STRATEGIES if name in names]  # report order, no duplicates


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
    trajectories ``lr``, ``val_loss``, ``loss``); ``probe_epochs`` the
    range test's batches as a fraction of an epoch (``lr_finder`` only).
    ``learning_rate`` is the rate training started at; ``decisions`` what the
    learned controller did per epoch; ``warning`` what went wrong but did not
    stop the run (e.g. a range test that fell back to the task's rate).
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
            }
        )


_REQUIRED = ("task", "seed", "lr_factor", "strategy", "test_loss", "epochs", "budget")


def _float(value: Any) -> float:
    """A stored number; ``null`` (a non-finite value) as ``nan``."""
    return math.nan if value is None else float(value)


def _floats(values: Iterable[Any] | None) -> tuple[float, ...]:
    return tuple(_float(v) for v in values or ())


@dataclass(frozen=True)
class TaskInfo:
    """What the store remembers of a task, enough to refuse a store made with another one."""

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    loss: str
    metrics: tuple[str, ...]

    @classmethod
    def of(cls, task: Any) -> TaskInfo:
        return cls(
            task.name,
            int(task.epochs),
            int(task.batch_size),
            float(task.learning_rate),
            task.optimizer_name,
            str(task.loss),
            tuple(str(m) for m in task.metrics),
        )


@dataclass(frozen=True)
class Settings:
    """Everything that decides a benchmark's results; written as the store's header.

    ``controller`` is the content hash of the controller bundle (``None`` when
    ``learned`` is not benchmarked). ``lr_reference`` says what the starting
    factors multiply: the ``"tuned"`` rate (the grid's winner on validation)
    or the task's ``"default"``. ``protocol`` is the BENCHMARK.md version the
    store was written by (1 for stores without it). ``task_source`` and
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
        ),
        repr=False,
        compare=False,
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("compared")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        protocol = int(data.get("protocol", 1))
        return cls(
            tasks=tuple(
                TaskInfo(**{**t, "metrics": tuple(t.get("metrics", ()))}) for t in data["tasks"]
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
        )

    def differences(self, other: Settings) -> list[str]:
        """``"name: store X, now Y"`` for each result-deciding setting that ``other`` changes."""
        out = []
        for name in self.compared:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "tasks":
                    mine, theirs = _task_summary(mine), _task_summary(theirs)
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

        A :data:`FACTOR_FREE` strategy is listed at every factor, but runs only
        at the first one (:meth:`runs_at`); the others copy its record.
        """
        return [
            RunKey(task.name, seed, factor, strategy)
            for task in self.tasks
            for seed in range(self.seeds)
            for factor in self.lr_factors
            for strategy in self.strategies
        ]

    def runs_at(self, key: RunKey) -> RunKey:
        """The run whose record stands for ``key``: itself, or for a :data:`FACTOR_FREE`
        strategy the same run at the first starting factor."""
        if key.strategy in FACTOR_FREE and key.lr_factor != self.lr_factors[0]:
            return RunKey(key.task, key.seed, self.lr_factors[0], key.strategy)
        return key

    def run_keys(self) -> list[RunKey]:
        """Every run of the plan but the grid's extensions: the grid, then the strategies."""
        return self.grid_keys() + self.strategy_keys()

    def warnings(self) -> list[str]:
        """Why this configuration is below BENCHMARK.md's bar for a published report."""
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
        if self.protocol < PROTOCOL:
            out.append(
                f"written by benchmark protocol v{self.protocol}: starting rates are factors "
                f"of the task defaults, and the report's v{PROTOCOL} figures may be missing"
            )
        return out


def _task_summary(tasks: Sequence[TaskInfo]) -> str:
    return (
        "[" + ", ".join(f"{t.name}({t.epochs} epochs, lr {t.learning_rate:g})" for t in tasks) + "]"
    )
