"""Prodigy and the learning-rate range test on Keras' JAX and torch backends.

Keras picks its backend once per process, so each backend runs in a subprocess
with ``KERAS_BACKEND`` set, both checks in one process to pay the imports once:
Prodigy's parity with the numpy reference (tests/test_prodigy.py) over 30 steps,
a range test that leaves the model and optimizer exactly as they were
(tests/test_lr_finder.py), and Prodigy training an embedding model (tests/text_tasks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_prodigy import TOLERANCE

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import keras
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
from tests.test_lr_finder import check_restores_exactly
from tests.test_prodigy import check_text_model_trains, run_parity
check_restores_exactly()
check_text_model_trains()
print(run_parity(steps=30))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_prodigy_and_range_test_on_backend(backend: str) -> None:
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    script = SCRIPT.format(root=str(ROOT), backend=backend)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) <= TOLERANCE
