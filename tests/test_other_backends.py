"""Prodigy and the learning-rate range test on Keras' JAX and torch backends.

Keras picks its backend once per process, so each backend runs in a subprocess
with ``KERAS_BACKEND`` set, both checks in one process to pay the imports once:
Prodigy's parity with the numpy reference (tests/test_prodigy.py) over 30 steps,
a range test that leaves the model and optimizer exactly as they were
(tests/test_lr_finder.py), and Prodigy training an embedding model (tests/text_tasks.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.other_backends import OTHER_BACKENDS, run_on_backend
from tests.test_prodigy import TOLERANCE

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_prodigy_and_range_test_on_backend(backend: str) -> None:
    *_, worst = run_on_backend(
        backend,
        "tests.test_lr_finder:check_restores_exactly",
        "tests.test_prodigy:check_text_model_trains",
        "tests.test_prodigy:run_parity_30",
    )
    assert float(worst) <= TOLERANCE
