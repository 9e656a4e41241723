"""The benchmark's strategies: one :class:`Strategy` row each, the one home of everything a
strategy is (what it trains with, how it is run, how it is drawn and described).

Settings, runs, plots and the report read :data:`STRATEGY_TABLE` and never name a
strategy. Adding one is a row here plus its callback (in :mod:`fitpilot.baselines`,
or Keras' own); see ``tests/test_strategy_table.py``, which adds a toy strategy and runs
it through a benchmark and its report.

This module imports neither TensorFlow nor Keras: the command line checks strategy
names before any worker starts. The callback builders import Keras when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fitpilot.errors import FitpilotError

if TYPE_CHECKING:
    import keras

#: Strategy name of the hindsight oracle's grid runs (a reference, not a strategy).
ORACLE = "oracle"
#: The strategy the benchmark is about (the report highlights it and measures its harm).
PRODUCT = "learned"
#: At x1 (a tuned start) the product must do no harm: its regret minus this strategy's.
GOOD_START_BASELINE = "reduce_lr"
#: Compiled-model kinds a row may ask for (built by ``experiments.runs.PreparedTask``):
#: ``constant``, the task's optimizer at a variable rate; ``cosine``, the task's optimizer
#: under a ``CosineDecay`` over the budget; ``prodigy``, Prodigy under a ``CosineDecay`` from 1.
MODEL_KINDS = ("constant", "cosine", "prodigy")
#: Pre-run probes a row may ask for: ``range_test``, the learning-rate range test from the
#: cell's initial weights, whose suggestion the run starts from (its batches count as compute).
PROBES = ("range_test",)


class StrategyError(FitpilotError, ValueError):
    """A strategy name that is not in the table, or a run that lacks what its strategy needs."""


@dataclass(frozen=True)
class RunContext:
    """What a strategy's callbacks may depend on, for one run.

    Attributes:
        learning_rate: the rate the run starts at (after any probe).
        epochs: the epoch budget.
        steps_per_epoch: batches per epoch.
        controller: makes a fresh ``LearnedController`` (``None`` if no bundle was given).
    """

    learning_rate: float
    epochs: int
    steps_per_epoch: int
    controller: Callable[[], keras.callbacks.Callback] | None = None


class DecisionSource(Protocol):
    """A callback that records what it decided after each epoch (the report reads it)."""

    @property
    def probe_batches(self) -> int:
        """Batches it trained to measure before the first epoch (compute; 0 for none)."""

    def decisions_as_dicts(self) -> list[dict[str, Any]]:
        """One dict per epoch: ``epoch``, ``lr_before``, ``action``, ``lr_after``, ..."""


@dataclass(frozen=True)
class Strategy:
    """One benchmark strategy.

    Attributes:
        name: as on the command line (``--strategies``) and in the store.
        description: one line for the report's definitions.
        callbacks: builds the run's fresh callbacks from its :class:`RunContext`.
        model: the compiled-model kind it trains (:data:`MODEL_KINDS`).
        probe: a pre-run probe (:data:`PROBES`) or ``None``.
        fixed_learning_rate: the rate it always starts at, whatever the cell's (Prodigy's
            multiplier 1), or ``None`` to start at the cell's rate (or the probe's).
        factor_free: its run does not depend on the cell's starting factor: it runs once
            per task and seed, and its record stands for every factor.
        needs_controller: it needs a controller bundle (``--controller``).
        records_decisions: its first callback is a :class:`DecisionSource`.
        settings: the arguments its callbacks take beyond the protocol's fixed ones (a rule's
            chosen settings); a results store records them, so that a change is not mixed
            into older results.
        color, style: matplotlib colour and line style in the plots.
    """

    name: str
    description: str
    callbacks: Callable[[RunContext], list[Any]]
    model: str = "constant"
    probe: str | None = None
    fixed_learning_rate: float | None = None
    factor_free: bool = False
    needs_controller: bool = False
    records_decisions: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    color: str = "tab:gray"
    style: Any = "-"

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise StrategyError(f"strategy {self.name!r}: model {self.model!r} is not one of "
                                f"{', '.join(MODEL_KINDS)}")
        if self.probe is not None and self.probe not in PROBES:
            raise StrategyError(f"strategy {self.name!r}: probe {self.probe!r} is not one of "
                                f"{', '.join(PROBES)}")

    @property
    def is_product(self) -> bool:
        return self.name == PRODUCT


# --- the callbacks of each row (Keras is imported when a run builds them) ----------------


def restore_best(context: RunContext) -> list[Any]:
    """Best-weight restore only: the constant rate, or the model kind's own schedule."""
    from fitpilot.experiments.callbacks import RestoreBestWeights

    return [RestoreBestWeights("val_loss")]


def early_stopping(context: RunContext) -> list[Any]:
    import keras

    return [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=5, min_delta=0.001, restore_best_weights=True)]


def reduce_lr(context: RunContext) -> list[Any]:
    from fitpilot.envs.plateau_run import reduce_lr_on_plateau
    from fitpilot.experiments.callbacks import RestoreBestWeights

    return [reduce_lr_on_plateau(), RestoreBestWeights("val_loss")]


def es_reduce_lr(context: RunContext) -> list[Any]:
    import keras

    from fitpilot.envs.plateau_run import reduce_lr_on_plateau

    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
        reduce_lr_on_plateau(),
    ]


#: GreedyLR's settings in the benchmark (the transformers defaults, factor 0.95 and patience
#: 10 with min_lr 1e-3, barely move a rate in 10-100 epochs): chosen on the validation suite
#: by ``experiments/tune_rules.py`` (experiments/NOTES.md); the clamp is ReduceLROnPlateau's
#: min_lr and the controller's max_lr.
GREEDY_LR = {"factor": 0.5, "patience": 2, "min_lr": 1e-5, "max_lr": 10.0}
#: AdaLRS's settings in the benchmark: its window of 3 epochs and a raise of x3, chosen on the
#: validation suite too (``experiments/tune_rules.py``).
ADALRS: dict[str, Any] = {"window": 3, "raise_factor": 3.0}


def greedy_lr(context: RunContext) -> list[Any]:
    from fitpilot.baselines.greedy_lr import GreedyLR

    return [GreedyLR(monitor="val_loss", restore_best_weights=True, **GREEDY_LR)]


def adalrs(context: RunContext) -> list[Any]:
    from fitpilot.baselines.adalrs import AdaLRS

    return [AdaLRS(monitor="val_loss", restore_best_weights=True, **ADALRS)]


def learned(context: RunContext) -> list[Any]:
    if context.controller is None:
        raise StrategyError(f"the {PRODUCT} strategy needs a controller; give `controller`")
    return [context.controller()]


#: Every strategy, in report order. The Keras heuristics are Keras' own callbacks with the
#: arguments of docs/benchmark.md.
STRATEGY_TABLE: dict[str, Strategy] = {row.name: row for row in (
    Strategy(
        "constant", "the starting rate throughout, with best-weight restore",
        restore_best, color="tab:gray", style=(0, (1, 1.5)),
    ),
    Strategy(
        "early_stopping",
        "Keras' EarlyStopping(monitor='val_loss', patience=5, min_delta=0.001, "
        "restore_best_weights=True)",
        early_stopping, color="tab:blue", style=(0, (6, 2)),
    ),
    Strategy(
        "reduce_lr",
        "Keras' ReduceLROnPlateau(factor=0.5, patience=3, min_lr=1e-5, cooldown=2), "
        "with best-weight restore",
        reduce_lr, color="tab:orange", style=(0, (3, 2, 1, 2)),
    ),
    Strategy(
        "es_reduce_lr", "EarlyStopping(patience=10, restore_best_weights=True) + reduce_lr's "
        "ReduceLROnPlateau", es_reduce_lr, color="tab:green", style=(0, (10, 3)),
    ),
    Strategy(
        "cosine", "Keras' CosineDecay from the starting rate to 0 over the budget, with "
        "best-weight restore", restore_best, model="cosine", color="tab:purple",
    ),
    Strategy(
        "lr_finder", "range test (1e-7 to 10 over at most 100 batches, fastai's valley rule), "
        "then es_reduce_lr from the suggested rate; the probe's batches count as compute",
        es_reduce_lr, probe="range_test", factor_free=True, color="tab:brown",
        style=(0, (5, 1, 1, 1)),
    ),
    Strategy(
        "prodigy", "Prodigy (lr 1) under a CosineDecay over the budget, with best-weight "
        "restore; ignores the starting rate and the task's optimizer",
        restore_best, model="prodigy", fixed_learning_rate=1.0, factor_free=True,
        color="tab:cyan",
    ),
    Strategy(
        "greedy_lr", "GreedyLR (Subramanian et al. 2025, the transformers rule) per epoch on "
        "val_loss: the rate / F after improvements, x F otherwise, with patience; best-weight "
        "restore", greedy_lr, records_decisions=True, settings=GREEDY_LR, color="tab:olive",
        style=(0, (4, 1, 1, 1)),
    ),
    Strategy(
        "adalrs", "AdaLRS (Dong et al. 2025) per epoch on val_loss: raise while the fitted "
        "descent slope improves, roll back a failed raise and lower; best-weight restore",
        adalrs, records_decisions=True, settings=ADALRS, color="tab:pink", style=(0, (2, 1)),
    ),
    Strategy(
        PRODUCT, "the LearnedController from the benchmarked bundle", learned,
        needs_controller=True, records_decisions=True, color="tab:red",
    ),
)}


#: The grid runs of the hindsight oracle: a constant rate with best-weight restore.
ORACLE_ROW = Strategy(ORACLE, "a constant learning rate of the grid, with best-weight restore",
                      restore_best, color="black")


def strategy_names() -> tuple[str, ...]:
    """Every strategy's name, in report order."""
    return tuple(STRATEGY_TABLE)


def strategy(name: str) -> Strategy:
    """The row of ``name`` (:data:`ORACLE_ROW` for the oracle); :class:`StrategyError` naming
    the valid ones if there is none."""
    row = ORACLE_ROW if name == ORACLE else STRATEGY_TABLE.get(name)
    if row is None:
        raise StrategyError(
            f"unknown strategy {name!r}; valid strategies are {', '.join(strategy_names())}"
        )
    return row


def settings_of(names: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """The chosen settings of the strategies ``names`` that have some (for a store's header)."""
    rows = [STRATEGY_TABLE[name] for name in names if name in STRATEGY_TABLE]
    return {row.name: dict(row.settings) for row in rows if row.settings}


def is_factor_free(name: str) -> bool:
    """Whether ``name`` 's run stands for every starting factor (unknown names: no)."""
    row = STRATEGY_TABLE.get(name)
    return row is not None and row.factor_free
