"""The reference learning rate of each task: the tuned rate (docs/benchmark.md) or the default.

The tuned rate of a task is the constant rate of the oracle grid whose best
*validation* loss, averaged over the seeds, is lowest; the test split never
decides it. When that rate sits at an edge of the grid, the grid is extended
on that side, one step at a time (the grid's own log step), until the winner is
inside or :data:`~fitpilot.experiments.settings.MAX_EXTENSION_DECADES` are added.

Pure functions of stored run records (no TensorFlow): the orchestrator asks
:func:`grid_extensions` which runs to add, runs them, and asks again until
it gets none; a resumed benchmark finds them in its store and gets the same answer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fitpilot.experiments.settings import ORACLE, RunKey, RunRecord, Settings, grid_extension


@dataclass(frozen=True)
class TunedRate:
    """A task's tuned reference: ``factor`` times its default rate ``default``.

    ``val_loss`` is the winner's best validation loss averaged over seeds;
    ``extended`` the grid factors added beyond the edges for this task;
    ``at_edge`` is true when the winner still sits at an edge (extension exhausted).
    """

    task: str
    default: float
    factor: float
    val_loss: float
    extended: tuple[float, ...] = ()
    at_edge: bool = False

    @property
    def rate(self) -> float:
        return self.default * self.factor


def grid_val_losses(runs: Iterable[RunRecord], task: str, seeds: int) -> dict[float, float]:
    """Per grid factor of ``task`` with all ``seeds`` run: the mean over seeds of the run's best
    validation loss (``inf`` if a seed never had a finite one)."""
    per_factor: dict[float, dict[int, float]] = defaultdict(dict)
    for run in runs:
        if run.strategy == ORACLE and run.task == task:
            per_factor[run.lr_factor][run.seed] = run.best_val_loss
    return {
        factor: math.fsum(losses.values()) / seeds
        for factor, losses in per_factor.items()
        if all(seed in losses for seed in range(seeds))
    }


def best_factor(losses: Mapping[float, float]) -> float:
    """The grid factor with the lowest loss (NaN counts as inf; ties: the one nearer x1).

    If no loss is finite (every rate diverged), 1: the default stays.
    """
    finite = {f: v for f, v in losses.items() if math.isfinite(v)}
    if not finite:
        return 1.0
    return min(finite, key=lambda f: (finite[f], abs(math.log(f))))


def tuned_rate(runs: Iterable[RunRecord], settings: Settings, task: str) -> TunedRate | None:
    """The tuned reference of ``task`` from the grid runs in ``runs``; ``None`` while the base
    grid is incomplete. If no grid rate ever had a finite validation loss, the default."""
    info = next(t for t in settings.tasks if t.name == task)
    losses = grid_val_losses(runs, task, settings.seeds)
    base = settings.oracle_factors()
    if not base or any(factor not in losses for factor in base):
        return None
    factors = sorted(losses)
    best = best_factor(losses)
    extended = tuple(f for f in factors if f not in base)
    if not math.isfinite(losses.get(best, math.inf)):  # every grid rate diverged
        return TunedRate(task, info.learning_rate, 1.0, math.inf, extended)
    at_edge = best in (factors[0], factors[-1]) and len(factors) > 1
    return TunedRate(task, info.learning_rate, best, losses[best], extended, at_edge)


def grid_extensions(runs: Iterable[RunRecord], settings: Settings) -> list[RunKey]:
    """The next grid runs to add (all seeds): one step beyond the edge where a task's winner
    sits, unless the grid already reaches the limit there. Empty when every task is settled."""
    runs = list(runs)
    keys = []
    for task in settings.tasks:
        tuned = tuned_rate(runs, settings, task.name)
        if tuned is None or not tuned.at_edge:
            continue
        base = settings.oracle_factors()
        side = -1 if tuned.factor <= base[0] else 1
        done = sum(1 for f in tuned.extended if (f < base[0] if side < 0 else f > base[-1]))
        factor = grid_extension(settings.oracle_grid, side, done)
        if factor is not None:
            keys += [RunKey(task.name, seed, factor, ORACLE) for seed in range(settings.seeds)]
    return keys


def reference_rates(runs: Iterable[RunRecord], settings: Settings) -> dict[str, float]:
    """The starting rate that factor 1 means, per task: tuned (when its grid is complete) or
    the default. Tasks whose tuned rate is not known yet are left out."""
    runs = list(runs)
    if not settings.tuned:
        return {task.name: task.learning_rate for task in settings.tasks}
    out = {}
    for task in settings.tasks:
        tuned = tuned_rate(runs, settings, task.name)
        if tuned is not None:
            out[task.name] = tuned.rate
    return out
