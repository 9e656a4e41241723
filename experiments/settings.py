"""What a benchmark is made of: strategy names, the cells, the oracle grid, the settings record.

Nothing here imports TensorFlow or Keras: the command line validates its
input with these helpers before any worker starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    "learned",
)
#: Strategy name of the hindsight-oracle runs (a reference, not a strategy).
ORACLE = "oracle"
#: The oracle grid spans 10**-ORACLE_DECADES/2 .. 10**+ORACLE_DECADES/2 times the task default.
ORACLE_DECADES = 4.0
#: BENCHMARK.md's minimum for a published report.
MIN_PUBLISHED_SEEDS, MIN_PUBLISHED_GRID = 3, 7


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
            f"unknown strategy {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"valid strategies are {', '.join(STRATEGIES)}"
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
            f"bad --lr-factors {text!r}; give positive numbers separated by commas, e.g. 0.1,1,10"
        )
    return factors


def oracle_factors(points: int) -> list[float]:
    """``points`` log-spaced learning-rate factors over 4 decades around 1 (4 significant digits).

    ``oracle_factors(7)`` is ``[0.01, 0.04642, 0.2154, 1.0, 4.642, 21.54, 100.0]``;
    0 points means no oracle, 1 point is the default learning rate alone.
    """
    if points < 0:
        raise BenchmarkError(
            f"--oracle-grid must be 0 (no oracle) or a positive count, not {points}"
        )
    if points == 0:
        return []
    if points == 1:
        return [1.0]
    exponents = np.linspace(-ORACLE_DECADES / 2, ORACLE_DECADES / 2, points)
    return [float(f"{10.0**e:.4g}") for e in exponents]


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

    @classmethod
    def of(cls, record: dict[str, Any]) -> RunKey:
        return cls(
            str(record["task"]),
            int(record["seed"]),
            float(record["lr_factor"]),
            str(record["strategy"]),
        )


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
    ``learned`` is not benchmarked). ``task_source`` and ``controller_source``
    say where they came from and are informative only.
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
    compared: tuple[str, ...] = field(
        default=(
            "controller",
            "tasks",
            "strategies",
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

    def oracle_factors(self) -> list[float]:
        return oracle_factors(self.oracle_grid)

    def run_keys(self) -> list[RunKey]:
        """All runs of this benchmark, grouped by task then seed (cache-friendly order)."""
        keys = []
        for task in self.tasks:
            for seed in range(self.seeds):
                for factor in self.lr_factors:
                    keys += [RunKey(task.name, seed, factor, s) for s in self.strategies]
                keys += [RunKey(task.name, seed, f, ORACLE) for f in self.oracle_factors()]
        return keys

    def warnings(self) -> list[str]:
        """Why this configuration is below BENCHMARK.md's bar for a published report."""
        out = []
        if self.seeds < MIN_PUBLISHED_SEEDS:
            out.append(
                f"{self.seeds} seed(s) per cell; a published report needs at least "
                f"{MIN_PUBLISHED_SEEDS}"
            )
        if self.oracle_grid == 0:
            out.append("no hindsight oracle (--oracle-grid 0): regret is undefined")
        elif self.oracle_grid < MIN_PUBLISHED_GRID:
            out.append(
                f"oracle grid of {self.oracle_grid} learning rates; a published report "
                f"needs at least {MIN_PUBLISHED_GRID}"
            )
        return out


def _task_summary(tasks: Sequence[TaskInfo]) -> str:
    return (
        "[" + ", ".join(f"{t.name}({t.epochs} epochs, lr {t.learning_rate:g})" for t in tasks) + "]"
    )
