"""A recipe's quality over training seeds: one benchmark per seed's bundle, their spread, a pick.

PPO amplifies float differences between CPUs, so a recipe trained on another
machine gives another bundle: its quality is a distribution, and one bundle is
one draw of it. ``fitpilot recipe`` trains a recipe with several seeds and
benchmarks every bundle on the same cells (the ``validation`` suite by
default, never ``holdout``); this module reads those benchmarks, reports the
mean and spread of each figure, and picks the bundle to ship by a rule written
in the recipe (:data:`SELECTION_RULES`).

Only the ``learned`` runs depend on the bundle: the constant-rate grid and the
other strategies are run once, in a store of their own
(:func:`seed_store_from_baselines` copies them into each seed's store), so
evaluating n seeds costs one benchmark plus n times the learned runs.

This module imports neither TensorFlow nor the agents.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fitpilot.experiments.settings import BenchmarkError, Settings
from fitpilot.experiments.store import ResultsStore, read_store, reuse_runs
from fitpilot.experiments.strategies import PRODUCT
from fitpilot.experiments.summary import summarize
from fitpilot.jsonable import jsonable

LEARNED = PRODUCT  # the strategy whose bundle a recipe trains
#: The recipe file's key for the selection rule (read by `fitpilot recipe`; not a setting).
SELECT_KEY = "select"
#: How the shipped bundle is picked among the seeds (by validation figures only).
SELECTION_RULES = {
    "median_regret": "the seed whose validation regret is the median (the lower one of an "
    "even count): a typical draw, neither the luckiest nor the worst",
    "best_regret": "the seed with the lowest validation regret",
}
DEFAULT_RULE = "median_regret"
RECIPE_REPORT = "recipe.md"
RECIPE_JSON = "recipe.json"


@dataclass(frozen=True)
class SeedFigures:
    """The learned controller of one training seed, over every cell of its benchmark.

    ``regret`` is the mean log(test loss / oracle test loss); ``compute`` the
    mean epochs run as a share of the budget; ``lowest_win_rate`` the lowest
    share of cells it wins against another strategy, and ``lowest_against``
    that strategy.
    """

    seed: int
    controller: str
    regret: float
    compute: float
    lowest_win_rate: float
    lowest_against: str
    cells: int


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation (n - 1; 0 for one seed), minimum and maximum of one figure."""

    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, min(values), max(values))


def check_rule(rule: str) -> str:
    """``rule`` if it is a known selection rule; :class:`BenchmarkError` listing them if not."""
    if rule not in SELECTION_RULES:
        raise BenchmarkError(
            f"unknown selection rule {rule!r}; valid rules are {', '.join(SELECTION_RULES)}"
        )
    return rule


def seed_figures(seed: int, directory: str | Path) -> SeedFigures:
    """The learned strategy's figures in the (finished) benchmark store at ``directory``."""
    contents = read_store(directory)
    settings, runs = contents.settings, contents.runs
    if LEARNED not in settings.strategies:
        raise BenchmarkError(f"the benchmark in {directory} did not run the learned strategy")
    summary = summarize(runs, settings.strategies, settings.oracle_grid)
    mine = summary.per_strategy.get(LEARNED)
    if mine is None or mine.regret is None or mine.compute is None:
        raise BenchmarkError(
            f"the benchmark in {directory} has no regret for the learned strategy (no oracle "
            f"grid, or no finished learned run); finish it with `resume=True`"
        )
    wins = {
        other: interval.mean
        for (a, other), interval in summary.win_rate.items()
        if a == LEARNED
    }
    against = min(wins, key=wins.__getitem__) if wins else ""
    return SeedFigures(
        seed=seed,
        controller=str(settings.controller),
        regret=mine.regret.mean,
        compute=mine.compute.mean,
        lowest_win_rate=wins[against] if wins else math.nan,
        lowest_against=against,
        cells=mine.cells,
    )


def select(figures: Sequence[SeedFigures], rule: str) -> SeedFigures:
    """The seed that ``rule`` picks (ties: the lower seed)."""
    check_rule(rule)
    if not figures:
        raise BenchmarkError("no seed to select from")
    ranked = sorted(figures, key=lambda f: (f.regret, f.seed))
    if rule == "best_regret":
        return ranked[0]
    return ranked[(len(ranked) - 1) // 2]


def seed_store_from_baselines(baselines: str | Path, target: str | Path, settings: Settings) -> int:
    """Start the store at ``target`` for ``settings`` with the runs that do not need its bundle,
    from the finished store at ``baselines`` (:func:`~fitpilot.experiments.store.reuse_runs`).
    Returns the number of runs copied. A store already at ``target`` is left alone (0): the
    benchmark resumes it.
    """
    if (Path(target) / "runs.jsonl").exists():
        return 0
    with ResultsStore.open(target, settings) as store:
        return reuse_runs(baselines, store, settings)


def write_recipe_report(
    directory: str | Path, recipe: str, figures: Sequence[SeedFigures], rule: str, suite: str
) -> Path:
    """Write ``recipe.md`` and ``recipe.json`` into ``directory``: per seed, spread, the pick."""
    directory = Path(directory)
    chosen = select(figures, rule)
    spreads = {
        name: Spread.of([getattr(f, name) for f in figures])
        for name in ("regret", "compute", "lowest_win_rate")
    }
    lines = [
        f"# Recipe quality over {len(figures)} training seeds",
        "",
        f"Recipe `{recipe}`, each seed's bundle benchmarked on the `{suite}` suite "
        f"({chosen.cells} cells each; the other strategies and the oracle grid are the same "
        f"runs for every seed). Regret: mean log(test loss / oracle test loss); compute: "
        f"epochs run / budget; lowest win rate: the learned controller's lowest share of "
        f"cells won against one other strategy.",
        "",
        "| seed | controller | regret | compute | lowest win rate (against) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in sorted(figures, key=lambda f: f.seed):
        mark = " **(picked)**" if f is chosen else ""
        lines.append(
            f"| {f.seed}{mark} | `{f.controller}` | {f.regret:.3f} | {f.compute:.2f} | "
            f"{f.lowest_win_rate:.2f} ({f.lowest_against}) |"
        )
    lines += ["", "| figure | mean | std | min | max |", "| --- | --- | --- | --- | --- |"]
    for name, spread in spreads.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {spread.mean:.3f} | {spread.std:.3f} | "
            f"{spread.low:.3f} | {spread.high:.3f} |"
        )
    lines += [
        "",
        f"Picked by the recipe's rule `{rule}`: {SELECTION_RULES[rule]}. Seed {chosen.seed}, "
        f"controller `{chosen.controller}`.",
        "",
    ]
    (directory / RECIPE_REPORT).write_text("\n".join(lines), encoding="utf-8")
    data = {
        "recipe": recipe,
        "suite": suite,
        "rule": rule,
        "picked": chosen.seed,
        "seeds": [asdict(f) for f in figures],
        "spread": {name: asdict(s) for name, s in spreads.items()},
    }
    (directory / RECIPE_JSON).write_text(
        json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return directory / RECIPE_REPORT
