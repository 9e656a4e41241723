"""Test helper: one task of the real suite, loaded as ``tests.real_tasks:ONE`` (a benchmark
slice of one task and one seed, as CI runs it)."""

from __future__ import annotations

from fitpilot.envs.real_suite import real_suite
from fitpilot.envs.tasks import TrainingTask

#: The quickest task of the suite (about 4 s per full-budget run on one thread).
SLICE_TASK = "tweets_text"


def ONE() -> list[TrainingTask]:  # noqa: N802 - an import-path name, like TASKS
    return [task for task in real_suite() if task.name == SLICE_TASK]
