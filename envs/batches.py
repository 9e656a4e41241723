"""Mini-batches inside a compiled epoch, as ``model.fit`` makes them: one definition for the
fast runner (one run) and the batched runner (N copies).

- :func:`split_tensors`: a task's splits as device constants (floats as ``floatx``);
- :func:`epoch_order`: the stateless shuffle of an epoch, fixed by ``(seed, epoch)``;
- :func:`batch_loop`: ``state = step(state, start, length)`` over the batches, full ones
  in a ``tf.while_loop``, then the last partial one, as ``fit`` does;
- :func:`rows`: the rows ``start .. start + length`` of a tensor, in an order or as stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fitpilot.envs.tasks import TrainingTask

Tensors = tuple[tf.Tensor, tf.Tensor]


def _to_tensor(array: np.ndarray) -> tf.Tensor:
    """Like Keras' array adapter: floating arrays become ``floatx``, others keep their dtype."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.config.floatx())
    return tf.constant(array)


def split_tensors(task: TrainingTask) -> tuple[Tensors, Tensors, Tensors]:
    """The task's train, validation and test splits as ``(x, y)`` constants on the device."""
    data = task.data()
    return tuple(  # type: ignore[return-value]
        (_to_tensor(split.x), _to_tensor(split.y))
        for split in (data.train, data.validation, data.test)
    )


def epoch_order(rows: int, seed: tf.Tensor) -> tf.Tensor:
    """A permutation of ``range(rows)``, int32 ``[rows]``, fixed by ``seed`` (int64 ``[2]``: the
    run's seed and the epoch): the ranks of full-range random integers (ties have odds
    ~rows^2 / 2^64)."""
    noise = tf.random.stateless_uniform([rows], seed, minval=None, maxval=None, dtype=tf.int64)
    return tf.argsort(noise)


def rows(tensor: tf.Tensor, start: Any, length: int, order: tf.Tensor | None = None) -> tf.Tensor:
    """Rows ``start .. start + length`` of ``tensor``: as stored, or as ``order`` lists them.

    ``order`` is int ``[n]`` (one run: ``[length, ...]`` comes back) or ``[N, n]`` (one order
    per copy: ``[N, length, ...]``); ``length`` is static, so the shape is too.
    """
    if order is None:
        begin = [start] + [0] * (tensor.shape.rank - 1)
        return tf.slice(tensor, begin, [length, *tensor.shape[1:]])
    leading = list(order.shape[:-1])
    index = tf.slice(order, [0] * len(leading) + [start], [*leading, length])
    return tf.gather(tensor, index)


def batch_loop(
    step: Callable[[Any, Any, int], Any], state: Any, rows_total: int, batch_size: int
) -> Any:
    """``state = step(state, start, length)`` over the mini-batches of ``rows_total`` rows.

    Full batches run in a ``tf.while_loop`` (``start`` a tensor), then the last partial
    one (``start`` an int), as ``fit`` does; ``state`` is any nest of tensors (``()``
    for a step that only has side effects). Returns the final state.
    """
    full, rest = divmod(rows_total, batch_size)
    if full:

        def body(i: Any, *flat: Any) -> tuple:
            inner = tf.nest.pack_sequence_as(state, list(flat))
            inner = step(inner, i * batch_size, batch_size)
            return (i + 1, *tf.nest.flatten(inner))

        out = tf.while_loop(
            lambda i, *_: i < full,
            body,
            [tf.constant(0), *tf.nest.flatten(state)],
            parallel_iterations=1,
        )
        state = tf.nest.pack_sequence_as(state, list(out[1:]))
    if rest:
        state = step(state, full * batch_size, rest)
    return state
