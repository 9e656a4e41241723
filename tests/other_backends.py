"""Test helper: run checks on Keras' JAX or torch backend, in a fresh process each.

Keras picks its backend once per process, so a test module's check functions (which use
whatever backend is in force) run in a subprocess with ``KERAS_BACKEND`` set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The backends besides TensorFlow that the tests cover.
OTHER_BACKENDS = ("jax", "torch")


def run_on_backend(backend: str, *checks: str) -> list[str]:
    """Call each ``"tests.module:function"`` of ``checks`` (no arguments) on ``backend``, in
    one fresh process; assert they pass; return what each returned, as text."""
    pytest.importorskip(backend)
    calls = "".join(
        f"import {module}; print(repr({module}.{function}()))\n"
        for module, function in (check.split(":") for check in checks)
    )
    script = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport keras\n"
              f"assert keras.backend.backend() == {backend!r}, keras.backend.backend()\n"
              f"keras.utils.set_random_seed(0)\n{calls}")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-len(checks):]
