"""The private Keras and TensorFlow internals fitpilot relies on are all there, and a release
that drops one fails with a message that names the fence, ``fitpilot.keras_internals``."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import pytest

from fitpilot import keras_internals
from fitpilot.keras_internals import KerasInternalsError, check

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("controller", "baselines", "envs", "agents", "experiments", "fitpilot")


def test_every_internal_fitpilot_relies_on_is_there() -> None:
    check(tensorflow=True)


def test_a_missing_internal_is_named_with_the_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    with pytest.raises(KerasInternalsError) as caught:
        check(tensorflow=True)
    message = str(caught.value)
    assert message.startswith("fitpilot.keras_internals: ")
    assert "Layer._flatten_layers (for the epoch runners)" in message
    assert keras_internals.KERAS_CHECKED in message


def test_no_module_but_the_fence_touches_keras_src_or_tensorflow_python() -> None:
    """Private modules are imported in one place only (overrides of private hooks aside)."""
    offenders = []
    for folder in PACKAGE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "keras_internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                              if name.startswith(("keras.src", "tensorflow.python"))]
    assert offenders == []
