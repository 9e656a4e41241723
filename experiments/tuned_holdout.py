"""The holdout suite with tuned default learning rates: the hardest case for a controller.

The built-in holdout tasks start from common default learning rates (Adam 1e-3
and SGD 1e-2 as in Keras, RMSprop 2e-3), which on these small tasks are 5-20x
below the best constant rate; a controller that raises the rate gains a lot there. Here each
task's default is set to the best constant rate of the hindsight oracle's grid
(measured by `fitpilot benchmark --suite holdout`, the same for every seed), so
``x1`` cells start from a tuned rate and only the ``x0.1`` / ``x10`` cells are
poor starts. Use it with ``--tasks fitpilot.experiments.tuned_holdout:TASKS``.
"""

from __future__ import annotations

from dataclasses import replace

from fitpilot.envs.suites import holdout_suite
from fitpilot.envs.tasks import TrainingTask

# Oracle-best constant learning rate of each holdout task, as a factor of its default.
ORACLE_BEST_FACTORS = {
    "quantiles_mlp": 4.642,
    "digits_lstm": 4.642,
    "regression_sgd": 21.54,
    "sine_conv1d": 4.642,
}


def tuned_holdout() -> list[TrainingTask]:
    """Holdout tasks renamed ``<name>_tuned`` with the oracle-best default learning rate."""
    return [
        replace(
            task,
            name=f"{task.name}_tuned",
            learning_rate=task.learning_rate * ORACLE_BEST_FACTORS[task.name],
        )
        for task in holdout_suite()
    ]


TASKS = tuned_holdout
