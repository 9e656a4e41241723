"""``fitpilot recipe``: a recipe's quality over training seeds, and the rule that picks a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fitpilot.controller.bundle import load_bundle
from fitpilot.experiments.recipe import SeedFigures, Spread, check_rule, select
from fitpilot.experiments.settings import BenchmarkError
from tests.commandline import one_error_line, run_fitpilot


def figures(*regrets: float) -> list[SeedFigures]:
    return [SeedFigures(i, f"c{i}", r, 0.5, 0.6, "constant", 9) for i, r in enumerate(regrets)]


@pytest.mark.parametrize(
    ("regrets", "rule", "picked"),
    [
        ((0.3, 0.1, 0.2), "median_regret", 2),
        ((0.3, 0.1, 0.2), "best_regret", 1),
        ((0.4, 0.1, 0.2, 0.3), "median_regret", 2),  # even count: the lower median
        ((0.2, 0.2, 0.2), "median_regret", 1),  # ties by seed
        ((0.5,), "median_regret", 0),
    ],
)
def test_the_selection_rules(regrets: tuple[float, ...], rule: str, picked: int) -> None:
    assert select(figures(*regrets), rule).seed == picked


def test_an_unknown_rule_lists_the_valid_ones() -> None:
    with pytest.raises(BenchmarkError, match="median_regret, best_regret"):
        check_rule("luckiest")


def test_spread() -> None:
    spread = Spread.of([1.0, 2.0, 3.0])
    assert (spread.mean, spread.std, spread.low, spread.high) == (2.0, 1.0, 1.0, 3.0)
    assert Spread.of([4.0]).std == 0.0


RECIPE = """\
algo: ppo
tasks: tests.user_tasks:ONE
timesteps: 64
n_envs: 1
seed: 5
eval_every: 0
checkpoint_every: 64
select: best_regret
hp:
  n_steps: 64
"""


@pytest.mark.slow
def test_the_recipe_command_trains_benchmarks_reports_and_picks(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    args = ("recipe", str(recipe), "--seeds", "2", "--tasks", "tests.benchmark_tasks:TASKS",
            "--benchmark-seeds", "1", "--jobs", "1", "--out", str(out), "--no-progress")
    result = run_fitpilot(*args, timeout=900)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "recipe.json").read_text())
    assert [s["seed"] for s in data["seeds"]] == [5, 6] and data["rule"] == "best_regret"
    best = min(data["seeds"], key=lambda s: (s["regret"], s["seed"]))
    assert data["picked"] == best["seed"]
    picked = load_bundle(out / "controller.zip").content_hash
    assert picked == load_bundle(out / f"seed-{best['seed']}" / "controller.zip").content_hash
    assert "| figure | mean | std | min | max |" in (out / "recipe.md").read_text()
    # The runs that do not need a bundle are run once and shared by the seeds' benchmarks.
    baseline_runs = len((out / "baselines" / "runs.jsonl").read_text().splitlines()) - 1
    for seed in (5, 6):
        lines = (out / f"seed-{seed}" / "benchmark" / "runs.jsonl").read_text().splitlines()
        learned = [line for line in lines[1:] if '"strategy": "learned"' in line]
        assert len(lines) - 1 == baseline_runs + len(learned) and len(learned) == 3
    # Run again: everything is reused, nothing is trained or run again.
    again = run_fitpilot(*args, timeout=900)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already trained") == 2
    assert json.loads((out / "recipe.json").read_text()) == data


def test_holdout_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    message = one_error_line(run_fitpilot("recipe", str(recipe), "--suite", "holdout"))
    assert "only reported on" in message
