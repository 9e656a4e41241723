"""The benchmark of a given bundle reproduces across machines: stored figures of a tiny cell.

Training a controller with PPO amplifies float differences between CPUs (another
machine gives another bundle, see ``fitpilot recipe``), but benchmarking a
*given* bundle does not: every fit is seeded (initial weights, data order) and
TensorFlow runs with oneDNN off. These figures were measured on the 2-core
reference machine (2026-11-30); a CPU or library change that moves them shows here.
"""

from __future__ import annotations

import pytest

from fitpilot.envs.loading import load_tasks
from fitpilot.experiments.runs import Runner, controller_factory
from fitpilot.experiments.settings import RunKey, RunOrder
from tests.bundles import V1_BUNDLE, V2_BUNDLE

TASK, RATE = "tiny_blobs", 0.01  # tests.benchmark_tasks: 8 epochs of a 4-16-3 MLP
#: (strategy, seed, lr factor) -> (test loss, epochs run)
STORED = {
    ("constant", 0, 1.0): (0.4161638617515564, 8),
    ("constant", 1, 1.0): (0.35091632604599, 8),
    ("reduce_lr", 0, 1.0): (0.4161638617515564, 8),
    ("cosine", 0, 1.0): (0.6221868395805359, 8),
    ("cosine", 1, 1.0): (0.4604323208332062, 8),
    ("prodigy", 0, 1.0): (0.47061678767204285, 8),
    # The shipped controller, 41c8f865d694077f (v3: the scale probe, then its first decision
    # moves every start to the same measured scale: one result from every starting rate)
    ("learned", 0, 0.1): (0.41915228962898254, 8),
    ("learned", 0, 1.0): (0.41915228962898254, 8),
    ("learned", 0, 10.0): (0.41915228962898254, 8),
    ("learned", 1, 1.0): (0.36282116174697876, 8),
    ("learned", 1, 10.0): (0.36282116174697876, 8),
}
#: The same cells with the v2 controller shipped before (b1363f1344448dd7: weight features,
#: rollback), kept in tests/data: figures stored while it shipped.
STORED_V2 = {
    ("learned", 0, 0.1): (0.43279725313186646, 8),
    ("learned", 0, 1.0): (0.46601632237434387, 8),
    ("learned", 0, 10.0): (0.38092052936553955, 8),
    ("learned", 1, 1.0): (0.39113134145736694, 8),
    ("learned", 1, 10.0): (0.3566182255744934, 7),
}
#: The same cells with the v1 controller shipped before (59e98e941ccfe1d5): a v1 bundle still
#: loads and acts exactly as it did (these figures were stored while it shipped).
STORED_V1 = {
    ("learned", 0, 0.1): (0.4948667287826538, 8),
    ("learned", 0, 1.0): (0.4467748701572418, 6),
    ("learned", 0, 10.0): (0.4118953347206116, 6),
    ("learned", 1, 1.0): (0.41276314854621887, 6),
    ("learned", 1, 10.0): (0.3566182255744934, 5),
}


#: The bundle of each set of stored figures: the shipped one, and the v1 and v2 ones kept in
#: tests/data (an older bundle still loads and acts exactly as it did when it shipped).
SOURCES = {
    "shipped": ("pretrained", STORED),
    "v2": (str(V2_BUNDLE), STORED_V2),
    "v1": (str(V1_BUNDLE), STORED_V1),
}


@pytest.fixture(scope="module")
def runners() -> dict[str, Runner]:
    tasks = load_tasks("tests.benchmark_tasks:TASKS")
    return {name: Runner(tasks, controller_factory(source), source)
            for name, (source, _) in SOURCES.items()}


@pytest.mark.parametrize(
    ("bundle", "strategy", "seed", "factor"),
    [(name, *key) for name, (_, stored) in SOURCES.items() for key in sorted(stored)],
)
def test_runs_of_a_tiny_cell_match_the_stored_figures(
    runners: dict[str, Runner], bundle: str, strategy: str, seed: int, factor: float
) -> None:
    record = runners[bundle].run(RunOrder(RunKey(TASK, seed, factor, strategy), RATE * factor))
    test_loss, epochs = SOURCES[bundle][1][(strategy, seed, factor)]
    assert record.epochs == epochs
    assert record.test_loss == pytest.approx(test_loss, rel=1e-6)
