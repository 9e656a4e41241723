"""The core install is light: the wheel, installed without extras into a fresh virtual
environment with only JAX beside it, runs the callback (and the baselines) in a fit on Keras'
JAX backend without importing TensorFlow or torch; the command line says which extra to add.

Slow (a wheel build and a venv with Keras and JAX from the package index or pip's cache).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = """
import sys
import numpy as np
import keras
import fitpilot
from fitpilot import AdaLRS, GreedyLR, LearnedController, Prodigy, find_learning_rate

assert keras.backend.backend() == "jax", keras.backend.backend()
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1))).astype("float32")

def model(optimizer):
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(1)])
    net.compile(optimizer=optimizer, loss="mse")
    return net

controller = LearnedController.pretrained()
history = model(keras.optimizers.Adam(1e-3)).fit(
    x, y, validation_split=0.25, epochs=4, verbose=0, callbacks=[controller])
assert len(controller.decisions) >= 1, controller.decisions
for rule in (GreedyLR(factor=0.5, patience=0, min_lr=1e-5), AdaLRS()):
    model(keras.optimizers.SGD(0.01)).fit(x, y, validation_split=0.25, epochs=3, verbose=0,
                                          callbacks=[rule])
    assert rule.decisions, rule
model(Prodigy()).fit(x, y, epochs=2, verbose=0)
assert find_learning_rate(model(keras.optimizers.Adam(1e-3)), x, y, max_batches=20).batches
heavy = sorted(name for name in ("tensorflow", "torch", "gymnasium", "stable_baselines3",
                                 "sklearn") if name in sys.modules)
assert not heavy, f"the core install imported {heavy}"
print("ok")
"""


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_the_core_install_runs_the_callback_on_jax_alone(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools leaves build/ in the tree it builds
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "runs", "demo", "*.egg-info", "__pycache__"))
    built = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                str(tmp_path / "dist"), str(source))
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("fitpilot-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    jax = importlib.metadata.version("jax")  # the version the dev install has: pip's cache
    installed = run(str(python), "-m", "pip", "install", "-q", str(wheel), f"jax[cpu]=={jax}")
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = run(str(python), "-m", "pip", "list", "--format=freeze").stdout.lower()
    for package in ("tensorflow", "torch", "gymnasium", "stable-baselines3", "scikit-learn"):
        assert f"\n{package}==" not in f"\n{listed}", f"the core install pulled {package}"

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KERAS_BACKEND": "jax",
           "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    result = run(str(python), "-c", USER_SCRIPT, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"

    command = run(str(tmp_path / "venv" / "bin" / "fitpilot"), "train", env=env, cwd=tmp_path)
    assert command.returncode == 2, command.stderr
    assert command.stderr.count("\n") == 1 and "pip install 'fitpilot[train]'" in command.stderr


def test_a_command_whose_extra_is_missing_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from fitpilot import extras
    from fitpilot.cli import app

    real = extras.find_spec
    monkeypatch.setattr(extras, "find_spec",
                        lambda name: None if name == "gymnasium" else real(name))
    result = CliRunner().invoke(app, ["train", "--timesteps", "64"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: fitpilot train needs the 'train' extra (gymnasium not installed): "
        "pip install 'fitpilot[train]'"
    )
    assert CliRunner().invoke(app, ["tasks", "--suite", "holdout"]).exit_code == 0
