"""The summary figures of BENCHMARK.md, from run records alone (numpy only).

A cell is ``(task, lr_factor, seed)``. Per strategy, over the cells:

- **regret**: mean over cells of ``log(test loss / oracle test loss)``, where the
  oracle test loss of a cell is the lowest finite test loss of the oracle grid
  runs of its task and seed (complete grids only). Lower is better; below 0
  means the strategy beat every constant learning rate of the grid.
  Cells where the strategy's test loss is not finite (diverged) are left out
  of the mean and counted in ``diverged``.
- **win rate** of A against B: the share of the cells both ran where A's test
  loss is strictly lower (a non-finite loss loses to any finite one; ties win
  for neither, so ``win(A, B) + win(B, A) <= 1``).
- **compute**: mean of epochs run / epoch budget.
- **wall time**: seconds per run (fit plus test scoring), mean and total.

Intervals are 95% percentile-bootstrap intervals over cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fitpilot.experiments.settings import ORACLE

Cell = tuple[str, float, int]  # (task, lr_factor, seed)
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its bootstrap interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(
    values: Iterable[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Interval | None:
    """Mean of ``values`` with a percentile-bootstrap ``level`` interval; ``None`` if empty."""
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def cell_of(run: dict[str, Any]) -> Cell:
    return (str(run["task"]), float(run["lr_factor"]), int(run["seed"]))


def _loss(run: dict[str, Any]) -> float:
    """The run's test loss; ``inf`` if it was not finite (stored as null)."""
    value = run.get("test_loss")
    return float(value) if value is not None and math.isfinite(value) else math.inf


def oracle_losses(runs: Iterable[dict[str, Any]], grid_size: int) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)``: the lowest finite test loss over its complete oracle grid.

    A ``(task, seed)`` with fewer than ``grid_size`` oracle runs (an unfinished
    benchmark) or without any finite loss has no oracle.
    """
    grids: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run in runs:
        if run["strategy"] == ORACLE:
            grids[(str(run["task"]), int(run["seed"]))].append(_loss(run))
    return {
        key: min(losses)
        for key, losses in grids.items()
        if grid_size > 0 and len(losses) >= grid_size and math.isfinite(min(losses))
    }


@dataclass
class StrategySummary:
    """The figures of one strategy over a set of cells (``None`` where undefined)."""

    strategy: str
    cells: int
    regret: Interval | None
    diverged: int
    compute: Interval | None
    wall_mean: float
    wall_total: float
    test_loss: float  # mean finite test loss
    test_metric: float | None  # mean test metric


@dataclass
class Summary:
    """All figures for one selection of cells."""

    strategies: list[str]
    cells: list[Cell]
    oracle_cells: int  # cells with a defined oracle
    per_strategy: dict[str, StrategySummary]
    win_rate: dict[tuple[str, str], Interval] = field(default_factory=dict)

    @property
    def has_regret(self) -> bool:
        return self.oracle_cells > 0


def summarize(
    runs: Sequence[dict[str, Any]],
    strategies: Sequence[str],
    grid_size: int,
    keep: Callable[[Cell], bool] = lambda cell: True,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Summary:
    """Figures of ``strategies`` over the cells ``keep`` selects (oracle runs are not cells)."""
    oracle = oracle_losses(runs, grid_size)
    by_strategy: dict[str, dict[Cell, dict[str, Any]]] = defaultdict(dict)
    for run in runs:
        if run["strategy"] != ORACLE and keep(cell_of(run)):
            by_strategy[run["strategy"]][cell_of(run)] = run
    cells = sorted({cell for name in strategies for cell in by_strategy.get(name, {})})
    summary = Summary(list(strategies), cells, sum((c[0], c[2]) in oracle for c in cells), {})
    for name in strategies:
        mine = by_strategy.get(name, {})
        regrets = [
            math.log(_loss(run) / oracle[(cell[0], cell[2])])
            for cell, run in mine.items()
            if math.isfinite(_loss(run)) and (cell[0], cell[2]) in oracle
        ]
        finite = [_loss(run) for run in mine.values() if math.isfinite(_loss(run))]
        metrics = [
            run["test_metric"] for run in mine.values() if run.get("test_metric") is not None
        ]
        walls = [float(run.get("wall_seconds") or 0.0) for run in mine.values()]
        summary.per_strategy[name] = StrategySummary(
            strategy=name,
            cells=len(mine),
            regret=bootstrap_mean(regrets, resamples),
            diverged=len(mine) - len(finite),
            compute=bootstrap_mean(
                (run["epochs"] / run["budget"] for run in mine.values()), resamples
            ),
            wall_mean=float(np.mean(walls)) if walls else math.nan,
            wall_total=float(np.sum(walls)),
            test_loss=float(np.mean(finite)) if finite else math.nan,
            test_metric=float(np.mean(metrics)) if metrics else None,
        )
    for a in strategies:
        for b in strategies:
            common = sorted(set(by_strategy.get(a, {})) & set(by_strategy.get(b, {})))
            if a == b or not common:
                continue
            wins = (float(_loss(by_strategy[a][c]) < _loss(by_strategy[b][c])) for c in common)
            interval = bootstrap_mean(wins, resamples)
            if interval is not None:
                summary.win_rate[(a, b)] = interval
    return summary
