"""The summary figures of docs/benchmark.md, from run records alone (numpy only).

A cell is ``(task, lr_factor, seed)``. Per strategy, over the cells:

- **scored test loss** of a run: its test loss; for a run that *diverged* (final
  weights or test loss not finite) or *failed* (raised), the test loss of the
  untrained model of its cell (:func:`untrained_losses`): counted, never dropped.
- **regret**: mean over cells of ``log(scored test loss / oracle test loss)``, where
  the oracle test loss of a cell is the lowest finite test loss of the oracle grid
  runs of its task and seed (complete grids only, extensions included). Lower
  is better; below 0 means the strategy beat every constant learning rate of
  the grid. ``diverged`` and ``failed`` count the runs scored as untrained.
- **start spread**: per (task, seed), the largest minus the smallest regret over the
  starting factors; its mean over (task, seed). 0 for a strategy that ignores the start.
- **win rate** of A against B: the share of the cells both ran where A's scored test
  loss is strictly lower (ties win for neither, so ``win(A, B) + win(B, A) <= 1``).
- **compute**: mean of (epochs run + range-test probe epochs) / epoch budget.
- **time to target**: per cell, the epochs (probes included) until the
  validation loss first reaches the target, the best validation loss of any
  constant rate of the grid (same task and seed) times :data:`TARGET_SLACK`;
  never reached is infinite. The performance profile ``rho(tau)`` of a strategy
  is the share of cells where its time is within ``tau`` times the fastest
  strategy's of that cell; its **score** is the integral of ``rho`` over
  ``tau`` in ``[1, TAU_MAX]`` divided by ``TAU_MAX - 1`` (1: always fastest).
- **wall time**: seconds per run (fit, range test and test scoring), mean and total.

Intervals are 95% percentile-bootstrap intervals over cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fitpilot.experiments.settings import RunRecord

Cell = tuple[str, float, int]  # (task, lr_factor, seed)
BOOTSTRAP_RESAMPLES = 2000
#: A cell's target validation loss is the grid's best times this.
TARGET_SLACK = 1.02
#: The performance profile covers tau in [1, TAU_MAX].
TAU_MAX = 4.0
#: Points of the tau grid the profile score is integrated on.
TAU_POINTS = 301


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


def _grids(runs: Iterable[RunRecord]) -> dict[tuple[str, int], list[RunRecord]]:
    grids: dict[tuple[str, int], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.is_oracle:
            grids[(run.task, run.seed)].append(run)
    return grids


def untrained_losses(runs: Iterable[RunRecord]) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)``: the test loss of the untrained model, what a diverged or failed
    run is scored with.

    Runs since protocol v3 record it (``untrained_test_loss``, the same for every run of
    the task and seed). Older stores do not: there it stands in as the highest finite test
    loss of any run of that task and seed (a run that trained at all is rarely worse than
    its start, so this is at most the untrained loss: the older store's diverged runs are
    scored no worse than that). A ``(task, seed)`` with neither has none (its diverged runs
    are left out, as before v3).
    """
    recorded: dict[tuple[str, int], float] = {}
    worst: dict[tuple[str, int], float] = {}
    for run in runs:
        key = (run.task, run.seed)
        if run.untrained_test_loss is not None and math.isfinite(run.untrained_test_loss):
            recorded[key] = run.untrained_test_loss
        if not run.counts_as_untrained:
            worst[key] = max(worst.get(key, -math.inf), run.test_loss)
    return {**worst, **recorded}


def scored_loss(run: RunRecord, untrained: dict[tuple[str, int], float]) -> float:
    """``run`` 's test loss, or for a diverged or failed run its cell's untrained test loss
    (``inf`` if that is unknown)."""
    if run.counts_as_untrained:
        return untrained.get((run.task, run.seed), math.inf)
    return run.test_loss


def oracle_losses(runs: Iterable[RunRecord], grid_size: int) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)``: the lowest finite test loss over its complete oracle grid.

    A ``(task, seed)`` with fewer than ``grid_size`` oracle runs (an unfinished
    benchmark) or without any finite loss has no oracle.
    """
    out = {}
    for key, grid in _grids(runs).items():
        best = min(run.finite_test_loss for run in grid)
        if grid_size > 0 and len(grid) >= grid_size and math.isfinite(best):
            out[key] = best
    return out


def val_targets(runs: Iterable[RunRecord], grid_size: int) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)`` with a complete grid: the time-to-target validation loss, the best
    validation loss of any grid rate times :data:`TARGET_SLACK` (for losses >= 0)."""
    out = {}
    for key, grid in _grids(runs).items():
        best = min(run.best_val_loss for run in grid)
        if grid_size > 0 and len(grid) >= grid_size and math.isfinite(best):
            out[key] = best * TARGET_SLACK if best >= 0 else best / TARGET_SLACK
    return out


def time_to_target(run: RunRecord, target: float) -> float:
    """Epochs (range-test probe included) until ``run`` 's validation loss is first at or below
    ``target``; ``inf`` if never."""
    for epoch, value in enumerate(run.val_loss, start=1):
        if math.isfinite(value) and value <= target:
            return run.probe_epochs + epoch
    return math.inf


def profile(ratios: Sequence[float], taus: np.ndarray) -> np.ndarray:
    """``rho(tau)``: the share of ``ratios`` at or below each ``tau`` (inf never is)."""
    data = np.asarray(ratios, dtype=float)
    if data.size == 0:
        return np.full(taus.shape, np.nan)
    return (data[None, :] <= taus[:, None]).mean(axis=1)


def profile_score(rho: np.ndarray, taus: np.ndarray) -> float:
    """The integral of ``rho`` over ``taus`` scaled to [0, 1] (1: fastest in every cell)."""
    return float(np.trapezoid(rho, taus) / (taus[-1] - taus[0]))


def tau_grid() -> np.ndarray:
    return np.linspace(1.0, TAU_MAX, TAU_POINTS)


@dataclass
class StrategySummary:
    """The figures of one strategy over a set of cells (``None`` where undefined)."""

    strategy: str
    cells: int
    regret: Interval | None
    diverged: int
    compute: Interval | None
    failed: int = 0
    start_spread: Interval | None = None
    wall_mean: float = math.nan
    wall_total: float = 0.0
    test_loss: float = math.nan  # mean scored test loss
    test_metric: float | None = None  # mean test metric of the runs that trained
    profile_score: float | None = None  # time-to-target performance profile, integrated
    reached: int = 0  # cells where the validation target was reached


@dataclass
class Summary:
    """All figures for one selection of cells.

    ``ratios[strategy]`` are the strategy's time-to-target ratios to the
    fastest strategy of each cell with a target (``inf``: not reached).
    """

    strategies: list[str]
    cells: list[Cell]
    oracle_cells: int  # cells with a defined oracle
    per_strategy: dict[str, StrategySummary]
    win_rate: dict[tuple[str, str], Interval] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)

    @property
    def has_regret(self) -> bool:
        return self.oracle_cells > 0

    @property
    def has_profile(self) -> bool:
        return any(self.ratios.values())


def summarize(
    runs: Sequence[RunRecord],
    strategies: Sequence[str],
    grid_size: int,
    keep: Callable[[Cell], bool] = lambda cell: True,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Summary:
    """Figures of ``strategies`` over the cells ``keep`` selects (oracle runs are not cells)."""
    oracle = oracle_losses(runs, grid_size)
    targets = val_targets(runs, grid_size)
    untrained = untrained_losses(runs)
    by_strategy: dict[str, dict[Cell, RunRecord]] = defaultdict(dict)
    for run in runs:
        if not run.is_oracle and keep(run.cell):
            by_strategy[run.strategy][run.cell] = run
    cells = sorted({cell for name in strategies for cell in by_strategy.get(name, {})})
    summary = Summary(list(strategies), cells, sum((c[0], c[2]) in oracle for c in cells), {})
    times = _times_to_target(by_strategy, strategies, cells, targets)
    taus = tau_grid()
    for name in strategies:
        mine = by_strategy.get(name, {})
        scored = {cell: scored_loss(run, untrained) for cell, run in mine.items()}
        regret = {
            cell: math.log(loss / oracle[(cell[0], cell[2])])
            for cell, loss in scored.items()
            if math.isfinite(loss) and loss > 0 and (cell[0], cell[2]) in oracle
        }
        losses = [loss for loss in scored.values() if math.isfinite(loss)]
        trained = [run for run in mine.values() if not run.counts_as_untrained]
        metrics = [run.test_metric for run in trained if run.test_metric is not None]
        walls = [run.wall_seconds for run in mine.values() if math.isfinite(run.wall_seconds)]
        ratios = list(times.get(name, {}).values())
        summary.ratios[name] = ratios
        summary.per_strategy[name] = StrategySummary(
            strategy=name,
            cells=len(mine),
            regret=bootstrap_mean(regret.values(), resamples),
            diverged=sum(run.diverged for run in mine.values()),
            failed=sum(run.failed for run in mine.values()),
            start_spread=bootstrap_mean(start_spreads(regret).values(), resamples),
            compute=bootstrap_mean((run.compute for run in mine.values()), resamples),
            wall_mean=float(np.mean(walls)) if walls else math.nan,
            wall_total=float(np.sum(walls)),
            test_loss=float(np.mean(losses)) if losses else math.nan,
            test_metric=float(np.mean(metrics)) if metrics else None,
            profile_score=profile_score(profile(ratios, taus), taus) if ratios else None,
            reached=sum(math.isfinite(r) for r in ratios),
        )
    for a in strategies:
        for b in strategies:
            common = sorted(set(by_strategy.get(a, {})) & set(by_strategy.get(b, {})))
            if a == b or not common:
                continue
            wins = (
                float(
                    scored_loss(by_strategy[a][c], untrained)
                    < scored_loss(by_strategy[b][c], untrained)
                )
                for c in common
            )
            interval = bootstrap_mean(wins, resamples)
            if interval is not None:
                summary.win_rate[(a, b)] = interval
    return summary


def start_spreads(regret: dict[Cell, float]) -> dict[tuple[str, int], float]:
    """Per ``(task, seed)`` with at least two starting factors: the largest minus the smallest
    regret over them (0: the strategy's result does not depend on where it starts)."""
    by_start: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (task, _, seed), value in regret.items():
        by_start[(task, seed)].append(value)
    return {key: max(values) - min(values) for key, values in by_start.items() if len(values) > 1}


def _times_to_target(
    by_strategy: dict[str, dict[Cell, RunRecord]],
    strategies: Sequence[str],
    cells: Sequence[Cell],
    targets: dict[tuple[str, int], float],
) -> dict[str, dict[Cell, float]]:
    """Per strategy and cell with a target that every strategy ran: the time-to-target ratio to
    the cell's fastest strategy (``inf`` if not reached, or if no strategy reached it)."""
    out: dict[str, dict[Cell, float]] = defaultdict(dict)
    for cell in cells:
        target = targets.get((cell[0], cell[2]))
        runs = {name: by_strategy.get(name, {}).get(cell) for name in strategies}
        if target is None or not all(runs.values()):
            continue
        times = {name: time_to_target(run, target) for name, run in runs.items() if run}
        fastest = min(times.values())
        for name, value in times.items():
            out[name][cell] = value / fastest if math.isfinite(fastest) else math.inf
    return out


def paired_difference(
    runs: Sequence[RunRecord],
    a: str,
    b: str,
    keep: Callable[[Cell], bool] = lambda cell: True,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Interval | None:
    """Mean over the cells both ran of ``log(scored test loss of a / scored test loss of b)``:
    ``a`` 's regret minus ``b`` 's on the same cells (the oracle cancels out)."""
    untrained = untrained_losses(runs)
    losses: dict[str, dict[Cell, float]] = defaultdict(dict)
    for run in runs:
        if run.strategy in (a, b) and keep(run.cell):
            losses[run.strategy][run.cell] = scored_loss(run, untrained)
    common = sorted(set(losses[a]) & set(losses[b]))
    values = [
        math.log(losses[a][c] / losses[b][c])
        for c in common
        if all(math.isfinite(x) and x > 0 for x in (losses[a][c], losses[b][c]))
    ]
    return bootstrap_mean(values, resamples)


def direction_reversals(lr: Sequence[float]) -> int:
    """How often a learning-rate trajectory changes direction: a raise followed (after any
    epochs kept) by a cut, or the reverse. ``lr`` is the rate of each epoch."""
    reversals, last = 0, 0
    for before, after in zip(lr, lr[1:], strict=False):
        if not (math.isfinite(before) and math.isfinite(after)) or after == before:
            continue
        direction = 1 if after > before else -1
        reversals += last != 0 and direction != last
        last = direction
    return reversals
