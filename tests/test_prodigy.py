"""Prodigy against a numpy transcription of the authors' reference, on a least-squares problem.

The reference is ``prodigyopt/prodigy.py`` of https://github.com/konstmish/prodigy
(commit 3efb213), ``Prodigy.step``, transcribed below to numpy (one parameter
group, no ``slice_p``/FSDP). Like the torch reference, it keeps the tensors in
float32 and the scalars (d, its numerator and denominator) as Python floats.
Each optimizer follows its own trajectory (gradients of its own weights); the
weights must stay within 1e-5 of each other at every step.

Why float32 tensors: the estimate of d rests on ``p0 - p``, a small difference
of large numbers in the first steps, so a float64 reference drifts from any
float32 run (torch's included) by ~5e-3 on this problem before both converge.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from fitpilot.baselines.prodigy import Prodigy, ProdigyError

STEPS = 200
TOLERANCE = 1e-5


class ReferenceProdigy:
    """``prodigyopt.Prodigy.step`` in numpy: same state, same order of updates."""

    def __init__(
        self,
        params,
        lr=1.0,
        betas=(0.9, 0.999),
        beta3=None,
        eps=1e-8,
        weight_decay=0.0,
        decouple=True,
        use_bias_correction=False,
        safeguard_warmup=False,
        d0=1e-6,
        d_coef=1.0,
        growth_rate=float("inf"),
    ):
        self.params = params
        self.lr, self.betas, self.beta3, self.eps = lr, betas, beta3, eps
        self.weight_decay, self.decouple = weight_decay, decouple
        self.use_bias_correction, self.safeguard_warmup = use_bias_correction, safeguard_warmup
        self.d0, self.d_coef, self.growth_rate = d0, d_coef, growth_rate
        self.d, self.d_max, self.d_numerator, self.k = d0, d0, 0.0, 0
        self.state = [{} for _ in params]

    def step(self, grads):
        beta1, beta2 = self.betas
        beta3 = math.sqrt(beta2) if self.beta3 is None else self.beta3
        k, d, d_max, lr = self.k, self.d, self.d_max, self.lr
        bias_correction = (
            ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
            if self.use_bias_correction
            else 1
        )
        dlr = d * lr * bias_correction
        d_numerator = self.d_numerator * beta3
        delta_numerator = 0.0
        d_denom = 0.0
        decay = self.weight_decay
        grads = list(grads)
        for i, (p, state) in enumerate(zip(self.params, self.state, strict=True)):
            grad = grads[i]
            if decay != 0 and not self.decouple:
                grad = grad + decay * p
                grads[i] = grad
            if "step" not in state:
                state["step"] = 0
                state["s"] = np.zeros_like(p)
                state["p0"] = p.copy()
                if beta1 > 0:
                    state["exp_avg"] = np.zeros_like(p)
                state["exp_avg_sq"] = np.zeros_like(p)
            if lr > 0.0:
                delta_numerator += (d / self.d0) * dlr * float(np.sum(grad * (state["p0"] - p)))
                if beta1 > 0:
                    state["exp_avg"] = state["exp_avg"] * beta1 + d * (1 - beta1) * grad
                state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + d * d * (1 - beta2) * grad**2
                alpha = (d / self.d0) * d if self.safeguard_warmup else (d / self.d0) * dlr
                state["s"] = state["s"] * beta3 + alpha * grad
                d_denom += float(np.abs(state["s"]).sum())
        if d_denom == 0:
            return
        if lr > 0.0:
            global_d_numerator = d_numerator + delta_numerator
            d_hat = self.d_coef * global_d_numerator / d_denom
            if d == self.d0:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * self.growth_rate)
        self.d_numerator, self.d, self.d_max = global_d_numerator, d, d_max
        for i, (p, state) in enumerate(zip(self.params, self.state, strict=True)):
            state["step"] += 1
            denom = np.sqrt(state["exp_avg_sq"]) + d * self.eps
            if decay != 0 and self.decouple:
                p += -decay * dlr * p
            if beta1 > 0:
                p -= dlr * state["exp_avg"] / denom
            else:
                p -= dlr * d * grads[i] / denom
        self.k = k + 1


def least_squares(seed: int = 0):
    """Two least-squares fits over three variables of different shapes, and their gradients.

    loss = 0.5 mean_rows |X W + b - Y|^2 + 0.5 mean_rows |Z V - T|^2, W (5, 3), b (3,), V (2, 4).
    """
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=(64, 5)), rng.normal(size=(32, 2))
    y = x @ rng.normal(size=(5, 3)) + 0.5 + 0.1 * rng.normal(size=(64, 3))
    t = z @ rng.normal(size=(2, 4))
    initial = [0.1 * rng.normal(size=(5, 3)), np.zeros(3), 0.1 * rng.normal(size=(2, 4))]

    def gradients(weights):
        w, b, v = (np.asarray(a, dtype=np.float64) for a in weights)
        r1, r2 = x @ w + b - y, z @ v - t
        return [x.T @ r1 / len(x), r1.mean(axis=0), z.T @ r2 / len(z)]

    return initial, gradients


def compiled_apply(optimizer: keras.optimizers.Optimizer, variables: list[keras.Variable]):
    """``optimizer.apply(grads, variables)``, as one graph on TensorFlow (eager ops are slow)."""
    optimizer.build(variables)
    if keras.backend.backend() != "tensorflow":
        return lambda grads: optimizer.apply(grads, variables)
    import tensorflow as tf

    return tf.function(lambda grads: optimizer.apply(grads, variables), autograph=False)


def run_parity(steps: int = STEPS, lrs=None, **settings) -> float:
    """Max |keras - reference| over all weights and steps; ``settings`` in Prodigy's names."""
    initial, gradients = least_squares()
    variables = [keras.Variable(w.astype("float32")) for w in initial]
    optimizer = Prodigy(**settings)
    reference_names = {"beta_3": "beta3", "epsilon": "eps", "learning_rate": "lr"}
    reference_settings = {
        reference_names.get(k, k): v for k, v in settings.items() if k not in ("beta_1", "beta_2")
    }
    betas = (settings.get("beta_1", 0.9), settings.get("beta_2", 0.999))
    reference = ReferenceProdigy(
        [w.astype("float32") for w in initial], betas=betas, **reference_settings
    )
    apply = compiled_apply(optimizer, variables)
    worst = 0.0
    for step in range(steps):
        if lrs is not None:
            optimizer.learning_rate = lrs[step]
            reference.lr = lrs[step]
        mine = [keras.ops.convert_to_numpy(v) for v in variables]
        apply([g.astype("float32") for g in gradients(mine)])
        reference.step([g.astype("float32") for g in gradients(reference.params)])
        mine = [keras.ops.convert_to_numpy(v) for v in variables]
        worst = max(
            worst,
            *(float(np.max(np.abs(a - b))) for a, b in zip(mine, reference.params, strict=True)),
        )
    assert abs(float(keras.ops.convert_to_numpy(optimizer.d)) - reference.d) <= 1e-4 * reference.d
    return worst


def test_defaults_match_reference_over_200_steps() -> None:
    assert run_parity() <= TOLERANCE


# In these variants d starts to grow late (step 40-80) and fast; from then on, d held
# in float32 here (Python floats in the reference: float32 under JAX anyway) differs
# by ~1e-5 relative, and the weights drift apart by up to 5e-5 by step 200, while
# they agree to 1e-10 over the first 40 steps. So: 120 steps.
@pytest.mark.parametrize(
    "settings",
    [
        {"use_bias_correction": True, "safeguard_warmup": True, "learning_rate": 0.5},
        {"weight_decay": 0.1, "growth_rate": 1.05, "d_coef": 2.0, "epsilon": 1e-6},
        {"weight_decay": 0.1, "decouple": False, "beta_1": 0.0, "beta_3": 0.99, "d0": 1e-4},
    ],
    ids=["bias-correction-safeguard", "decoupled-decay-growth", "coupled-decay-no-beta1"],
)
def test_variants_match_reference(settings: dict) -> None:
    assert run_parity(steps=120, **settings) <= TOLERANCE


def test_matches_reference_with_a_changing_learning_rate_that_touches_zero() -> None:
    # A cosine from 1 to 0 and back: at lr 0 the reference skips the step (d, k, weights kept).
    lrs = [0.5 * (1 + math.cos(math.pi * step / 50)) for step in range(100)]
    assert lrs[50] == 0.0
    assert run_parity(steps=100, lrs=lrs) <= TOLERANCE


def test_d_grows_from_d0_and_the_loss_falls() -> None:
    initial, gradients = least_squares()
    variables = [keras.Variable(w.astype("float32")) for w in initial]
    optimizer = Prodigy()
    apply = compiled_apply(optimizer, variables)
    for _ in range(STEPS):
        weights = [keras.ops.convert_to_numpy(v) for v in variables]
        apply([g.astype("float32") for g in gradients(weights)])
    assert float(keras.ops.convert_to_numpy(optimizer.d)) > 1e3 * optimizer.d0
    final = gradients([keras.ops.convert_to_numpy(v) for v in variables])
    start = gradients(initial)
    assert sum(np.abs(g).sum() for g in final) < 0.1 * sum(np.abs(g).sum() for g in start)


def test_restoring_the_built_state_restarts_from_the_new_weights() -> None:
    # The benchmark reuses one compiled model: it puts the optimizer's variables back to
    # their values right after build, and the weights to a new start. Prodigy must then
    # take p0 from the new weights (at its first step, as the reference does), not the old.
    initial, gradients = least_squares()
    second_start = [w + 0.3 for w in initial]

    def train(optimizer, variables, steps=20):
        apply = compiled_apply(optimizer, variables)
        for _ in range(steps):
            weights = [keras.ops.convert_to_numpy(v) for v in variables]
            apply([g.astype("float32") for g in gradients(weights)])
        return [keras.ops.convert_to_numpy(v) for v in variables]

    variables = [keras.Variable(w.astype("float32")) for w in initial]
    reused = Prodigy()
    reused.build(variables)
    fresh_state = [keras.ops.convert_to_numpy(v) for v in reused.variables]
    train(reused, variables)
    for variable, value in zip(reused.variables, fresh_state, strict=True):
        variable.assign(value)
    for variable, value in zip(variables, second_start, strict=True):
        variable.assign(value.astype("float32"))
    again = train(reused, variables)

    expected = train(Prodigy(), [keras.Variable(w.astype("float32")) for w in second_start])
    for a, b in zip(again, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_zero_gradients_take_no_step() -> None:
    variable = keras.Variable(np.ones(3, dtype="float32"))
    optimizer = Prodigy(weight_decay=0.5)
    optimizer.apply([np.zeros(3, dtype="float32")], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), np.ones(3))
    assert float(keras.ops.convert_to_numpy(optimizer.k)) == 0.0
    assert float(keras.ops.convert_to_numpy(optimizer.d)) == pytest.approx(1e-6)


def regression_data(rows: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1)) + 0.1 * rng.normal(size=(rows, 1))).astype("float32")
    return x, y


def test_fit_with_a_cosine_schedule() -> None:
    x, y = regression_data()
    epochs, batch = 8, 32
    schedule = keras.optimizers.schedules.CosineDecay(1.0, decay_steps=epochs * len(x) // batch)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=Prodigy(learning_rate=schedule), loss="mse")
    history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0).history["loss"]
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.2 * history[0]
    assert float(keras.ops.convert_to_numpy(model.optimizer.d)) > 1e-6


def test_config_round_trip_and_saved_model(tmp_path: Path) -> None:
    optimizer = Prodigy(beta_3=0.99, weight_decay=0.01, d_coef=0.5, growth_rate=1.02)
    config = optimizer.get_config()
    assert Prodigy.from_config(config).get_config() == config
    assert json.loads(json.dumps(config)) == config
    schedule = keras.optimizers.schedules.CosineDecay(1.0, decay_steps=100)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(Prodigy(schedule)))
    assert isinstance(restored, Prodigy)
    assert isinstance(restored._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert Prodigy().get_config()["growth_rate"] == math.inf

    x, y = regression_data(rows=64)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    model.compile(optimizer=Prodigy(d_coef=0.5), loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, Prodigy) and loaded.optimizer.d_coef == 0.5
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.optimizer.d),
        keras.ops.convert_to_numpy(model.optimizer.d),
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("d0", 0.0),
        ("beta_1", 1.0),
        ("beta_2", -0.1),
        ("beta_3", 1.5),
        ("epsilon", 0.0),
        ("weight_decay", -1.0),
        ("d_coef", 0.0),
        ("growth_rate", 0.5),
        ("learning_rate", 0.0),
    ],
)
def test_bad_settings_name_the_parameter(setting: str, value: float) -> None:
    with pytest.raises(ProdigyError, match=f"`{setting}`"):
        Prodigy(**{setting: value})



# --- sparse gradients: an embedding ------------------------------------------------------


def embedding_gradients(model: keras.Model, x: np.ndarray, y: np.ndarray) -> list:
    """The loss gradients of ``model``'s trainable variables on ``(x, y)`` as the backend
    gives them (TensorFlow: an ``IndexedSlices`` for the embedding)."""
    import tensorflow as tf

    from tests.text_tasks import loss

    with tf.GradientTape() as tape:
        value = loss()(y, model(x, training=True))
    return tape.gradient(value, model.trainable_variables)


def test_an_embedding_takes_the_reference_step_on_its_dense_gradient() -> None:
    """TensorFlow's ``IndexedSlices`` gradient of an embedding: Prodigy's steps equal the
    numpy reference's on the same gradient made dense (all rows, touched or not)."""
    import tensorflow as tf

    from tests.text_tasks import text_classifier, text_data

    if keras.backend.backend() != "tensorflow":
        pytest.skip("IndexedSlices are TensorFlow's")
    train = text_data().train
    model = text_classifier()
    model.build((None, train.x.shape[1]))
    optimizer = Prodigy()
    apply = compiled_apply(optimizer, model.trainable_variables)
    reference = ReferenceProdigy([keras.ops.convert_to_numpy(v) for v in model.trainable_variables])
    for step in range(12):
        rows = slice(16 * step % 96, 16 * step % 96 + 16)
        grads = embedding_gradients(model, train.x[rows], train.y[rows])
        assert isinstance(grads[0], tf.IndexedSlices)  # else this test checks nothing
        dense = [tf.convert_to_tensor(g).numpy() for g in grads]
        touched = np.unique(grads[0].indices.numpy())
        assert 0 < len(touched) < dense[0].shape[0]  # some rows untouched, some repeated
        apply(grads)
        reference.step(dense)
        mine = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        for mine_value, reference_value in zip(mine, reference.params, strict=True):
            np.testing.assert_allclose(mine_value, reference_value, rtol=0, atol=TOLERANCE)
    assert float(keras.ops.convert_to_numpy(optimizer.d)) > optimizer.d0  # it did step


def check_text_model_trains() -> float:
    """Prodigy fits the text classifier on the backend in force: the training loss falls.
    Returns the last epoch's loss over the first's (run on JAX and torch in a subprocess)."""
    from tests.text_tasks import loss, text_classifier, text_data

    train, epochs = text_data().train, 8
    schedule = keras.optimizers.schedules.CosineDecay(1.0, epochs * len(train) // 16)
    model = text_classifier()
    model.compile(optimizer=Prodigy(schedule), loss=loss())  # as the README advises
    history = model.fit(train.x, train.y, batch_size=16, epochs=epochs, verbose=0,
                        shuffle=False).history["loss"]
    assert all(math.isfinite(v) for v in history), history
    assert history[-1] < 0.7 * history[0], history
    return history[-1] / history[0]


def test_the_text_model_trains_with_prodigy() -> None:
    check_text_model_trains()


def run_parity_30() -> float:
    """:func:`run_parity` over 30 steps (run on JAX and torch by test_other_backends)."""
    return run_parity(steps=30)
