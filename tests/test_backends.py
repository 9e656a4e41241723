"""The deployed callback on Keras' TensorFlow, JAX and torch backends, one process each.

``import fitpilot`` must keep the user's backend: torch is chosen here through
``keras.json`` (the case that ``import fitpilot`` used to override), the others
through ``KERAS_BACKEND``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_the_controller_on_each_backend(backend: str, tmp_path: Path) -> None:
    pytest.importorskip(backend)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp_path),
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if backend == "torch":
        (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    else:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run([sys.executable, "-m", "tests.backend_fit", backend], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
