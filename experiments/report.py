"""The benchmark report: ``report.md`` (summary, win rates, per-lr and per-task tables) and plots.

Built from the results store alone, so ``fitpilot report DIR`` can rebuild it
at any time, also from an unfinished benchmark (the report says so).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitpilot.experiments.plots import plot_lr_trajectories, plot_regret_compute, plot_val_curves
from fitpilot.experiments.settings import ORACLE, Settings
from fitpilot.experiments.store import read_store
from fitpilot.experiments.summary import Interval, Summary, summarize

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
    strategies = [s for s in settings.strategies if any(r["strategy"] == s for r in runs)]
    strategies = strategies or list(settings.strategies)
    overall = summarize(runs, strategies, settings.oracle_grid)

    plots: list[tuple[str, str, str | None]] = []  # (title, file, or why it is missing)
    plots.append(
        (
            "Validation loss per strategy",
            "val_curves.png",
            plot_val_curves(runs, strategies, directory / "val_curves.png"),
        )
    )
    plots.append(
        (
            "Learning rate chosen by the learned controller",
            "lr_trajectories.png",
            plot_lr_trajectories(runs, settings, directory / "lr_trajectories.png"),
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
    lines += _summary_section(overall, settings)
    lines += _win_section(overall)
    lines += _lr_factor_section(runs, strategies, settings)
    lines += _controller_section(runs)
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
    return f"**{strategy}**" if strategy == "learned" else strategy


# --- sections ---------------------------------------------------------------------


def _header(settings: Settings, runs: Sequence[dict[str, Any]]) -> list[str]:
    planned = len(settings.run_keys())
    tasks = ", ".join(t.name for t in settings.tasks)
    grid = (
        f"{settings.oracle_grid} learning rates x{settings.oracle_factors()[0]:g} .. "
        f"x{settings.oracle_factors()[-1]:g} the task default"
        if settings.oracle_grid
        else "off"
    )
    controller = settings.controller or "none (learned not benchmarked)"
    source = f" (`{settings.controller_source}`)" if settings.controller_source else ""
    wall = sum(float(r.get("wall_seconds") or 0) for r in runs)
    lines = [
        "# fitpilot benchmark",
        "",
        f"- controller: `{controller}`{source}",
        f"- tasks ({settings.task_source or 'custom'}): {tasks}",
        f"- starting learning rate: x{', x'.join(f'{f:g}' for f in settings.lr_factors)} "
        f"the task default; seeds per cell: {settings.seeds}",
        f"- hindsight oracle: {grid}",
        f"- strategies: {', '.join(settings.strategies)}",
        f"- runs: {len(runs)} of {planned}; training time {wall:.0f} s (sum over runs); "
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
    return lines


def _summary_section(summary: Summary, settings: Settings) -> list[str]:
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
        f"{summary.oracle_cells} with an oracle.",
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
        rows.append(
            [
                _name(name),
                _interval(s.regret, undefined="undefined" if not summary.has_regret else "n/a"),
                f"{sum(wins) / len(wins):.2f}" if wins else "n/a",
                _interval(s.compute),
                str(s.diverged),
                _num(s.wall_mean, 2),
                f"{s.wall_total:.0f}",
                str(s.cells),
            ]
        )
    head = [
        "strategy",
        "regret [95% CI]",
        "mean win rate",
        "compute [95% CI]",
        "diverged",
        "wall s/run",
        "wall s total",
        "cells",
    ]
    return lines + _table(head, rows)


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


def _lr_factor_section(
    runs: Sequence[dict[str, Any]], strategies: Sequence[str], settings: Settings
) -> list[str]:
    lines = ["## By starting learning rate", ""]
    by_factor = {
        f: summarize(runs, strategies, settings.oracle_grid, keep=lambda c, f=f: c[1] == f)
        for f in settings.lr_factors
    }
    if not any(s.has_regret for s in by_factor.values()):
        lines += [
            "Regret (and so this table) is undefined without the hindsight oracle; "
            "compute per starting learning rate:",
            "",
        ]
        cell = lambda s: _interval(s.compute)  # noqa: E731
    else:
        lines += ["Regret [95% CI] per starting learning rate (factor of the task default):", ""]
        cell = lambda s: _interval(s.regret)  # noqa: E731
    rows = [
        [_name(name)] + [cell(by_factor[f].per_strategy[name]) for f in settings.lr_factors]
        for name in strategies
    ]
    return lines + _table(["strategy", *(f"x{f:g}" for f in settings.lr_factors)], rows)


def _controller_section(runs: Sequence[dict[str, Any]]) -> list[str]:
    learned = [r for r in runs if r["strategy"] == "learned"]
    if not learned:
        return []
    actions: Counter[str] = Counter()
    for run in learned:
        for row in run.get("decisions") or []:
            if isinstance(row, dict) and "action" in row:
                actions[str(row["action"])] += 1
    stops = sum(r["epochs"] < r["budget"] for r in learned)
    lines = [
        "## What the learned controller did",
        "",
        f"{len(learned)} runs; stopped before the budget in {stops}.",
    ]
    total = sum(actions.values())
    if total:
        lines.append(
            "Decisions: "
            + ", ".join(f"{name} {count / total:.0%}" for name, count in actions.most_common())
            + "."
        )
    return lines + [""]


def _task_sections(
    runs: Sequence[dict[str, Any]], strategies: Sequence[str], settings: Settings
) -> list[str]:
    lines = ["## Per task", ""]
    for task in settings.tasks:
        summary = summarize(
            runs, strategies, settings.oracle_grid, keep=lambda c, t=task: c[0] == t.name
        )
        metric = next(
            (r.get("metric") for r in runs if r["task"] == task.name and r.get("metric")), None
        )
        lines += [
            f"### {task.name}",
            "",
            f"Budget {task.epochs} epochs, batch {task.batch_size}, {task.optimizer} at "
            f"default learning rate {task.learning_rate:g}, loss {task.loss}.",
            "",
        ]
        best = _oracle_choices(runs, task.name)
        if best:
            lines += [f"Oracle's best constant learning rate: {best}.", ""]
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
                    str(s.diverged),
                    _num(s.wall_mean, 2),
                ]
            )
        head = [
            "strategy",
            "regret [95% CI]",
            "test loss",
            f"test {metric or 'metric'}",
            "compute",
            "diverged",
            "wall s/run",
        ]
        lines += _table(head, rows)
    return lines


def _oracle_choices(runs: Sequence[dict[str, Any]], task: str) -> str:
    """``"x0.2154 (seed 0), x1 (seed 1)"``: the grid factor with the lowest test loss, per seed."""
    best: dict[int, tuple[float, float]] = {}
    for run in runs:
        loss = run.get("test_loss")
        if run["strategy"] == ORACLE and run["task"] == task and loss is not None:
            seed = int(run["seed"])
            if seed not in best or loss < best[seed][0]:
                best[seed] = (loss, float(run["lr_factor"]))
    return ", ".join(f"x{best[s][1]:g} (seed {s})" for s in sorted(best))


def _definitions(settings: Settings) -> list[str]:
    return [
        "## Definitions",
        "",
        "- **cell**: (task, starting learning rate, seed). Every strategy of a cell trains the "
        "same initial weights on the same data order within the task's epoch budget; the test "
        "split only scores the final weights.",
        "- **regret**: mean over cells of log(test loss / oracle test loss); lower is better, "
        "below 0 beats every constant learning rate of the grid. Cells where a strategy's test "
        "loss is not finite are left out of its regret and counted as **diverged**.",
        "- **hindsight oracle**: per task and seed, the lowest test loss of constant learning "
        "rates on the log grid, each with best-epoch restore (the same for every starting "
        "learning rate of the cell).",
        "- **win rate**: share of cells where the row's test loss is strictly lower; a "
        "non-finite loss loses to any finite one. The summary's mean win rate averages a "
        "strategy's win rates against every other strategy.",
        "- **compute**: epochs run / epoch budget. **wall**: seconds of fit plus test scoring "
        "per run.",
        "- Intervals: 95% percentile bootstrap over cells (2000 resamples).",
        "",
    ]
