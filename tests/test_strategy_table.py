"""Adding a strategy is one row of the strategy table plus its callback.

A toy strategy, ``halving`` (Keras' ``LearningRateScheduler`` halving the rate every
epoch), is added through one :class:`Strategy` row and nothing else, then runs through
a tiny benchmark and its report: the settings accept it, the runner trains it, the
report and the plots show it with its description and colour.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fitpilot.experiments import strategies
from fitpilot.experiments.benchmark import plan_benchmark, run_benchmark
from fitpilot.experiments.store import read_store
from fitpilot.experiments.strategies import STRATEGY_TABLE, RunContext, Strategy


def halving(context: RunContext) -> list:
    import keras

    from fitpilot.experiments.callbacks import RestoreBestWeights

    start = context.learning_rate
    return [keras.callbacks.LearningRateScheduler(lambda epoch: start * 0.5**epoch),
            RestoreBestWeights()]


TOY = Strategy("halving", "the starting rate halved after every epoch (a toy)", halving,
               color="tab:olive", style=(0, (2, 2)))


def test_a_toy_strategy_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STRATEGY_TABLE, TOY.name, TOY)
    assert "halving" in strategies.strategy_names()
    settings, config = plan_benchmark(
        tasks="tests.benchmark_tasks:TASKS", strategies="constant,halving", seeds=1,
        lr_factors="1,10", oracle_grid=3,
    )
    result = run_benchmark(settings, config, tmp_path, progress=False, echo=lambda line: None)
    runs = [r for r in read_store(tmp_path).runs if r.strategy == "halving"]
    assert len(runs) == 2 and not any(r.failed for r in runs)
    for run in runs:  # the scheduler's rates, epoch by epoch
        assert run.lr[:3] == pytest.approx([run.learning_rate * 0.5**e for e in range(3)])
    report = result.report.read_text()
    assert "| halving |" in report
    assert "**halving**: the starting rate halved after every epoch (a toy)." in report
    assert (tmp_path / "val_curves.png").stat().st_size > 10_000
