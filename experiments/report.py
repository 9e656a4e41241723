"""The benchmark report: ``report.md`` (summary, reference rates, per-lr regret, win rates,
time to target, per-task tables) and plots.

Built from the results store alone, so ``fitpilot report DIR`` can rebuild it
at any time, also from an unfinished benchmark (the report says so).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fitpilot.experiments.plots import (
    plot_lr_trajectories,
    plot_profiles,
    plot_regret_compute,
    plot_val_curves,
)
from fitpilot.experiments.reference_rate import reference_rates, tuned_rate
from fitpilot.experiments.settings import RunRecord, Settings
from fitpilot.experiments.store import read_store
from fitpilot.experiments.strategies import (
    GOOD_START_BASELINE,
    PRODUCT,
    STRATEGY_TABLE,
    is_factor_free,
)
from fitpilot.experiments.summary import (
    TARGET_SLACK,
    TAU_MAX,
    Interval,
    Summary,
    direction_reversals,
    paired_difference,
    summarize,
)

REPORT_FILE = "report.md"


@dataclass(frozen=True)
class ReportResult:
    """Where the report was written, and the store's warning about unreadable lines, if any."""

    path: Path
    warning: str | None


def write_report(directory: str | Path) -> ReportResult:
    """Read the store in ``directory``; write ``report.md`` and the PNG plots beside it."""
    directory = Path(directory)
    contents = read_store(directory)
    settings, runs = contents.settings, contents.runs
    strategies = [s for s in settings.strategies if any(r.strategy == s for r in runs)]
    strategies = strategies or list(settings.strategies)
    overall = summarize(runs, strategies, settings.oracle_grid)
    by_factor = {
        f: summarize(runs, strategies, settings.oracle_grid, keep=lambda c, f=f: c[1] == f)
        for f in settings.lr_factors
    }

    plots: list[tuple[str, str, str | None]] = []  # (title, file, or why it is missing)
    plots.append(
        (
            "Validation loss per strategy",
            "val_curves.png",
            plot_val_curves(runs, strategies, directory / "val_curves.png"),
        )
    )
    adaptive = [name for name in strategies if _records_decisions(name)]
    plots.append(
        (
            "Learning rates chosen by the strategies that decide from the loss",
            "lr_trajectories.png",
            plot_lr_trajectories(
                runs, adaptive, reference_rates(runs, settings), directory / "lr_trajectories.png"
            ),
        )
    )
    plots.append(
        (
            "Time to target: performance profiles",
            "profiles.png",
            plot_profiles(overall, directory / "profiles.png"),
        )
    )
    plots.append(
        (
            "Regret against compute",
            "regret_compute.png",
            plot_regret_compute(overall, directory / "regret_compute.png"),
        )
    )

    lines = _header(settings, runs)
    lines += _summary_section(overall, by_factor, settings)
    lines += _good_start_section(runs, strategies, settings)
    lines += _reference_section(runs, settings)
    lines += _lr_factor_section(by_factor, strategies, settings)
    lines += _win_section(overall)
    lines += _profile_section(overall)
    lines += _untrained_section(runs, strategies)
    lines += _decisions_section(runs, adaptive)
    lines += _task_sections(runs, strategies, settings)
    lines += ["## Plots", ""]
    for title, file, missing in plots:
        lines += [f"### {title}", "", missing or f"![{title}]({file})", ""]
    lines += _definitions(settings)
    path = directory / REPORT_FILE
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return ReportResult(path, contents.warning())


# --- formatting -------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _interval(interval: Interval | None, digits: int = 2, undefined: str = "n/a") -> str:
    if interval is None:
        return undefined
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + [""]


def _name(strategy: str) -> str:
    return f"**{strategy}**" if strategy == PRODUCT else strategy


def _records_decisions(strategy: str) -> bool:
    row = STRATEGY_TABLE.get(strategy)
    return row is not None and row.records_decisions


def _short(description: str) -> str:
    """A task's loss or optimizer as the store describes it, short: a Keras object's class."""
    if description.startswith("{"):
        try:
            return str(json.loads(description).get("class_name", description))
        except ValueError:
            return description
    return description


# --- sections ---------------------------------------------------------------------


def planned_runs(settings: Settings, runs: Sequence[RunRecord]) -> int:
    """Runs of the plan: grid, strategies, and the grid extensions already decided."""
    plan = set(settings.run_keys())
    return len(plan) + sum(1 for r in runs if r.key not in plan and r.is_oracle)


def _header(settings: Settings, runs: Sequence[RunRecord]) -> list[str]:
    planned = planned_runs(settings, runs)
    tasks = ", ".join(t.name for t in settings.tasks)
    factors = settings.oracle_factors()
    grid = (
        f"{settings.oracle_grid} constant learning rates x{factors[0]:g} .. x{factors[-1]:g} "
        f"the task default, each with best-epoch restore"
        + (", extended at an edge for the tuned rate" if settings.tuned else "")
        if settings.oracle_grid
        else "off"
    )
    reference = (
        "tuned (the grid's rate with the lowest mean best validation loss)"
        if settings.tuned
        else "the task default"
    )
    controller = settings.controller or "none (learned not benchmarked)"
    source = f" (`{settings.controller_source}`)" if settings.controller_source else ""
    # A factor-free strategy's record stands at every factor: count its run once.
    ran = [r for r in runs if settings.runs_at(r.key) == r.key]
    wall = sum(r.wall_seconds for r in ran if math.isfinite(r.wall_seconds))
    lines = [
        "# fitpilot benchmark",
        "",
        f"- protocol v{settings.protocol}; controller: `{controller}`{source}",
        f"- tasks ({settings.task_source or 'custom'}): {tasks}",
        f"- reference learning rate: {reference}",
        f"- starting learning rate: x{', x'.join(f'{f:g}' for f in settings.lr_factors)} "
        f"the reference; seeds per cell: {settings.seeds}",
        f"- hindsight oracle and grid: {grid}",
        f"- strategies: {', '.join(settings.strategies)}",
        f"- runs: {len(runs)} of {planned} ({len(ran)} trained); training time {wall:.0f} s "
        f"(sum over runs); "
        f"fitpilot {settings.fitpilot_version}",
        "",
    ]
    notes = settings.warnings()
    if len(runs) < planned:
        notes.insert(
            0,
            f"unfinished: {planned - len(runs)} of {planned} runs are missing; "
            f"continue with `fitpilot benchmark ... --resume`",
        )
    if notes:
        lines += ["> **Note**", ">"] + [f"> - {note}." for note in notes] + [""]
    warned = [r for r in runs if r.warning]
    if warned:
        lines += [f"> - {r.key.label()}: {r.warning}." for r in warned[:10]] + [""]
    return lines


def _summary_section(
    summary: Summary, by_factor: dict[float, Summary], settings: Settings
) -> list[str]:
    lines = ["## Summary", ""]
    if not summary.has_regret:
        lines += [
            "Regret is undefined: it needs the hindsight oracle, and "
            + (
                "this benchmark ran without it (`--oracle-grid 0`)."
                if settings.oracle_grid == 0
                else "no cell has a complete oracle grid yet."
            ),
            "",
        ]
    lines += [
        f"{len(summary.cells)} cells (task x starting learning rate x seed); "
        f"{summary.oracle_cells} with an oracle. Regret per starting factor: means "
        f"(intervals below).",
        "",
    ]
    rows = []
    for name in summary.strategies:
        s = summary.per_strategy[name]
        wins = [
            summary.win_rate[(name, o)].mean
            for o in summary.strategies
            if (name, o) in summary.win_rate
        ]
        per_factor = [by_factor[f].per_strategy[name].regret for f in settings.lr_factors]
        rows.append(
            [
                _name(name),
                _interval(s.regret, undefined="undefined" if not summary.has_regret else "n/a"),
                *(f"{r.mean:.2f}" if r else "n/a" for r in per_factor),
                f"{sum(wins) / len(wins):.2f}" if wins else "n/a",
                _interval(s.compute),
                _interval(s.start_spread),
                _num(s.profile_score, 2),
                f"{s.diverged} / {s.failed}",
                _num(s.wall_mean, 2),
                str(s.cells),
            ]
        )
    head = [
        "strategy",
        "regret [95% CI]",
        *(f"x{f:g}" for f in settings.lr_factors),
        "mean win rate",
        "compute [95% CI]",
        "start spread [95% CI]",
        "time to target",
        "diverged / failed",
        "wall s/run",
        "cells",
    ]
    return lines + _table(head, rows)


def _good_start_section(
    runs: Sequence[RunRecord], strategies: Sequence[str], settings: Settings
) -> list[str]:
    """The product's regret minus the good-start baseline's at x1, paired by cell."""
    product, baseline = PRODUCT, GOOD_START_BASELINE
    if 1.0 not in settings.lr_factors or not {product, baseline} <= set(strategies):
        return []
    harm = paired_difference(runs, product, baseline, keep=lambda c: c[1] == 1.0)
    if harm is None:
        return []
    verdict = (
        "the controller does harm from a good start"
        if harm.low > 0
        else f"the controller does better than {baseline} from a good start"
        if harm.high < 0
        else "no clear difference"
    )
    return [
        f"**Harm from a good start** (x1, {product}'s regret minus {baseline}'s, paired over "
        f"{harm.n} cells): {_interval(harm)}; {verdict}.",
        "",
    ]


def _reference_section(runs: Sequence[RunRecord], settings: Settings) -> list[str]:
    if not settings.oracle_grid:
        return []
    lines = [
        "## Reference learning rates",
        "",
        (
            "The starting factors multiply the tuned rate: the grid's constant rate with the "
            "lowest best validation loss, averaged over the seeds (the test split never "
            "decides it)."
            if settings.tuned
            else "The starting factors multiply the task default; the tuned rate (the grid's "
            "best on validation) is shown for comparison."
        ),
        "",
    ]
    rows = []
    for task in settings.tasks:
        tuned = tuned_rate(runs, settings, task.name)
        if tuned is None:
            rows.append([task.name, task.optimizer, _num(task.learning_rate), "n/a", "", "", ""])
            continue
        extended = ", ".join(f"x{f:g}" for f in tuned.extended) or "no"
        rows.append(
            [
                task.name,
                task.optimizer,
                _num(task.learning_rate),
                _num(tuned.rate),
                f"x{tuned.factor:g}",
                extended + (" (winner still at the edge)" if tuned.at_edge else ""),
                _num(tuned.val_loss, 4),
            ]
        )
    head = [
        "task",
        "optimizer",
        "default lr",
        "tuned lr",
        "tuned / default",
        "grid extended",
        "best val loss (mean)",
    ]
    return lines + _table(head, rows)


def _lr_factor_section(
    by_factor: dict[float, Summary], strategies: Sequence[str], settings: Settings
) -> list[str]:
    lines = ["## By starting learning rate", ""]
    if not any(s.has_regret for s in by_factor.values()):
        lines += [
            "Regret (and so this table) is undefined without the hindsight oracle; "
            "compute per starting learning rate:",
            "",
        ]
        cell = lambda s: _interval(s.compute)  # noqa: E731
    else:
        lines += ["Regret [95% CI] per starting learning rate (factor of the reference):", ""]
        cell = lambda s: _interval(s.regret)  # noqa: E731
    free = [name for name in strategies if is_factor_free(name)]
    if free:
        lines += [
            f"{' and '.join(free)} do not depend on the starting rate: one run per task and "
            f"seed stands for every factor.",
            "",
        ]
    rows = [
        [_name(name)] + [cell(by_factor[f].per_strategy[name]) for f in settings.lr_factors]
        for name in strategies
    ]
    return lines + _table(["strategy", *(f"x{f:g}" for f in settings.lr_factors)], rows)


def _win_section(summary: Summary) -> list[str]:
    if not summary.win_rate:
        return []
    lines = [
        "## Win rates",
        "",
        "Share of cells where the row's test loss is lower than the column's "
        "(95% CI); ties count for neither.",
        "",
    ]
    rows = []
    for a in summary.strategies:
        row = [_name(a)]
        for b in summary.strategies:
            row.append("-" if a == b else _interval(summary.win_rate.get((a, b))))
        rows.append(row)
    return lines + _table(["row beats column", *summary.strategies], rows)


def _profile_section(summary: Summary) -> list[str]:
    if not summary.has_profile:
        return []
    cells = max(len(r) for r in summary.ratios.values())
    lines = [
        "## Time to target",
        "",
        f"Per cell, the epochs (range-test probes included) until the validation loss first "
        f"reaches the target, the grid's best validation loss x{TARGET_SLACK:g}; rho(tau) is "
        f"the share of cells within tau x the fastest strategy of the cell. Score: the "
        f"integral of rho over tau in [1, {TAU_MAX:g}], scaled to [0, 1] (1: fastest "
        f"everywhere). {cells} cells.",
        "",
    ]
    rows = []
    for name in summary.strategies:
        s = summary.per_strategy[name]
        ratios = summary.ratios.get(name) or []
        fastest = sum(r == 1.0 for r in ratios)
        rows.append(
            [
                _name(name),
                _num(s.profile_score, 2),
                f"{s.reached / len(ratios):.2f}" if ratios else "n/a",
                f"{fastest / len(ratios):.2f}" if ratios else "n/a",
            ]
        )
    return lines + _table(["strategy", "score", "reached target", "fastest"], rows)


def _untrained_section(runs: Sequence[RunRecord], strategies: Sequence[str]) -> list[str]:
    """The runs scored as untrained: diverged (non-finite weights or test loss) or failed."""
    bad = [r for r in runs if not r.is_oracle and r.strategy in strategies
           and r.counts_as_untrained]
    lines = [
        "## Diverged and failed runs",
        "",
        "A run whose final weights or test loss are not finite (diverged), or that raised "
        "an error (failed), is scored with the test loss of its cell's untrained model: the "
        "model a user is left with. Counted, never dropped.",
        "",
    ]
    if not bad:
        return lines + ["None.", ""]
    rows = [[_name(name), str(sum(r.diverged for r in bad if r.strategy == name)),
             str(sum(r.failed for r in bad if r.strategy == name))]
            for name in strategies if any(r.strategy == name for r in bad)]
    lines += _table(["strategy", "diverged", "failed"], rows)
    failed = [r for r in bad if r.failed]
    if failed:
        lines += [f"- {r.key.label()}: {r.error}" for r in failed[:20]]
        if len(failed) > 20:
            lines.append(f"- ... and {len(failed) - 20} more failed runs")
        lines += ["", "`fitpilot benchmark ... --resume` runs the failed runs again.", ""]
    if any(r.untrained_test_loss is None for r in bad):
        lines += [
            "Some of these runs predate the untrained-loss record (protocol v2): they are "
            "scored with the highest finite test loss of their task and seed instead.",
            "",
        ]
    return lines


def _decisions_section(runs: Sequence[RunRecord], strategies: Sequence[str]) -> list[str]:
    """What each strategy that decides from the loss did: its actions, stops and reversals."""
    lines: list[str] = []
    for name in strategies:
        mine = [r for r in runs if r.strategy == name and not r.failed]
        if not mine:
            continue
        actions: Counter[str] = Counter()
        for run in mine:
            for row in run.decisions or ():
                if isinstance(row, dict) and "action" in row:
                    actions[str(row["action"])] += 1
        stops = sum(r.epochs < r.budget for r in mine)
        rates = sorted(direction_reversals(r.lr) / max(r.epochs, 1) for r in mine)
        median = rates[len(rates) // 2] if len(rates) % 2 else (
            (rates[len(rates) // 2 - 1] + rates[len(rates) // 2]) / 2)
        total = sum(direction_reversals(r.lr) for r in mine)
        lines += [
            f"### What {name} did",
            "",
            f"{len(mine)} runs; stopped before the budget in {stops}. Direction reversals of "
            f"the learning rate (a raise followed by a cut, or the reverse): {median:.2f} per "
            f"epoch in the median run, {total / len(mine):.1f} per run on average.",
        ]
        count = sum(actions.values())
        if count:
            lines.append(
                "Decisions: "
                + ", ".join(f"{a} {c / count:.0%}" for a, c in actions.most_common())
                + "."
            )
        lines.append("")
    return (["## What the adaptive strategies did", ""] + lines) if lines else []


def _task_sections(
    runs: Sequence[RunRecord], strategies: Sequence[str], settings: Settings
) -> list[str]:
    lines = ["## Per task", ""]
    for task in settings.tasks:
        summary = summarize(
            runs, strategies, settings.oracle_grid, keep=lambda c, t=task: c[0] == t.name
        )
        metric = next((r.metric for r in runs if r.task == task.name and r.metric), None)
        tuned = tuned_rate(runs, settings, task.name) if settings.oracle_grid else None
        reference = f"; tuned rate {tuned.rate:g} (x{tuned.factor:g})" if tuned else ""
        lines += [
            f"### {task.name}",
            "",
            f"Budget {task.epochs} epochs, batch {task.batch_size}, {_short(task.optimizer)} at "
            f"default learning rate {task.learning_rate:g}{reference}, loss "
            f"{_short(task.loss)}.",
            "",
        ]
        best = _oracle_choices(runs, task.name)
        if best:
            lines += [f"Oracle's best constant learning rate (on test): {best}.", ""]
        rows = []
        for name in strategies:
            s = summary.per_strategy[name]
            rows.append(
                [
                    _name(name),
                    _interval(s.regret, undefined="undefined"),
                    _num(s.test_loss, 4),
                    _num(s.test_metric, 4),
                    _interval(s.compute),
                    f"{s.diverged} / {s.failed}",
                    _num(s.wall_mean, 2),
                ]
            )
        head = [
            "strategy",
            "regret [95% CI]",
            "test loss",
            f"test {metric or 'metric'}",
            "compute",
            "diverged / failed",
            "wall s/run",
        ]
        lines += _table(head, rows)
    return lines


def _oracle_choices(runs: Sequence[RunRecord], task: str) -> str:
    """``"x0.2154 (seed 0), x1 (seed 1)"``: the grid factor with the lowest test loss, per seed."""
    best: dict[int, tuple[float, float]] = {}
    grid = [r for r in runs if r.is_oracle and r.task == task and math.isfinite(r.test_loss)]
    for run in grid:
        if run.seed not in best or run.test_loss < best[run.seed][0]:
            best[run.seed] = (run.test_loss, run.lr_factor)
    return ", ".join(f"x{best[s][1]:g} (seed {s})" for s in sorted(best))


def _definitions(settings: Settings) -> list[str]:
    rows = [STRATEGY_TABLE[name] for name in settings.strategies if name in STRATEGY_TABLE]
    return [
        "## Definitions",
        "",
        "- **cell**: (task, starting learning rate, seed). Every strategy of a cell trains the "
        "same initial weights on the same data order within the task's epoch budget; the test "
        "split only scores the final weights.",
        "- **reference learning rate**: what the starting factors multiply; "
        + (
            "here the tuned rate (the grid's rate with the lowest best validation loss, "
            "averaged over seeds)."
            if settings.tuned
            else "here the task default."
        ),
        "- **regret**: mean over cells of log(test loss / oracle test loss); lower is better, "
        "below 0 beats every constant learning rate of the grid. A run that **diverged** (final "
        "weights or test loss not finite) or **failed** (raised an error) is scored with its "
        "cell's untrained test loss.",
        "- **start spread**: per task and seed, the largest minus the smallest regret over the "
        "starting factors, averaged; 0 for a strategy whose result does not depend on the "
        "start.",
        "- **hindsight oracle**: per task and seed, the lowest test loss of constant learning "
        "rates on the log grid (extensions included), each with best-epoch restore (the same "
        "for every starting learning rate of the cell).",
        "- **win rate**: share of cells where the row's (scored) test loss is strictly lower. "
        "The summary's mean win rate averages a strategy's win rates against every other "
        "strategy.",
        "- **compute**: (epochs run + probe batches / batches per epoch) / epoch budget. "
        "**wall**: seconds of probe, fit and test scoring per run.",
        "- **time to target**: see its section; AlgoPerf-style performance profiles.",
        "- **strategies**:",
        *(f"  - **{row.name}**: {row.description}." for row in rows),
        "- Intervals: 95% percentile bootstrap over cells (2000 resamples).",
        "",
    ]
