"""The one fence around the private Keras and TensorFlow internals fitpilot relies on.

Checked on **Keras 3.15.1** and **TensorFlow 2.21.0**; ``pyproject.toml`` bounds both
just above (``keras<3.16``, ``tensorflow<2.22``). Every touch of ``keras.src``,
``tensorflow.python`` or a private attribute of a Keras or TensorFlow object in fitpilot
goes through a function here, except one kind that cannot: a subclass overriding a
private hook (:data:`OPTIMIZER_HOOKS`, as Keras' own ``optimizers/nadam.py`` does),
which :func:`check` checks instead. When a Keras or TensorFlow release moves one of
them, :func:`check` (run by ``tests/test_keras_internals.py``) fails with a message that
names this module and the internal, before anything fails obscurely.

What relies on what:

- the callback (any backend): :func:`fit_locals` (``fit``'s other callbacks,
  ``validation_freq`` and data: Keras gives a callback none of them), :func:`metric_direction`,
  :func:`print_message`, :func:`schedule_of` (in an error message);
- Prodigy (any backend): :data:`OPTIMIZER_HOOKS` overridden, :func:`variable_index`,
  :func:`uses_weight_decay`;
- the epoch runners (TensorFlow): :func:`op_determinism_enabled` /
  :func:`disable_op_determinism`, :func:`flatten_layers`;
- the batched runner (TensorFlow): :func:`stateless_optimizer`, :func:`register_bitcast_pfor`,
  :func:`update_compiled_metrics`.

This module imports Keras; TensorFlow only inside the functions that need it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import keras

from fitpilot.errors import FitpilotError

KERAS_CHECKED = "3.15.1"
TENSORFLOW_CHECKED = "2.21.0"
#: Private methods of ``keras.optimizers.Optimizer`` that Prodigy overrides (a whole-step
#: update and its own weight decay), as ``keras/src/optimizers/nadam.py`` does.
OPTIMIZER_HOOKS = ("_backend_update_step", "_apply_weight_decay")
#: Methods of Keras' backend-neutral ``BaseOptimizer`` that the batched runner's stateless
#: optimizer takes instead of the TensorFlow optimizer's (which refuse to run stateless).
STATELESS_METHODS = (
    "stateless_apply",
    "assign",
    "assign_add",
    "assign_sub",
    "_backend_update_step",
    "_apply_weight_decay",
    "_var_key",
)


class KerasInternalsError(FitpilotError):
    """A private Keras or TensorFlow internal that fitpilot relies on is missing."""


# --- Keras, any backend --------------------------------------------------------------------


def fit_locals(names: Iterable[str]) -> dict[str, Any]:
    """The local variables ``names`` of the Keras ``fit`` call running the caller's hook, or
    {} outside ``fit``.

    Keras gives callbacks neither the other callbacks, nor ``validation_freq``, nor the
    data; they are local variables of ``fit`` on every backend (``callbacks``, a
    ``CallbackList``; ``validation_freq``; ``validation_data``, the split if
    ``validation_split`` was given; ``x``, ``y``, ``batch_size``...), a few frames up.
    """
    frame = sys._getframe(1)
    for _ in range(12):
        frame = frame.f_back
        if frame is None:
            break
        if frame.f_code.co_name == "fit" and "validation_freq" in frame.f_code.co_varnames:
            return {name: frame.f_locals[name] for name in names if name in frame.f_locals}
    return {}


def metric_direction(metric: Any) -> str | None:
    """``"up"`` or ``"down"``: which way a Keras metric improves (``None`` if it does not say).
    Keras' own ``MonitorCallback`` reads the same private attribute."""
    return getattr(metric, "_direction", None)


def print_message(message: str) -> None:
    """Print as Keras' callbacks do (``io_utils.print_msg``: absl logging when it is on)."""
    try:
        from keras.src.utils.io_utils import print_msg
    except ImportError:  # pragma: no cover - moved in a release; check() reports it
        print(message)
    else:
        print_msg(message)


def schedule_of(optimizer: Any) -> Any:
    """The learning rate an optimizer was built with: a schedule, where it has one."""
    return getattr(optimizer, "_learning_rate", None)


def variable_index(optimizer: Any, variable: Any) -> int:
    """The index of ``variable`` in the optimizer's per-variable state lists."""
    return optimizer._get_variable_index(variable)


def uses_weight_decay(optimizer: Any, variable: Any) -> bool:
    """Whether the optimizer's weight decay applies to ``variable`` (its exclusions)."""
    return bool(optimizer._use_weight_decay(variable))


def flatten_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested ones included, ``model`` first."""
    return list(model._flatten_layers(include_self=True, recursive=True))


# --- TensorFlow ------------------------------------------------------------------------------


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (no public query exists)."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def enable_op_determinism() -> None:
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def disable_op_determinism() -> None:
    """Turn op determinism off again (no public switch exists)."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def stateless_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """A twin of ``optimizer`` (same class and config) whose ``stateless_apply`` works on
    TensorFlow.

    Keras' TensorFlow optimizer refuses ``stateless_apply`` because of ``tf.distribute``;
    the backend-neutral base methods it overrides (:data:`STATELESS_METHODS`) need no
    distribution strategy here.
    """
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    cls = type(optimizer)
    methods = {name: getattr(BaseOptimizer, name) for name in STATELESS_METHODS}
    twin_class = type(f"Stateless{cls.__name__}", (cls,), methods)
    return twin_class.from_config(optimizer.get_config())


def register_bitcast_pfor() -> None:
    """Let ``tf.vectorized_map`` vectorise ``Bitcast`` (``keras.ops.argmax`` uses it).

    TensorFlow has no vectorisation rule for it and falls back to a loop over the copies.
    A bitcast keeps the leading (copy) axis, so it applies to the stacked tensor.
    """
    import tensorflow as tf
    from tensorflow.python.ops.parallel_for import pfor

    if "Bitcast" in pfor._pfor_converter_registry:
        return

    @pfor.RegisterPFor("Bitcast")
    def _convert(pfor_input: Any) -> Any:
        stacked = pfor_input.stacked_input(0)
        return pfor.wrap(tf.bitcast(stacked, pfor_input.get_attr("type")), True)


def update_compiled_metrics(model: Any, loss: Any, x: Any, y: Any, y_pred: Any) -> None:
    """Update the model's loss tracker and compiled metrics after a batch, as Keras'
    ``train_step`` / ``test_step`` do (inside a ``StatelessScope`` the caller opens)."""
    import tensorflow as tf

    model._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
    if model._compile_metrics is not None:
        model._compile_metrics.update_state(y, y_pred, None)


# --- the check -------------------------------------------------------------------------------


def _has(owner: Callable[[], Any], *names: str) -> Callable[[], bool]:
    return lambda: all(hasattr(owner(), name) for name in names)


def _module(name: str) -> Callable[[], Any]:
    def load() -> Any:
        import importlib

        return importlib.import_module(name)

    return load


def _keras_fit_has_locals() -> bool:
    """``fit`` has the locals :func:`fit_locals` reads, on the backend in force."""
    import inspect

    names = inspect.unwrap(keras.Model.fit).__code__.co_varnames  # under Keras' traceback filter
    return all(name in names for name in ("callbacks", "validation_freq", "validation_data",
                                          "x", "y", "batch_size"))


#: Each internal: (what relies on it, its name, a probe that is true while it is there).
KERAS_REQUIREMENTS: list[tuple[str, str, Callable[[], bool]]] = [
    ("the callback", "fit's locals callbacks/validation_freq/validation_data/x/y/batch_size",
     _keras_fit_has_locals),
    ("the callback", "keras.src.utils.io_utils.print_msg",
     _has(_module("keras.src.utils.io_utils"), "print_msg")),
    ("the callback", "Metric._direction (MeanSquaredError, Accuracy)",
     lambda: metric_direction(keras.metrics.Accuracy()) == "up"
     and metric_direction(keras.metrics.MeanSquaredError()) == "down"),
    ("Prodigy", f"Optimizer.{', Optimizer.'.join(OPTIMIZER_HOOKS)}",
     _has(lambda: keras.optimizers.Optimizer, *OPTIMIZER_HOOKS)),
    ("Prodigy", "Optimizer._get_variable_index, Optimizer._use_weight_decay",
     _has(lambda: keras.optimizers.Optimizer, "_get_variable_index", "_use_weight_decay")),
    ("the epoch runners", "Layer._flatten_layers",
     _has(lambda: keras.layers.Layer, "_flatten_layers")),
]
TENSORFLOW_REQUIREMENTS: list[tuple[str, str, Callable[[], bool]]] = [
    ("the epoch runners", "tensorflow.python.framework.config.is/disable_op_determinism",
     _has(_module("tensorflow.python.framework.config"), "is_op_determinism_enabled",
          "disable_op_determinism")),
    ("the batched runner", "keras.src.optimizers.base_optimizer.BaseOptimizer methods",
     _has(lambda: _module("keras.src.optimizers.base_optimizer")().BaseOptimizer,
          *STATELESS_METHODS)),
    ("the batched runner", "tensorflow.python.ops.parallel_for.pfor registry",
     _has(_module("tensorflow.python.ops.parallel_for.pfor"), "_pfor_converter_registry",
          "RegisterPFor", "wrap")),
    ("the batched runner", "Model._loss_tracker, Model._compile_metrics",
     lambda: all(hasattr(_compiled_probe_model(), n) for n in ("_loss_tracker",
                                                               "_compile_metrics"))),
]


def _compiled_probe_model() -> Any:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


def check(tensorflow: bool | None = None) -> None:
    """Raise :class:`KerasInternalsError` naming this module and every internal that is missing.

    ``tensorflow``: also check the TensorFlow internals (default: when Keras runs on it).
    """
    if tensorflow is None:
        tensorflow = keras.backend.backend() == "tensorflow"
    requirements = KERAS_REQUIREMENTS + (TENSORFLOW_REQUIREMENTS if tensorflow else [])
    missing = []
    for who, name, probe in requirements:
        try:
            present = probe()
        except Exception:  # an import or attribute error means missing too
            present = False
        if not present:
            missing.append(f"{name} (for {who})")
    if missing:
        raise KerasInternalsError(
            f"fitpilot.keras_internals: this Keras {keras.__version__} lacks "
            f"{'; '.join(missing)}; fitpilot was checked on Keras {KERAS_CHECKED} and "
            f"TensorFlow {TENSORFLOW_CHECKED}: install those (pip install "
            f"'keras=={KERAS_CHECKED}'), or adapt fitpilot/keras_internals.py"
        )
