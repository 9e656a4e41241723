"""Benchmark protocol v2 (issue 13): tuned reference, grid extension, resume, records, report.

The orchestration is tested with a fake executor whose runs are made up from
the learning rate (no TensorFlow): the validation and test losses are chosen so
that the grid's best rate on validation and on test differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import pytest

from fitpilot.envs.loading import load_tasks
from fitpilot.experiments.benchmark import plan_benchmark, run_benchmark
from fitpilot.experiments.reference_rate import grid_extensions, tuned_rate
from fitpilot.experiments.report import write_report
from fitpilot.experiments.settings import (
    ORACLE,
    BenchmarkError,
    RunKey,
    RunOrder,
    RunRecord,
    Settings,
    TaskInfo,
    grid_extension,
)
from fitpilot.experiments.store import ResultsStore, read_store
from fitpilot.experiments.strategies import is_factor_free
from fitpilot.experiments.summary import (
    TARGET_SLACK,
    paired_difference,
    profile,
    profile_score,
    summarize,
    tau_grid,
    time_to_target,
)
from fitpilot.experiments.worker import WorkerConfig
from fitpilot.jsonable import jsonable

TINY = "tests.benchmark_tasks:TASKS"
DEFAULT_LR = 0.01  # tiny_blobs' default rate
CONFIG = WorkerConfig(TINY, None, None)


def settings_for(**changes: object) -> Settings:
    values: dict[str, object] = dict(
        tasks=tuple(TaskInfo.of(t) for t in load_tasks(TINY)),
        strategies=("constant", "reduce_lr", "lr_finder"),
        lr_factors=(0.1, 1.0, 10.0),
        seeds=2,
        oracle_grid=7,
        controller=None,
        fitpilot_version="0.1.0",
    )
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


class FakeExecutor:
    """Runs made up from the starting rate: best validation loss ``val(lr)``, test ``test(lr)``."""

    def __init__(self, val: Callable[[float], float], test: Callable[[float], float]) -> None:
        self.val, self.test = val, test
        self.orders: list[RunOrder] = []

    def __call__(self, orders: Sequence[RunOrder]) -> Generator[RunRecord, None, None]:
        for order in orders:
            self.orders.append(order)
            key, lr = order.key, order.learning_rate
            yield RunRecord(
                task=key.task,
                seed=key.seed,
                lr_factor=key.lr_factor,
                strategy=key.strategy,
                learning_rate=lr,
                budget=8,
                epochs=8,
                test_loss=self.test(lr) + 0.001 * key.seed,
                wall_seconds=0.1,
                val_loss=(100.0, self.val(lr) + 0.001 * key.seed),
                lr=(lr, lr),
                loss=(1.0, 1.0),
            )


def _distance(best: float) -> Callable[[float], float]:
    """A loss that is lowest at rate ``best``: 0.5 + |log10(lr / best)|."""
    return lambda lr: 0.5 + abs(math.log10(lr / best))


def _benchmark(tmp_path: Path, settings: Settings, fake: FakeExecutor, **kwargs: object) -> Path:
    return run_benchmark(
        settings, CONFIG, tmp_path, progress=False, echo=lambda _: None, execute=fake, **kwargs
    )


def test_tuned_rate_is_chosen_on_validation_not_test(tmp_path: Path) -> None:
    # Validation prefers x0.2154 of the default, test prefers x4.642.
    fake = FakeExecutor(val=_distance(0.2154 * DEFAULT_LR), test=_distance(4.642 * DEFAULT_LR))
    settings = settings_for()
    _benchmark(tmp_path, settings, fake)
    runs = read_store(tmp_path).runs
    tuned = tuned_rate(runs, settings, "tiny_blobs")
    assert tuned is not None and tuned.factor == 0.2154 and not tuned.extended
    assert tuned.rate == pytest.approx(0.2154 * DEFAULT_LR)
    # The grid ran first, then every strategy from the tuned rate x its factor.
    kinds = [order.key.strategy == ORACLE for order in fake.orders]
    assert kinds == sorted(kinds, reverse=True) and sum(kinds) == 2 * 7
    for order in fake.orders:
        if order.key.strategy == "constant":
            assert order.learning_rate == pytest.approx(tuned.rate * order.key.lr_factor)
        if is_factor_free(order.key.strategy):  # from the reference itself, once per seed
            assert order.learning_rate == pytest.approx(tuned.rate)
    # The hindsight oracle is the grid's best *test* loss, from the same grid runs.
    report = (tmp_path / "report.md").read_text()
    assert "| tiny_blobs | adam | 0.01 | 0.00215 | x0.2154 | no |" in report
    assert "Oracle's best constant learning rate (on test): x4.642 (seed 0)" in report


def test_default_reference_starts_from_the_task_default(tmp_path: Path) -> None:
    fake = FakeExecutor(val=_distance(0.2154 * DEFAULT_LR), test=_distance(DEFAULT_LR))
    _benchmark(tmp_path, settings_for(lr_reference="default", strategies=("constant",)), fake)
    for order in fake.orders:
        assert order.learning_rate == pytest.approx(DEFAULT_LR * order.key.lr_factor)


def test_grid_is_extended_at_an_edge_up_to_two_decades(tmp_path: Path) -> None:
    assert grid_extension(7, +1, 0) == 464.2 and grid_extension(7, -1, 2) == 0.0001
    assert grid_extension(7, +1, 3) is None  # a 4th point would pass 2 decades
    # Validation keeps improving up to x2154 of the default: two extensions on the high side
    # bring it inside, the third point is the one that shows it.
    fake = FakeExecutor(val=_distance(2154 * DEFAULT_LR), test=_distance(DEFAULT_LR))
    settings = settings_for(strategies=("constant",), lr_factors=(1.0,))
    _benchmark(tmp_path, settings, fake)
    runs = read_store(tmp_path).runs
    tuned = tuned_rate(runs, settings, "tiny_blobs")
    assert tuned is not None
    assert tuned.factor == 2154 and tuned.extended == (464.2, 2154, 10000) and not tuned.at_edge
    assert sum(r.is_oracle for r in runs) == 2 * (7 + 3)  # the extensions are stored too
    assert not grid_extensions(runs, settings)
    # Beyond two decades the winner stays at the edge, and the report says so.
    fake = FakeExecutor(val=_distance(1e6 * DEFAULT_LR), test=_distance(DEFAULT_LR))
    _benchmark(tmp_path / "far", settings, fake)
    tuned = tuned_rate(read_store(tmp_path / "far").runs, settings, "tiny_blobs")
    assert tuned is not None and tuned.factor == 10000 and tuned.at_edge
    assert "winner still at the edge" in (tmp_path / "far" / "report.md").read_text()


def test_resume_reruns_no_grid_run_and_no_finished_run(tmp_path: Path) -> None:
    settings = settings_for()
    fake = FakeExecutor(val=_distance(2154 * DEFAULT_LR), test=_distance(DEFAULT_LR))
    _benchmark(tmp_path, settings, fake)
    store = tmp_path / "runs.jsonl"
    lines = store.read_text().splitlines()
    # Cut the store after the grid (extensions included) and two strategy runs, as a kill would.
    grid_lines = sum('"strategy": "oracle"' in line for line in lines)
    store.write_text("\n".join(lines[: 1 + grid_lines + 2]) + "\n")
    again = FakeExecutor(val=fake.val, test=fake.test)
    _benchmark(tmp_path, settings, again, resume=True)
    assert not any(order.key.strategy == ORACLE for order in again.orders)
    assert len(again.orders) == len(fake.orders) - grid_lines - 2
    contents = read_store(tmp_path)
    keys = [run.key for run in contents.runs]
    assert len(keys) == len(set(keys)) == len(lines) - 1
    nothing = FakeExecutor(val=fake.val, test=fake.test)
    _benchmark(tmp_path, settings, nothing, resume=True)
    assert nothing.orders == []


def test_factor_free_strategies_run_once_and_stand_for_every_factor(tmp_path: Path) -> None:
    fake = FakeExecutor(val=_distance(DEFAULT_LR), test=_distance(DEFAULT_LR))
    settings = settings_for(strategies=("lr_finder", "prodigy"), oracle_grid=3)
    _benchmark(tmp_path, settings, fake)
    strategy_orders = [o for o in fake.orders if o.key.strategy != ORACLE]
    assert len(strategy_orders) == 2 * 2  # 2 strategies x 2 seeds, not x 3 factors
    runs = [r for r in read_store(tmp_path).runs if not r.is_oracle]
    assert len(runs) == 2 * 2 * 3
    assert {r.key for r in runs} == set(settings.strategy_keys())


def test_v1_store_is_refused_on_resume_and_nothing_is_lost(tmp_path: Path) -> None:
    header = settings_for(strategies=("constant",)).to_dict()
    for name in ("protocol", "lr_reference"):
        header.pop(name)
    v1_run = {
        "type": "run", "task": "tiny_blobs", "seed": 0, "lr_factor": 1.0,
        "strategy": "constant", "oracle": False, "controller": None, "learning_rate": 0.01,
        "budget": 8, "epochs": 8, "test_loss": 0.5, "metric": "accuracy", "test_metric": 0.8,
        "wall_seconds": 0.2, "lr": [0.01] * 8, "val_loss": [0.6] * 8, "loss": [0.7] * 8,
        "decisions": None,
    }  # fmt: skip
    text = json.dumps({"type": "header", "settings": header}) + "\n" + json.dumps(v1_run) + "\n"
    (tmp_path / "runs.jsonl").write_text(text)
    contents = read_store(tmp_path)  # still reads
    assert contents.settings.protocol == 1 and contents.settings.lr_reference == "default"
    assert contents.runs[0].test_loss == 0.5 and contents.runs[0].probe_epochs == 0.0
    with pytest.raises(BenchmarkError, match=r"protocol v1 .*new `out` directory.*force=True"):
        ResultsStore.open(tmp_path, settings_for(strategies=("constant",)), resume=True)
    assert (tmp_path / "runs.jsonl").read_text() == text
    report = write_report(tmp_path).path.read_text()  # `fitpilot report` still reads it
    assert "protocol v1" in report and "| constant |" in report


def test_run_record_round_trips_through_json() -> None:
    record = RunRecord(
        task="t", seed=1, lr_factor=0.1, strategy="lr_finder", learning_rate=0.003,
        budget=10, epochs=4, test_loss=math.nan, wall_seconds=1.5, metric="mae",
        test_metric=0.2, lr=(0.003, 0.0015), val_loss=(1.0, math.inf), loss=(1.2, 1.1),
        probe_epochs=2.5, decisions=({"epoch": 0, "action": "keep"},), warning="w",
    )  # fmt: skip
    line = json.loads(json.dumps(jsonable(record.to_json()), allow_nan=False))
    back = RunRecord.from_json(line)
    assert back.key == RunKey("t", 1, 0.1, "lr_finder") and back.warning == "w"
    assert math.isnan(back.test_loss) and back.finite_test_loss == math.inf
    assert back.val_loss[0] == 1.0 and math.isnan(back.val_loss[1])
    assert back.compute == pytest.approx((4 + 2.5) / 10)
    assert back.decisions == record.decisions
    with pytest.raises(ValueError):
        RunRecord.from_json({"type": "header"})


def _record(strategy: str, seed: int, val: Sequence[float], probe: float = 0.0) -> RunRecord:
    return RunRecord(
        task="t", seed=seed, lr_factor=1.0, strategy=strategy, learning_rate=0.1, budget=4,
        epochs=len(val), test_loss=1.0, wall_seconds=0.1, val_loss=tuple(val), probe_epochs=probe,
    )  # fmt: skip


def test_time_to_target_counts_probe_epochs_and_profiles_integrate() -> None:
    grid = [_record(ORACLE, 0, [2.0, 1.0, 1.0, 1.0])]  # target 1.0 * TARGET_SLACK
    fast = _record("fast", 0, [1.01, 0.9])
    probed = _record("probed", 0, [1.01, 0.9], probe=1.5)
    never = _record("never", 0, [3.0, 2.0, 1.5, 1.2])
    assert time_to_target(fast, TARGET_SLACK) == 1
    assert time_to_target(probed, TARGET_SLACK) == 2.5
    assert time_to_target(never, TARGET_SLACK) == math.inf
    summary = summarize([*grid, fast, probed, never], ["fast", "probed", "never"], grid_size=1)
    assert summary.ratios == {"fast": [1.0], "probed": [2.5], "never": [math.inf]}
    taus = tau_grid()
    assert profile_score(profile([1.0], taus), taus) == pytest.approx(1.0)
    # rho is 0 below 2.5 and 1 from it: the integral is (4 - 2.5) / 3.
    assert summary.per_strategy["probed"].profile_score == pytest.approx(1.5 / 3, abs=0.01)
    assert summary.per_strategy["never"].profile_score == 0 and summary.per_strategy[
        "never"
    ].reached == 0
    # Probe epochs count as compute.
    assert summary.per_strategy["probed"].compute is not None
    assert summary.per_strategy["probed"].compute.mean == pytest.approx((2 + 1.5) / 4)


def test_paired_difference_is_the_regret_difference() -> None:
    def run(strategy: str, seed: int, loss: float) -> RunRecord:
        return RunRecord(
            task="t", seed=seed, lr_factor=1.0, strategy=strategy, learning_rate=0.1, budget=4,
            epochs=4, test_loss=loss, wall_seconds=0.1,
        )  # fmt: skip

    runs = [run("a", 0, 2.0), run("b", 0, 1.0), run("a", 1, 1.0), run("b", 1, 1.0)]
    harm = paired_difference(runs, "a", "b")
    assert harm is not None and harm.n == 2 and harm.mean == pytest.approx(math.log(2) / 2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr_reference": "best"}, "unknown `lr_reference` 'best'; valid references are tuned, "),
        ({"strategies": "constant,adam"}, "valid strategies are constant, early_stopping"),
        ({"oracle_grid": 0}, "`oracle_grid` must be at least 3"),
        ({"seeds": 0}, "`seeds` must be at least 1"),
        ({"lr_factors": "0,1"}, "bad `lr_factors`"),
    ],
)
def test_plan_names_the_wrong_parameter(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BenchmarkError, match=None) as caught:
        plan_benchmark(tasks=TINY, **changes)  # type: ignore[arg-type]
    assert message in str(caught.value) and "--" not in str(caught.value)



def test_report_shows_harm_from_a_good_start_and_the_profiles(tmp_path: Path) -> None:
    fake = FakeExecutor(val=_distance(DEFAULT_LR), test=_distance(DEFAULT_LR))
    settings = settings_for(strategies=("reduce_lr", "learned"), controller="c", oracle_grid=3)
    _benchmark(tmp_path, settings, fake)
    report = (tmp_path / "report.md").read_text()
    # Both strategies get the same made-up losses: a difference of 0 over 2 cells at x1.
    assert "**Harm from a good start** (x1, learned's regret minus reduce_lr's, paired " in report
    assert "over 2 cells): 0.00 [0.00, 0.00]; no clear difference." in report
    assert "## Time to target" in report and (tmp_path / "profiles.png").is_file()


def test_reuse_runs_only_what_depends_on_the_controller(tmp_path: Path) -> None:
    """``--reuse``: another controller's benchmark of the same cells lends its grid and its
    controller-free strategies; only the learned runs are trained again."""
    fake = FakeExecutor(val=_distance(DEFAULT_LR), test=_distance(DEFAULT_LR))
    first = settings_for(strategies=("constant", "greedy_lr", "learned"), controller="aaaa",
                         strategy_settings={"greedy_lr": {"factor": 0.5}})
    _benchmark(tmp_path / "a", first, fake)
    fake.orders.clear()
    second = settings_for(strategies=("constant", "greedy_lr", "learned"), controller="bbbb",
                          strategy_settings={"greedy_lr": {"factor": 0.5}})
    _benchmark(tmp_path / "b", second, fake, reuse=tmp_path / "a")
    assert {order.key.strategy for order in fake.orders} == {"learned"}
    assert len(read_store(tmp_path / "b").runs) == len(read_store(tmp_path / "a").runs)

    fake.orders.clear()  # a rule with other settings is run again, not copied
    third = settings_for(strategies=("constant", "greedy_lr", "learned"), controller="cccc",
                         strategy_settings={"greedy_lr": {"factor": 0.8}})
    _benchmark(tmp_path / "c", third, fake, reuse=tmp_path / "a")
    assert {order.key.strategy for order in fake.orders} == {"learned", "greedy_lr"}
    with pytest.raises(BenchmarkError, match="other settings .*seeds: store 2, now 3"):
        _benchmark(tmp_path / "d", settings_for(seeds=3), fake, reuse=tmp_path / "a")


def test_reuse_takes_the_controller_runs_of_the_same_bundle(tmp_path: Path) -> None:
    fake = FakeExecutor(val=_distance(DEFAULT_LR), test=_distance(DEFAULT_LR))
    same = settings_for(strategies=("constant", "learned"), controller="aaaa")
    _benchmark(tmp_path / "a", same, fake)
    fake.orders.clear()
    _benchmark(tmp_path / "b", settings_for(strategies=("constant", "learned", "cosine"),
                                            controller="aaaa"), fake, reuse=tmp_path / "a")
    assert {order.key.strategy for order in fake.orders} == {"cosine"}
