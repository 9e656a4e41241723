"""The benchmark (issue 6): strategies, runs, results store, summary figures, report, CLI.

Tasks come from ``tests/benchmark_tasks.py`` (a 4-16-3 MLP on 240 rows, 8
epochs); the learned strategy uses a random controller bundle.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from fitpilot.cli import app
from fitpilot.envs.loading import load_tasks
from fitpilot.experiments.callbacks import RestoreBestWeights
from fitpilot.experiments.runs import Runner, controller_factory, epoch_orders
from fitpilot.experiments.settings import (
    ORACLE,
    BenchmarkError,
    RunKey,
    RunOrder,
    RunRecord,
    Settings,
    TaskInfo,
    oracle_factors,
    parse_lr_factors,
    parse_strategies,
)
from fitpilot.experiments.store import ResultsStore, read_store
from fitpilot.experiments.strategies import RunContext, strategy, strategy_names
from fitpilot.experiments.summary import (
    bootstrap_mean,
    direction_reversals,
    oracle_losses,
    paired_difference,
    summarize,
    untrained_losses,
)
from fitpilot.jsonable import jsonable
from tests.bundles import write_random_bundle

REPO = Path(__file__).resolve().parents[1]
TINY = "tests.benchmark_tasks:TASKS"
FITPILOT = str(Path(sys.executable).with_name("fitpilot"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_bundle(tmp_path_factory.mktemp("bundle") / "controller.zip")


@pytest.fixture(scope="module")
def runner(bundle: Path) -> Runner:
    return Runner(load_tasks(TINY), controller_factory(str(bundle)), "random")


def run(runner: Runner, seed: int, factor: float, strategy: str) -> RunRecord:
    """One run of tiny_blobs (default rate 0.01) from ``0.01 * factor``."""
    return runner.run(RunOrder(RunKey("tiny_blobs", seed, factor, strategy), 0.01 * factor))


def settings_for(tasks: str = TINY, **changes: object) -> Settings:
    values: dict[str, object] = dict(
        tasks=tuple(TaskInfo.of(t) for t in load_tasks(tasks)),
        strategies=("constant", "learned"),
        lr_factors=(1.0,),
        seeds=1,
        oracle_grid=0,
        controller="aaaa",
        fitpilot_version="0.1.0",
    )
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def cli(*args: str) -> tuple[int, str]:
    """Run ``fitpilot`` in this process; (exit code, stdout + stderr)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output  # stdout and stderr, interleaved


# --- strategies: Keras' own callbacks ------------------------------------------------


def strategy_callbacks(name: str, controller=None) -> list:
    """The fresh callbacks of one run of ``name`` (its row of the strategy table)."""
    return strategy(name).callbacks(RunContext(0.01, 8, 4, controller))


def test_heuristics_are_keras_own_callbacks_with_benchmark_arguments(bundle: Path) -> None:
    from fitpilot.controller.callback import LearnedController

    built = {name: strategy_callbacks(name, controller_factory(str(bundle)))
             for name in strategy_names()}
    for callbacks in built.values():
        assert callbacks and all(isinstance(c, keras.callbacks.Callback) for c in callbacks)

    (early,) = built["early_stopping"]
    assert isinstance(early, keras.callbacks.EarlyStopping)
    assert (early.monitor, early.patience, early.min_delta, early.restore_best_weights) == (
        "val_loss",
        5,
        0.001,
        True,
    )
    reduce, restore = built["reduce_lr"]
    assert isinstance(reduce, keras.callbacks.ReduceLROnPlateau)
    assert (reduce.monitor, reduce.factor, reduce.patience, reduce.min_lr, reduce.cooldown) == (
        "val_loss",
        0.5,
        3,
        1e-5,
        2,
    )
    assert isinstance(restore, RestoreBestWeights)
    for name in ("es_reduce_lr", "lr_finder"):  # lr_finder trains with es_reduce_lr's recipe
        early, reduce = built[name]
        assert isinstance(early, keras.callbacks.EarlyStopping)
        assert (early.monitor, early.patience, early.restore_best_weights) == (
            "val_loss",
            10,
            True,
        )
        assert isinstance(reduce, keras.callbacks.ReduceLROnPlateau) and reduce.factor == 0.5
    for name in ("constant", "cosine", "prodigy", ORACLE):
        assert [type(c) for c in strategy_callbacks(name)] == [RestoreBestWeights]
    (learned,) = built["learned"]
    assert isinstance(learned, LearnedController)


def test_restore_best_weights_puts_back_the_lowest_finite_val_loss_epoch() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = RestoreBestWeights()
    callback.set_model(model)
    callback.on_train_begin()
    snapshots = []
    for epoch, val_loss in enumerate([3.0, 1.0, 2.0, float("nan"), 1.5]):
        model.set_weights([np.full((2, 1), epoch, "f"), np.full(1, epoch, "f")])
        snapshots.append(model.get_weights())
        callback.on_epoch_end(epoch, {"val_loss": val_loss})
    callback.on_train_end()
    assert callback.best_epoch == 1 and callback.best == 1.0
    for got, want in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(got, want)


# --- runs: same start, same data order, real fit ---------------------------------------


def test_runs_of_a_cell_share_initial_weights_and_data_order(runner: Runner) -> None:
    constant = run(runner, 0, 1.0, "constant")
    run(runner, 1, 10.0, "reduce_lr")  # another cell in between
    again = run(runner, 0, 1.0, "constant")
    oracle = run(runner, 0, 1.0, ORACLE)  # grid point x1 = the same run
    assert constant.val_loss == again.val_loss == oracle.val_loss
    assert constant.test_loss == again.test_loss == oracle.test_loss
    # Every strategy from the cell's rate but cosine trains epoch 1 at the same rate from the
    # same start: the same first epoch. Cosine decays within it, a little. (lr_finder and
    # prodigy choose their own rates.)
    same_start = [name for name in strategy_names() if name not in ("lr_finder", "prodigy")]
    firsts = {name: run(runner, 0, 1.0, name).val_loss[0] for name in same_start}
    cosine = firsts.pop("cosine")
    assert len(set(firsts.values())) == 1, firsts
    assert cosine == pytest.approx(firsts["constant"], rel=0.02) and cosine != firsts["constant"]
    other_seed = run(runner, 1, 1.0, "constant")
    assert other_seed.val_loss[0] != constant.val_loss[0]


def test_run_record_holds_trajectories_and_scores(runner: Runner) -> None:
    record = run(runner, 0, 0.1, "learned")
    assert record.controller == "random" and record.budget == 8
    assert 1 <= record.epochs <= 8 and record.probe_epochs == 0
    assert len(record.lr) == len(record.val_loss) == record.epochs
    assert record.lr[0] == pytest.approx(0.001)
    assert record.metric == "accuracy" and record.test_metric is not None
    assert 0 <= record.test_metric <= 1
    assert record.decisions and {"epoch", "action", "lr_before", "lr_after"} <= set(
        record.decisions[0]
    )
    assert record.wall_seconds > 0


def test_cosine_decays_over_the_whole_budget(runner: Runner) -> None:
    record = run(runner, 0, 1.0, "cosine")
    budget, start = 8, 0.01
    expected = [start * 0.5 * (1 + math.cos(math.pi * e / budget)) for e in range(budget)]
    np.testing.assert_allclose(record.lr, expected, rtol=1e-4)
    constant = run(runner, 0, 1.0, "reduce_lr")
    assert constant.lr[0] == pytest.approx(start)  # cosine's schedule did not leak


def test_epoch_orders_are_seeded_permutations() -> None:
    orders = epoch_orders(10, 3, seed=4)
    assert orders.shape == (3, 10)
    assert all(sorted(row) == list(range(10)) for row in orders)
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders, epoch_orders(10, 3, seed=4))


# --- settings ---------------------------------------------------------------------------


def test_oracle_grid_spans_four_decades_around_the_default() -> None:
    assert oracle_factors(7) == [0.01, 0.04642, 0.2154, 1.0, 4.642, 21.54, 100.0]
    assert oracle_factors(0) == [] and oracle_factors(1) == [1.0]
    assert oracle_factors(3) == [0.01, 1.0, 100.0]
    with pytest.raises(BenchmarkError):
        oracle_factors(-1)


def test_strategy_and_factor_parsing() -> None:
    assert parse_strategies(None) == list(strategy_names())
    assert parse_strategies("learned, constant") == ["constant", "learned"]
    with pytest.raises(BenchmarkError, match="valid strategies are constant, early_stopping"):
        parse_strategies("constant,sgdr")
    assert parse_lr_factors("10,0.1,1") == [0.1, 1.0, 10.0]
    for bad in ("", "0.1,-1", "a,b", "inf"):
        with pytest.raises(BenchmarkError, match="`lr_factors`"):
            parse_lr_factors(bad)


def test_oracle_runs_once_per_task_and_seed() -> None:
    settings = settings_for(
        strategies=strategy_names(), lr_factors=(0.1, 1.0, 10.0), seeds=3, oracle_grid=7
    )
    keys = settings.run_keys()
    assert len(keys) == 3 * (3 * len(strategy_names()) + 7)
    assert len(set(keys)) == len(keys)
    assert sum(k.strategy == ORACLE for k in keys) == 3 * 7
    assert keys[: 3 * 7] == settings.grid_keys()  # the grid first: it decides the reference


# --- summary figures: a hand-computed example ---------------------------------------------


def _run(
    strategy: str, task: str, factor: float, loss: float | None, epochs: int = 10, seed: int = 0,
    **fields,
) -> RunRecord:
    return RunRecord(
        task=task,
        seed=seed,
        lr_factor=factor,
        strategy=strategy,
        learning_rate=0.01 * factor,
        test_loss=math.nan if loss is None else loss,
        epochs=epochs,
        budget=10,
        wall_seconds=1.0,
        **fields,
    )


def test_summary_figures_against_a_hand_computed_example() -> None:
    runs = [
        # oracle grid of 2 points for (t, seed 0): best test loss 1.0
        _run(ORACLE, "t", 0.1, 4.0),
        _run(ORACLE, "t", 10.0, 1.0),
        # cells (t, x1): A 2, B 1; (t, x10): A 1, B 4; (t, x0.1): A e, B diverged. No run
        # records the untrained loss (a v2 store): B's divergence scores the worst finite
        # test loss of (t, seed 0), 4.
        _run("A", "t", 1.0, 2.0, epochs=5),
        _run("B", "t", 1.0, 1.0),
        _run("A", "t", 10.0, 1.0, epochs=10),
        _run("B", "t", 10.0, 4.0),
        _run("A", "t", 0.1, math.e, epochs=3),
        _run("B", "t", 0.1, None),
    ]
    summary = summarize(runs, ["A", "B"], grid_size=2)
    assert summary.oracle_cells == 3 and len(summary.cells) == 3
    a, b = summary.per_strategy["A"], summary.per_strategy["B"]
    assert a.regret is not None and b.regret is not None
    assert a.regret.mean == pytest.approx((math.log(2) + 0 + 1) / 3)
    assert b.regret.mean == pytest.approx((0 + 2 * math.log(4)) / 3) and b.regret.n == 3
    assert (a.diverged, b.diverged) == (0, 1)
    # start spread: the largest minus the smallest regret over the factors of (t, seed 0)
    assert a.start_spread is not None and a.start_spread.mean == pytest.approx(1.0)
    assert b.start_spread is not None and b.start_spread.mean == pytest.approx(math.log(4))
    assert a.compute is not None and a.compute.mean == pytest.approx((0.5 + 1.0 + 0.3) / 3)
    # A wins x10 and x0.1 (B diverged), B wins x1.
    assert summary.win_rate[("A", "B")].mean == pytest.approx(2 / 3)
    assert summary.win_rate[("B", "A")].mean == pytest.approx(1 / 3)
    assert a.wall_total == 3.0 and a.wall_mean == 1.0
    # Reversals: a raise then a cut is one, keeps in between do not break it.
    assert direction_reversals([1, 2, 2, 1, 1, 2, 4, 0.5]) == 3
    assert direction_reversals([1, 1, 0.5, 0.25]) == 0
    # An incomplete grid (1 of 2 points) gives no oracle, so no regret.
    assert oracle_losses(runs[:1], grid_size=2) == {}
    assert not summarize(runs[1:], ["A", "B"], grid_size=2).has_regret


def test_a_diverged_or_failed_run_scores_the_untrained_model() -> None:
    """The v3 rule: a run whose final weights or test loss are not finite, or that raised,
    is scored with the test loss of its cell's untrained model (recorded by every run)."""
    untrained = {"untrained_test_loss": 8.0}
    runs = [
        _run(ORACLE, "t", 1.0, 2.0, **untrained),
        _run("A", "t", 1.0, 4.0, **untrained),
        _run("B", "t", 1.0, None, **untrained),  # test loss NaN
        _run("C", "t", 1.0, 3.0, finite_weights=False, **untrained),  # NaN weights
        _run("D", "t", 1.0, None, epochs=0, error="ValueError: boom", **untrained),
    ]
    summary = summarize(runs, ["A", "B", "C", "D"], grid_size=1)
    regrets = {name: summary.per_strategy[name].regret for name in "ABCD"}
    assert regrets["A"].mean == pytest.approx(math.log(2))
    for name in "BCD":  # log(8 / 2), counted and not dropped
        assert regrets[name].mean == pytest.approx(math.log(4)) and regrets[name].n == 1
    assert [summary.per_strategy[n].diverged for n in "ABCD"] == [0, 1, 1, 0]
    assert [summary.per_strategy[n].failed for n in "ABCD"] == [0, 0, 0, 1]
    assert summary.win_rate[("A", "B")].mean == 1.0
    assert summary.win_rate[("B", "C")].mean == 0.0 == summary.win_rate[("C", "B")].mean
    assert untrained_losses(runs) == {("t", 0): 8.0}
    assert paired_difference(runs, "B", "A").mean == pytest.approx(math.log(2))


def test_bootstrap_interval_is_sane() -> None:
    values = np.random.default_rng(0).normal(1.0, 2.0, size=50)
    interval = bootstrap_mean(values)
    assert interval is not None
    assert values.min() < interval.low < interval.mean < interval.high < values.max()
    assert interval.mean == pytest.approx(values.mean())
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # normal approximation
    assert interval.high - interval.low == pytest.approx(2 * half, rel=0.2)
    same = bootstrap_mean([0.3] * 5)
    assert same is not None and same.low == same.mean == same.high == pytest.approx(0.3)
    assert bootstrap_mean([]) is None


# --- results store --------------------------------------------------------------------


def _record(key: RunKey) -> RunRecord:
    return dataclasses.replace(
        _run(key.strategy, key.task, key.lr_factor, 0.5, seed=key.seed),
        val_loss=(1.0, float("nan")),
        lr=(float(np.float32(0.01)),) * 2,
    )


def test_store_appends_resumes_and_skips_a_cut_line(tmp_path: Path) -> None:
    settings = settings_for(seeds=2)
    keys = settings.run_keys()
    with ResultsStore.open(tmp_path, settings) as store:
        for key in keys[:3]:
            store.append(_record(key))
    path = tmp_path / "runs.jsonl"
    assert json.loads(path.read_text().splitlines()[2])["val_loss"] == [1.0, None]
    with path.open("a") as file:  # a write cut short by a kill
        file.write(json.dumps(jsonable(_record(keys[3]).to_json()))[:40])
    contents = read_store(tmp_path)
    assert len(contents.runs) == 3 and contents.skipped == [5]
    assert "skipped 1 unreadable line" in (contents.warning() or "")
    with pytest.raises(BenchmarkError, match="`resume=True`"):
        ResultsStore.open(tmp_path, settings)
    with ResultsStore.open(tmp_path, settings, resume=True) as store:
        assert store.finished == set(keys[:3]) and store.warning
        store.append(_record(keys[3]))
    contents = read_store(tmp_path)
    assert [r.key for r in contents.runs] == keys[:4] and not contents.skipped


def test_store_refuses_other_controller_or_settings(tmp_path: Path) -> None:
    ResultsStore.open(tmp_path, settings_for()).close()
    with pytest.raises(
        BenchmarkError, match="another controller .*controller: store aaaa, now bbbb.*force=True"
    ):
        ResultsStore.open(tmp_path, settings_for(controller="bbbb"), resume=True)
    with pytest.raises(BenchmarkError, match="other settings .*seeds: store 1, now 3"):
        ResultsStore.open(tmp_path, settings_for(seeds=3), resume=True)
    other_tasks = "tests.benchmark_tasks:SAME_NAME_OTHER_BUDGET"
    with pytest.raises(BenchmarkError, match="task tiny_blobs: epochs: store 8, now 5\\)"):
        ResultsStore.open(tmp_path, settings_for(other_tasks), resume=True)
    ResultsStore.open(tmp_path, settings_for(seeds=3), force=True).close()
    assert read_store(tmp_path).settings.seeds == 3


# --- command line: bad input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategies", "constant,warmup"],
            "unknown strategy 'warmup' in --strategies; valid strategies are constant, "
            "early_stopping, reduce_lr, es_reduce_lr, cosine, lr_finder, prodigy, greedy_lr, "
            "adalrs, learned",
        ),
        (["--tasks", "tests.benchmark_tasks:EMPTY"], "empty task list"),
        (["--tasks", "tests.benchmark_tasks:NOPE"], "has no attribute 'NOPE'"),
        (["--suite", "nope"], "unknown suite 'nope'"),
        (["--oracle-grid", "-2"], "--oracle-grid must be 0"),
        (["--oracle-grid", "0"], "the tuned --lr-reference is chosen on the grid"),
        (["--lr-reference", "best"], "valid references are tuned, default"),
        (["--lr-factors", "0,1"], "--lr-factors"),
        (["--seeds", "0"], "--seeds"),
        (["--jobs", "0"], "--jobs"),
        (["--controller", "/nonexistent/controller.zip"], "no controller bundle"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    tasks = [] if {"--tasks", "--suite"} & set(args) else ["--tasks", TINY]
    code, output = cli("benchmark", *tasks, "--out", str(tmp_path), *args)
    assert code == 2, output
    error = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and message in error[0], output
    assert not (tmp_path / "runs.jsonl").exists()


def test_report_of_a_directory_without_store(tmp_path: Path) -> None:
    code, output = cli("report", str(tmp_path))
    assert code == 2 and "error: no benchmark results in" in output


def test_cli_refuses_a_store_of_another_controller(tmp_path: Path, bundle: Path) -> None:
    other = write_random_bundle(tmp_path / "other.zip", seed=1)
    out = tmp_path / "out"
    common = [
        "benchmark",
        "--tasks",
        TINY,
        "--strategies",
        "learned",
        "--seeds",
        "1",
        "--lr-factors",
        "1",
        "--oracle-grid",
        "0",
        "--lr-reference",
        "default",
        "--out",
        str(out),
    ]
    code, output = cli(*common, "--controller", str(bundle))
    assert code == 0, output
    code, output = cli(*common, "--controller", str(other), "--resume")
    assert code == 2 and "written by another controller" in output and "--force" in output
    code, output = cli(*common, "--controller", str(bundle))
    assert code == 2 and "pass --resume to continue it" in output
    code, output = cli(*common, "--controller", str(bundle), "--resume")
    assert code == 0 and "resuming: 1 of 1 runs" in output
    assert len(read_store(out).runs) == 1


def test_report_without_oracle_says_regret_is_undefined(tmp_path: Path) -> None:
    code, output = cli(
        "benchmark",
        "--tasks",
        TINY,
        "--strategies",
        "constant,early_stopping",
        "--seeds",
        "1",
        "--lr-factors",
        "1",
        "--oracle-grid",
        "0",
        "--lr-reference",
        "default",
        "--out",
        str(tmp_path),
    )
    assert code == 0, output
    report = (tmp_path / "report.md").read_text()
    assert "Regret is undefined" in report and "--oracle-grid 0" in report
    assert "| constant | undefined |" in report
    assert not (tmp_path / "regret_compute.png").exists()


def test_cli_runs_the_rival_rules(tmp_path: Path) -> None:
    """`fitpilot benchmark --strategies greedy_lr,adalrs` runs both rules and reports them."""
    code, output = cli(
        "benchmark", "--tasks", TINY, "--strategies", "greedy_lr,adalrs", "--seeds", "1",
        "--lr-factors", "0.1,10", "--oracle-grid", "3", "--lr-reference", "default",
        "--out", str(tmp_path),
    )
    assert code == 0, output
    report = (tmp_path / "report.md").read_text()
    assert "### What greedy_lr did" in report and "### What adalrs did" in report
    runs = read_store(tmp_path).runs
    assert {run.strategy for run in runs} >= {"greedy_lr", "adalrs"}


# --- end to end --------------------------------------------------------------------------


def _fitpilot(*args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload]
        [FITPILOT, *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,
    )


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path: Path, bundle: Path) -> None:
    out = tmp_path / "out"
    process = _fitpilot(
        "benchmark",
        "--controller",
        str(bundle),
        "--tasks",
        TINY,
        "--seeds",
        "1",
        "--lr-factors",
        "0.1,1",
        "--oracle-grid",
        "3",
        "--out",
        str(out),
        "--no-progress",
    )
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    assert "━" not in output  # no progress bar
    contents = read_store(out)
    grid = sum(r.is_oracle for r in contents.runs)  # 3, or more if the grid was extended
    assert grid >= 3 and len(contents.runs) == 2 * len(strategy_names()) + grid
    assert not contents.skipped
    assert {r.strategy for r in contents.runs} == {*strategy_names(), ORACLE}
    for record in contents.runs:
        assert record.controller == contents.settings.controller
        assert len(record.val_loss) == len(record.lr) == record.epochs
    probed = [r for r in contents.runs if r.strategy == "lr_finder"]
    assert all(0 < r.probe_epochs <= 100 / 4 for r in probed)  # 4 batches per epoch
    report = (out / "report.md").read_text()
    assert "## Summary" in report and "| **learned** |" in report and "## Win rates" in report
    assert "## Reference learning rates" in report and "## Time to target" in report
    for plot in ("val_curves.png", "lr_trajectories.png", "regret_compute.png", "profiles.png"):
        data = (out / plot).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, plot
    first = report
    (out / "report.md").unlink()
    code, output = cli("report", str(out))
    assert code == 0, output
    assert (out / "report.md").read_text() == first


@pytest.mark.slow
def test_killed_benchmark_resumes_without_redoing_or_losing_runs(
    tmp_path: Path, bundle: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "benchmark",
        "--controller",
        str(bundle),
        "--tasks",
        "tests.benchmark_tasks:LONGER",
        "--strategies",
        "constant,cosine,lr_finder,learned",
        "--seeds",
        "2",
        "--lr-factors",
        "0.1,1,10",
        "--oracle-grid",
        "3",
        "--lr-reference",
        "default",
        "--out",
        str(out),
    ]
    planned = 2 * (3 * 4 + 3)  # lr_finder runs once per seed; its record stands at 3 factors
    store = out / "runs.jsonl"
    process = _fitpilot(*args, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists() and store.read_bytes().count(b"\n") >= 4:  # header + 3 runs
            break
        time.sleep(0.02)
    assert process.poll() is None, "the benchmark ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    before = store.read_bytes()
    done = [line for line in before.split(b"\n")[1:] if line.strip()]
    assert 3 <= len(done) < planned

    process = _fitpilot(*args, "--resume", "--jobs", "2")
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    finished = before.rfind(b"\n") + 1  # complete lines written before the kill
    after = store.read_bytes()
    assert after[:finished] == before[:finished], "a finished run was lost or rewritten"
    contents = read_store(out)
    keys = [r.key for r in contents.runs]
    assert len(keys) == len(set(keys)) == planned and not contents.skipped
    assert after.count(b"\n") == planned + 1  # header + one line per run: nothing redone
    resumed = before[:finished].count(b"\n") - 1
    assert f"resuming: {resumed} of {planned} runs" in output
