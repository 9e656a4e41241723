"""Prodigy: Adam with a learning rate that estimates itself, as a Keras 3 optimizer.

    from fitpilot import Prodigy

    model.compile(optimizer=Prodigy(), loss="mse")           # learning_rate=1.0: leave it
    schedule = keras.optimizers.schedules.CosineDecay(1.0, decay_steps=epochs * steps)
    model.compile(optimizer=Prodigy(learning_rate=schedule), loss="mse")

Prodigy (Mishchenko & Defazio 2023, "Prodigy: An Expeditiously Adaptive
Parameter-Free Learner", https://arxiv.org/abs/2306.06101) runs Adam with the
step size ``d * learning_rate``, where ``d`` is a running lower estimate of the
distance from the initial weights to the solution, grown from ``d0``. The
update here is a port of the authors' reference implementation
(https://github.com/konstmish/prodigy, ``prodigyopt/prodigy.py``, commit
3efb213), step for step, with its defaults; its ``slice_p`` and FSDP options
are left out. As there, ``d`` comes from sums over *all* the optimized
variables at once, so one step first accumulates those sums over every
variable, then updates ``d``, then every variable.

Written with ``keras.ops`` only: it runs on the TensorFlow, JAX and torch
backends. Not supported: ``tf.distribute`` strategies (the global sums are
per replica).

Sparse gradients: TensorFlow gives an ``Embedding``'s gradient as ``IndexedSlices``
(the rows a batch touched, and their values). Prodigy makes it dense first (rows the
batch did not touch get a zero gradient, repeated rows add up), so every row takes
exactly the reference's step on that dense gradient: the touched rows as in a dense
model, the others with their moments decaying and their momentum still moving them,
as in the reference and in Keras' own Adam. JAX and torch give embeddings dense
gradients already. The cost is one dense copy of the embedding's gradient per step.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from fitpilot.errors import FitpilotError
from fitpilot.keras_internals import uses_weight_decay, variable_index


class ProdigyError(FitpilotError, ValueError):
    """A Prodigy setting out of its range."""


@keras.saving.register_keras_serializable(package="fitpilot")
class Prodigy(keras.optimizers.Optimizer):
    """Adam with Prodigy's self-estimated step size (Mishchenko & Defazio 2023).

    The effective step size is ``d * learning_rate`` (``d`` in units of the
    weights, learning_rate a dimensionless multiplier): keep ``learning_rate=1``
    (or a schedule that starts at 1, such as ``CosineDecay(1.0, ...)``) unless
    training is unstable. ``d`` is readable as ``optimizer.d`` once built.

    Args:
        learning_rate: multiplier of the estimated step size, a float or a
            ``LearningRateSchedule``. Default 1.0.
        beta_1: decay of the running mean of the gradients (0 disables it). Default 0.9.
        beta_2: decay of the running mean of the squared gradients. Default 0.999.
        beta_3: decay of the running sums that estimate ``d``; ``None`` means
            ``sqrt(beta_2)``. Default None.
        epsilon: added to the denominator, scaled by ``d`` as in the reference
            (its ``eps``). Default 1e-8.
        weight_decay: L2 penalty. Default 0 (none).
        decouple: apply ``weight_decay`` AdamW style (scaled by the step size),
            else add it to the gradient. Default True.
        use_bias_correction: Adam's bias correction of the step size. Default False.
        safeguard_warmup: leave the learning rate out of the ``d`` estimate's
            denominator (helps under a warm-up schedule). Default False.
        d0: initial estimate of ``d``. Default 1e-6.
        d_coef: multiplier of the ``d`` estimate; the preferred knob to tune. Default 1.0.
        growth_rate: cap on the growth of ``d`` per step (e.g. 1.02 for a
            warm-up effect); ``inf`` for none. Default inf.
        **kwargs: Keras' common optimizer arguments (``name``, ``clipnorm``,
            ``global_clipnorm``, ``use_ema``...).
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        beta_3: float | None = None,
        epsilon: float = 1e-8,
        weight_decay: float | None = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        name: str = "prodigy",
        **kwargs: Any,
    ) -> None:
        weight_decay = float(weight_decay or 0.0)
        _check_range("d0", d0, d0 > 0, "a small positive number such as the default 1e-6")
        _check_range("epsilon", epsilon, epsilon > 0, "a small positive number such as 1e-8")
        _check_range("beta_1", beta_1, 0 <= beta_1 < 1, "in [0, 1), e.g. 0.9")
        _check_range("beta_2", beta_2, 0 <= beta_2 < 1, "in [0, 1), e.g. 0.999")
        if beta_3 is not None:
            _check_range("beta_3", beta_3, 0 <= beta_3 < 1, "in [0, 1), or None for sqrt(beta_2)")
        _check_range("weight_decay", weight_decay, weight_decay >= 0, "zero or positive")
        _check_range("d_coef", d_coef, d_coef > 0, "positive, e.g. 0.5 to 2")
        _check_range("growth_rate", growth_rate, growth_rate >= 1, "at least 1, or math.inf")
        if isinstance(learning_rate, int | float) and not learning_rate > 0:
            raise ProdigyError(
                f"`learning_rate` must be positive, got {learning_rate}; keep the default 1.0"
            )
        if isinstance(learning_rate, int):
            learning_rate = float(learning_rate)
        # Keras' own weight decay is switched off: Prodigy applies its own, scaled by d.
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.beta_3 = None if beta_3 is None else float(beta_3)
        self.epsilon = float(epsilon)
        self.prodigy_weight_decay = weight_decay
        self.decouple = bool(decouple)
        self.use_bias_correction = bool(use_bias_correction)
        self.safeguard_warmup = bool(safeguard_warmup)
        self.d0 = float(d0)
        self.d_coef = float(d_coef)
        self.growth_rate = float(growth_rate)

    def build(self, var_list: list[keras.Variable]) -> None:
        """Create the per-variable state (s, p0, exp_avg, exp_avg_sq) and the scalar d state."""
        if self.built:
            return
        super().build(var_list)
        self.d = self.add_variable((), initializer=_constant(self.d0), dtype="float32", name="d")
        self.d_max = self.add_variable(
            (), initializer=_constant(self.d0), dtype="float32", name="d_max"
        )
        self.d_numerator = self.add_variable((), dtype="float32", name="d_numerator")
        # The reference's k: steps taken (a skipped step, with all-zero gradients or
        # learning rate 0, does not count). p0 is captured at the first step, when k == 0.
        self.k = self.add_variable((), dtype="float32", name="k")
        self._s = self.add_optimizer_variables(var_list, "s")
        self._p0 = self.add_optimizer_variables(var_list, "p0")
        self._exp_avg_sq = self.add_optimizer_variables(var_list, "exp_avg_sq")
        self._exp_avg = self.add_optimizer_variables(var_list, "exp_avg") if self.beta_1 else []

    # The two private hooks below are how Keras writes a whole-step optimizer itself
    # (keras/src/optimizers/nadam.py overrides _backend_update_step); they are listed in
    # fitpilot.keras_internals.OPTIMIZER_HOOKS, whose check() tells when a release drops them.

    def _apply_weight_decay(self, variables: list[keras.Variable]) -> None:
        """Nothing: the decay is part of :meth:`_backend_update_step`, as in the reference."""

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        """Not used: one Prodigy step needs all the gradients at once."""
        raise NotImplementedError("Prodigy updates all variables together in _backend_update_step")

    def _backend_update_step(
        self, grads: list[Any], trainable_variables: list[keras.Variable], learning_rate: Any
    ) -> None:
        """One step of the reference ``Prodigy.step`` over all variables with a gradient."""
        beta_1, beta_2 = self.beta_1, self.beta_2
        beta_3 = math.sqrt(beta_2) if self.beta_3 is None else self.beta_3
        decay = self.prodigy_weight_decay
        lr = ops.cast(learning_rate, "float32")
        d, d_max, k = self.d.value, self.d_max.value, self.k.value
        first = ops.equal(k, 0.0)
        if self.use_bias_correction:
            bias_correction = ops.sqrt(1.0 - ops.power(beta_2, k + 1.0)) / (
                1.0 - ops.power(beta_1, k + 1.0)
            )
        else:
            bias_correction = 1.0
        dlr = d * lr * bias_correction
        lr_positive = ops.greater(lr, 0.0)
        # d / d0 instead of d keeps these sums away from float underflow (reference comment).
        numerator_scale = (d / self.d0) * dlr
        s_scale = (d / self.d0) * d if self.safeguard_warmup else numerator_scale

        delta_numerator = ops.zeros((), "float32")
        d_denom = ops.zeros((), "float32")
        steps = []  # per variable: (variable, its value, gradient, exp_avg_sq, exp_avg, decays)
        for grad, variable in zip(grads, trainable_variables, strict=True):
            index = variable_index(self, variable)
            dtype = variable.dtype
            value = variable.value
            grad = ops.cast(_dense(grad), dtype)
            decays = decay != 0 and uses_weight_decay(self, variable)
            if decays and not self.decouple:
                grad = grad + decay * value
            p0 = ops.where(first, value, self._p0[index].value)
            self.assign(self._p0[index], p0)
            delta_numerator += ops.cast(ops.sum(grad * (p0 - value)), "float32") * numerator_scale

            exp_avg_sq = self._exp_avg_sq[index].value
            exp_avg_sq = ops.where(
                lr_positive,
                beta_2 * exp_avg_sq + ops.cast(d * d * (1 - beta_2), dtype) * (grad * grad),
                exp_avg_sq,
            )
            self.assign(self._exp_avg_sq[index], exp_avg_sq)
            exp_avg = None
            if beta_1:
                exp_avg = self._exp_avg[index].value
                exp_avg = ops.where(
                    lr_positive,
                    beta_1 * exp_avg + ops.cast(d * (1 - beta_1), dtype) * grad,
                    exp_avg,
                )
                self.assign(self._exp_avg[index], exp_avg)
            s = self._s[index].value
            s = ops.where(lr_positive, beta_3 * s + ops.cast(s_scale, dtype) * grad, s)
            self.assign(self._s[index], s)
            d_denom += ops.cast(ops.sum(ops.abs(s)), "float32")
            steps.append((variable, value, grad, exp_avg_sq, exp_avg, decays))
        # The reference returns before touching d or the weights when d_denom == 0
        # (all gradients zero so far, or learning rate 0).
        d_denom = ops.where(lr_positive, d_denom, 0.0)
        proceed = ops.greater(d_denom, 0.0)

        global_numerator = self.d_numerator.value * beta_3 + delta_numerator
        d_hat = self.d_coef * global_numerator / ops.where(proceed, d_denom, 1.0)
        new_d = ops.where(ops.equal(d, self.d0), ops.maximum(d, d_hat), d)
        new_d_max = ops.maximum(d_max, d_hat)
        new_d = ops.minimum(new_d_max, new_d * self.growth_rate)
        new_d = ops.where(proceed, new_d, d)
        self.assign(self.d_numerator, ops.where(proceed, global_numerator, self.d_numerator.value))
        self.assign(self.d_max, ops.where(proceed, new_d_max, d_max))
        self.assign(self.d, new_d)
        self.assign(self.k, ops.where(proceed, k + 1.0, k))

        for variable, value, grad, exp_avg_sq, exp_avg, decays in steps:
            dtype = variable.dtype
            step_dlr = ops.cast(dlr, dtype)
            denom = ops.sqrt(exp_avg_sq) + ops.cast(new_d * self.epsilon, dtype)
            new_value = value
            if decays and self.decouple:
                new_value = new_value - step_dlr * decay * value
            if beta_1:
                new_value = new_value - step_dlr * exp_avg / denom
            else:
                new_value = new_value - step_dlr * ops.cast(new_d, dtype) * grad / denom
            self.assign(variable, ops.where(proceed, new_value, value))

    def get_config(self) -> dict[str, Any]:
        """Keras config: the arguments of ``__init__`` (``from_config`` round-trips it)."""
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "beta_3": self.beta_3,
                "epsilon": self.epsilon,
                "weight_decay": self.prodigy_weight_decay,
                "decouple": self.decouple,
                "use_bias_correction": self.use_bias_correction,
                "safeguard_warmup": self.safeguard_warmup,
                "d0": self.d0,
                "d_coef": self.d_coef,
                "growth_rate": self.growth_rate,
            }
        )
        return config


def _dense(gradient: Any) -> Any:
    """``gradient`` as a dense tensor; TensorFlow's ``IndexedSlices`` (an embedding's
    gradient: ``indices`` of rows, their ``values``) scattered into its ``dense_shape``,
    rows that repeat added up (``scatter_nd``'s rule, the dense gradient's value)."""
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        indices = ops.expand_dims(gradient.indices, -1)
        return ops.scatter(indices, gradient.values, gradient.dense_shape)
    return gradient


def _constant(value: float) -> keras.initializers.Initializer:
    return keras.initializers.Constant(value)


def _check_range(name: str, value: float, ok: bool, fix: str) -> None:
    if not ok:
        raise ProdigyError(f"`{name}` must be {fix}; got {value}")
