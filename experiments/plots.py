"""The report's plots (matplotlib, Agg backend, PNG). Each returns ``None`` when it wrote its
file, or a sentence saying why there is nothing to plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from fitpilot.experiments.settings import RunRecord  # noqa: E402
from fitpilot.experiments.strategies import PRODUCT, STRATEGY_TABLE  # noqa: E402
from fitpilot.experiments.summary import Summary, profile, tau_grid  # noqa: E402


def _color(name: str) -> str | None:
    row = STRATEGY_TABLE.get(name)
    return row.color if row is not None else None


def _style(name: str) -> Any:
    row = STRATEGY_TABLE.get(name)
    return row.style if row is not None else "-"


def _emphasis(name: str, plain: float, product: float) -> float:
    """``product`` for the strategy the benchmark is about, else ``plain`` (widths, sizes)."""
    return product if name == PRODUCT else plain


MAX_TASKS, MAX_FACTORS = 4, 3
DPI = 110


def _pick_factors(factors: Sequence[float]) -> list[float]:
    factors = sorted(set(factors))
    if len(factors) <= MAX_FACTORS:
        return factors
    return [factors[0], factors[len(factors) // 2], factors[-1]]


def _save(figure: plt.Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)


def plot_val_curves(
    runs: Sequence[RunRecord], strategies: Sequence[str], path: Path
) -> str | None:
    """Validation loss per epoch of every strategy: first seed of up to 4 tasks x 3 lr factors.

    Rows are tasks, columns starting learning rates; the dashed black line is
    the oracle grid's best constant learning rate for that task and seed.
    """
    cells = [r for r in runs if not r.is_oracle]
    tasks = list(dict.fromkeys(r.task for r in cells))[:MAX_TASKS]
    if not tasks:
        return "No finished runs to plot yet."
    factors = _pick_factors([r.lr_factor for r in cells])
    rows, cols = len(tasks), len(factors)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for i, task in enumerate(tasks):
        seed = min(r.seed for r in cells if r.task == task)
        oracle = _best_oracle(runs, task, seed)
        for j, factor in enumerate(factors):
            ax = axes[i][j]
            shown = []
            here = {r.strategy: r for r in cells if r.cell == (task, factor, seed)}
            for name in strategies:
                run = here.get(name)
                if run is None:
                    continue
                values = np.array(run.val_loss, dtype=float)
                shown.append(values)
                epochs = np.arange(1, len(values) + 1)
                width, z = _emphasis(name, 1.3, 2.2), _emphasis(name, 2, 3)
                ax.plot(
                    epochs,
                    values,
                    color=_color(name),
                    ls=_style(name),
                    lw=width,
                    zorder=z,
                    label=name,
                )
                if len(values) < run.budget:  # stopped early: mark the end
                    ax.plot(epochs[-1:], values[-1:], "o", color=_color(name), ms=4, zorder=z)
            if oracle is not None:
                values = np.array(oracle.val_loss, dtype=float)
                shown.append(values)
                ax.plot(
                    np.arange(1, len(values) + 1),
                    values,
                    "--",
                    color="black",
                    lw=1.0,
                    zorder=1,
                    label=f"oracle best (x{oracle.lr_factor:g} default lr)",
                )
            _loss_axis(ax, shown)
            ax.set_title(f"{task}, start lr x{factor:g}, seed {seed}", fontsize=9)
            ax.tick_params(labelsize=8)
            if i == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if j == 0:
                ax.set_ylabel("validation loss", fontsize=8)
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            key = "oracle" if label.startswith("oracle") else label
            if key not in handles:
                handles[key] = handle
                labels.append("oracle best constant lr" if key == "oracle" else label)
    figure.legend(
        list(handles.values()),
        labels,
        loc="lower center",
        ncol=min(len(labels), 5),
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, -0.01),
    )
    figure.suptitle("Validation loss per strategy (dot: stopped before the budget)", fontsize=11)
    legend_rows = math.ceil(len(labels) / 5)
    figure.tight_layout(rect=(0, 0.03 + 0.035 * legend_rows / rows, 1, 0.97))
    _save(figure, path)
    return None


def _best_oracle(runs: Sequence[RunRecord], task: str, seed: int) -> RunRecord | None:
    grid = [r for r in runs if r.is_oracle and (r.task, r.seed) == (task, seed)]
    grid = [r for r in grid if math.isfinite(r.test_loss)]
    return min(grid, key=lambda r: r.test_loss) if grid else None


def _loss_axis(ax: plt.Axes, series: Sequence[np.ndarray]) -> None:
    """Log scale if every loss is positive; y from the best loss to 3x the median first epoch,
    so that one diverging run does not flatten the others."""
    finite = np.concatenate([s[np.isfinite(s)] for s in series]) if series else np.array([])
    if finite.size == 0:
        return
    low = finite.min()
    starts = [s[np.isfinite(s)][0] for s in series if np.isfinite(s).any()]
    high = min(finite.max(), 3 * float(np.median(starts))) if starts else finite.max()
    high = max(high, low * 1.05) if low > 0 else max(high, low + 1e-6)
    if low > 0:
        ax.set_yscale("log")
        ax.set_ylim(low / 1.1, high * 1.1)
        _plain_log_ticks(ax)
    else:
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high + pad)


def _plain_log_ticks(ax: plt.Axes) -> None:
    """Log-axis tick labels as plain numbers (0.3, 1, 2) instead of 3 x 10^-1; on an axis of
    less than ~1.5 decades, the 2s, 3s and 5s are labelled too, so that it has labels at all."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    low, high = ax.get_ylim()
    if high / low < 30:
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_label))
    else:
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _minor_label(value: float, _: object) -> str:
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def plot_lr_trajectories(
    runs: Sequence[RunRecord], strategies: Sequence[str], references: dict[str, float], path: Path
) -> str | None:
    """The learning rate each of ``strategies`` set per epoch: a row of panels per strategy,
    a panel per task (up to :data:`MAX_TASKS`), a line per run, coloured by starting factor;
    the dotted line is the task's reference rate (``references``, by task name)."""
    shown = [r for r in runs if r.strategy in strategies and not r.failed and r.lr]
    names = [name for name in strategies if any(r.strategy == name for r in shown)]
    if not names:
        return "No runs of a strategy that sets the learning rate from the loss."
    tasks = list(dict.fromkeys(r.task for r in shown))[:MAX_TASKS]
    rows, cols = len(names), len(tasks)
    figure, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False,
                                sharey="col")
    factors = sorted({r.lr_factor for r in shown})
    palette = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, len(factors)))
    colour = dict(zip(factors, palette, strict=True))
    for i, name in enumerate(names):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            for run in (r for r in shown if r.task == task and r.strategy == name):
                lr = np.array(run.lr, dtype=float)
                lr = np.append(lr, lr[-1:])  # hold the last epoch's rate to its end
                ax.step(np.arange(1, len(lr) + 1), lr, where="post", color=colour[run.lr_factor],
                        lw=1.2, alpha=0.75, label=f"start x{run.lr_factor:g}")
            if task in references:
                ax.axhline(references[task], color="black", ls=":", lw=1,
                           label="reference lr (x1)")
            ax.set_yscale("log")
            _plain_log_ticks(ax)
            ax.set_title(f"{name}: {task}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if j == 0:
                ax.set_ylabel("learning rate", fontsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(len(handles), 5),
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, -0.01),
    )
    figure.suptitle("Learning rate of each epoch (one line per run; first tasks shown)",
                    fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    _save(figure, path)
    return None


def plot_regret_compute(summary: Summary, path: Path) -> str | None:
    """One point per strategy: mean regret against mean compute, with their 95% intervals."""
    points = [(n, s) for n, s in summary.per_strategy.items() if s.regret and s.compute]
    if not summary.has_regret or not points:
        return (
            "Regret is undefined without the hindsight oracle (`--oracle-grid 0`), "
            "so there is no regret-against-compute plot."
        )
    figure, ax = plt.subplots(figsize=(7.6, 4.6))
    # Strategies at (nearly) the same point are dodged sideways, so that each stays visible.
    groups: list[list[tuple[str, Any]]] = []
    for name, s in points:
        near = next((g for g in groups if _close(g[0][1], s)), None)
        if near is None:
            groups.append([(name, s)])
        else:
            near.append((name, s))
    for group in groups:
        for k, (name, s) in enumerate(group):
            assert s.regret is not None and s.compute is not None
            dodge = 0.012 * (k - (len(group) - 1) / 2)
            ax.errorbar(
                s.compute.mean + dodge,
                s.regret.mean,
                xerr=[[s.compute.mean - s.compute.low], [s.compute.high - s.compute.mean]],
                yerr=[[s.regret.mean - s.regret.low], [s.regret.high - s.regret.mean]],
                fmt="o",
                color=_color(name),
                ms=_emphasis(name, 6, 9),
                capsize=3,
                lw=_emphasis(name, 1.2, 2.0),
                label=name,
            )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    # Range-test probes can take compute past the budget (1).
    ax.set_xlim(0, max(1.05, max(s.compute.high for _, s in points) + 0.05))
    ax.axhline(0, color="black", lw=0.8, ls=":")
    ax.text(0.01, 0, "oracle", va="bottom", fontsize=8)
    ax.set_xlabel("compute: epochs run / budget (mean, 95% CI)")
    ax.set_ylabel("regret: mean log(test loss / oracle) (95% CI)")
    ax.set_title("Regret against compute (lower left is better)", fontsize=11)
    ax.grid(alpha=0.3)
    _save(figure, path)
    return None


def _close(a: Any, b: Any) -> bool:
    """Two strategy summaries at nearly the same (compute, regret) point."""
    return abs(a.compute.mean - b.compute.mean) < 0.02 and abs(a.regret.mean - b.regret.mean) < 0.02


def plot_profiles(summary: Summary, path: Path) -> str | None:
    """Time-to-target performance profiles: rho(tau) per strategy, tau in [1, TAU_MAX]."""
    if not summary.has_profile:
        return (
            "No time-to-target profile: it needs the grid (its best validation loss is the "
            "target) and cells that every strategy has run."
        )
    taus = tau_grid()
    figure, ax = plt.subplots(figsize=(7.6, 4.6))
    shown = [name for name in summary.strategies if summary.ratios.get(name)]
    for k, name in enumerate(shown):
        # Identical profiles are common (strategies that never reach the target): a small
        # vertical offset per strategy keeps each line visible.
        dodge = 0.006 * (k - (len(shown) - 1) / 2)
        ax.step(
            taus,
            profile(summary.ratios[name], taus) + dodge,
            where="post",
            color=_color(name),
            ls=_style(name),
            lw=_emphasis(name, 1.5, 2.4),
            label=name,
        )
    ax.set_xlim(1, taus[-1])
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("tau: epochs to target / fastest strategy's, same cell")
    ax.set_ylabel("rho(tau): share of cells")
    ax.set_title(
        "Time to target (validation loss within 2% of the grid's best); higher is better",
        fontsize=10,
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    _save(figure, path)
    return None
