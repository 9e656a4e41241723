"""Run by tests/test_backends.py in a fresh process: the controller on the Keras backend in force.

``python -m tests.backend_fit BACKEND`` checks that ``import fitpilot`` kept the backend
that the environment or ``keras.json`` chose (BACKEND), then fits with the controller:
decisions reach the optimizer, the best weights come back, a NaN restores them and
stops, a stop action stops, another lr callback is refused, ``validation_freq`` is
seen; and fitpilot imported no other framework (Keras itself
may: it imports jax and TensorFlow for its own utilities when they are installed).
Prints ``ok``.
"""

from __future__ import annotations

import builtins
import sys
import warnings

FRAMEWORKS = ("tensorflow", "jax", "torch")
imported_by_fitpilot: set[str] = set()
_import = builtins.__import__


def _recording_import(name, globals=None, *args, **kwargs):  # noqa: A002 (builtin signature)
    """``__import__`` that notes the frameworks a fitpilot module imports."""
    top = name.partition(".")[0]
    if top in FRAMEWORKS and str((globals or {}).get("__name__", "")).startswith("fitpilot"):
        imported_by_fitpilot.add(top)
    return _import(name, globals, *args, **kwargs)


builtins.__import__ = _recording_import

import fitpilot  # noqa: E402 (before Keras, as a user would: it must not choose the backend)

assert "keras" not in sys.modules
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.test_callback import (  # noqa: E402
    KEEP,
    LOWER,
    RAISE,
    STOP,
    WeightsPerEpoch,
    constant_bundle,
    data,
)


def assert_same(weights: list[np.ndarray], expected: list[np.ndarray]) -> None:
    for got, want in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def classifier(lr: float) -> keras.Model:
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(2, activation="softmax")])
    net.compile(keras.optimizers.SGD(learning_rate=lr), "sparse_categorical_crossentropy")
    return net


def main(backend: str) -> None:
    assert keras.backend.backend() == backend, (keras.backend.backend(), backend)
    keras.utils.set_random_seed(0)
    x, y = data()
    controller = fitpilot.LearnedController

    # decisions reach the optimizer
    net, lower = classifier(0.09), controller(constant_bundle(LOWER))
    history = net.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[lower])
    assert [d.action for d in lower.decisions] == ["lower", "lower", "end"], lower.decisions
    assert np.allclose([d.lr_before for d in lower.decisions], [0.09, 0.03, 0.01], rtol=1e-6)
    assert np.isclose(float(keras.ops.convert_to_numpy(net.optimizer.learning_rate)), 0.01)
    assert history.history["action"] == [LOWER, LOWER, -1]

    # the best weights (here: the highest val_loss) come back at the end
    net, recorder = classifier(0.1), WeightsPerEpoch()
    keep = controller(constant_bundle(KEEP), mode="max")
    history = net.fit(x, y, validation_split=0.25, epochs=4, verbose=0,
                      callbacks=[keep, recorder])
    best = int(np.argmax(history.history["val_loss"]))
    assert keep.best_epoch == best + 1 and best != 3, history.history["val_loss"]
    assert_same(net.get_weights(), recorder.weights[best])

    # a NaN restores the best weights and stops
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    net.compile(keras.optimizers.SGD(learning_rate=0.01), "mse")
    recorder, raise_ = WeightsPerEpoch(), controller(constant_bundle(RAISE), max_lr=1e12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = net.fit(x, y.astype("float32") * 1e3, validation_split=0.25, epochs=40,
                          verbose=0, callbacks=[raise_, recorder])
    assert any("non-finite" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert raise_.decisions[-1].action == "diverged" and len(history.epoch) < 40
    assert_same(net.get_weights(), recorder.weights[raise_.best_epoch - 1])
    assert all(np.isfinite(w).all() for w in net.get_weights())

    # a stop action stops
    stop = controller(constant_bundle(STOP))
    history = classifier(0.05).fit(x, y, validation_split=0.25, epochs=5, verbose=0,
                                   callbacks=[stop])
    assert len(history.epoch) == 1 and stop.stopped_epoch == 1

    # the other callbacks are found on every backend (from fit's arguments)
    net = classifier(0.05)
    try:
        net.fit(x, y, validation_split=0.25, epochs=2, verbose=0,
                callbacks=[controller(constant_bundle(KEEP)),
                           keras.callbacks.ReduceLROnPlateau()])
    except fitpilot.FitpilotError as exc:
        assert "ReduceLROnPlateau is in the callbacks" in str(exc), exc
    else:
        raise AssertionError("ReduceLROnPlateau was not refused")

    # validation_freq is found on every backend too
    wait = controller(constant_bundle(KEEP))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier(0.05).fit(x, y, validation_split=0.25, validation_freq=2, epochs=4,
                             verbose=0, callbacks=[wait])
    assert [d.action for d in wait.decisions] == ["wait", "keep", "wait", "end"], wait.decisions

    others = imported_by_fitpilot - {backend}
    assert not others, f"on the {backend} backend, fitpilot imported {sorted(others)}"
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
