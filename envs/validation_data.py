"""Generated data of the validation suite's second half: kinds holdout and real have
(recurrent, convolutional, multi-label, larger regression), on generators no other suite uses.

Each function returns a :class:`~fitpilot.envs.tasks.TaskData` split 60/20/20 by
``splits.split_arrays`` (fixed seed, inputs standardised on the training split).
"""

from __future__ import annotations

import numpy as np

from fitpilot.envs.splits import DATA_SEED, split_arrays
from fitpilot.envs.tasks import Split, TaskData


def delayed_xor_data(rows: int = 1200, steps: int = 12) -> TaskData:
    """Noisy +-1 bit sequences; the label is the XOR of the bits at steps 2 and ``steps - 3``
    (a memory task). Inputs ``(rows, steps, 1)``, labels 0/1."""
    rng = np.random.default_rng(DATA_SEED + 1)
    bits = rng.integers(0, 2, size=(rows, steps))
    x = (2 * bits - 1) + rng.normal(0, 0.3, size=(rows, steps))
    return split_arrays(x[..., None], bits[:, 2] ^ bits[:, steps - 3])


def stripes_data(rows: int = 1000, size: int = 12) -> TaskData:
    """Noisy ``size`` x ``size`` images of sinusoidal stripes, random frequency and phase; the
    label is their orientation (0, 45, 90 or 135 degrees). Inputs ``(rows, size, size, 1)``."""
    rng = np.random.default_rng(DATA_SEED + 2)
    labels = rng.integers(4, size=rows)
    angle = labels * np.pi / 4
    frequency = rng.uniform(0.6, 1.6, size=rows)
    phase = rng.uniform(0, 2 * np.pi, size=rows)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    along = np.cos(angle)[:, None, None] * c + np.sin(angle)[:, None, None] * r
    images = np.sin(frequency[:, None, None] * along + phase[:, None, None])
    images += rng.normal(0, 0.6, size=images.shape)
    return split_arrays(images[..., None], labels)


def multilabel_data(rows: int = 1500) -> TaskData:
    """scikit-learn's ``make_multilabel_classification``: 20 count features, 5 labels per row
    (each 0/1, float32, shape ``(rows, 5)``), for 5 sigmoid outputs and binary cross-entropy."""
    from sklearn.datasets import make_multilabel_classification  # here: ~1 s to import

    x, y = make_multilabel_classification(n_samples=rows, n_features=20, n_classes=5,
                                          n_labels=2, random_state=DATA_SEED)
    data = split_arrays(x, np.zeros(rows))  # the split and scaling of the inputs
    order = np.random.default_rng(DATA_SEED).permutation(rows)
    y = y[order].astype("float32")
    a, b = len(data.train), len(data.train) + len(data.validation)
    return TaskData(Split(data.train.x, y[:a]), Split(data.validation.x, y[a:b]),
                    Split(data.test.x, y[b:]))


def low_rank_regression_data(rows: int = 3000, features: int = 40) -> TaskData:
    """scikit-learn's ``make_low_rank_matrix`` inputs (effective rank 10) and a smooth
    non-linear target ``tanh(x W1) w2`` plus noise. Inputs ``(rows, features)``."""
    from sklearn.datasets import make_low_rank_matrix  # here: ~1 s to import

    rng = np.random.default_rng(DATA_SEED + 3)
    x = make_low_rank_matrix(rows, features, effective_rank=10, random_state=DATA_SEED)
    x = x / x.std(axis=0)
    hidden = np.tanh(x @ rng.normal(0, 0.4, size=(features, 16)))
    y = hidden @ rng.normal(size=16) + rng.normal(0, 0.2, size=rows)
    return split_arrays(x, y, standardize_y=True)


def waves_data(rows: int = 1200, steps: int = 32) -> TaskData:
    """Noisy sines of random frequency and phase, ``steps`` samples; predict the frequency.
    Inputs ``(rows, steps, 1)``."""
    rng = np.random.default_rng(DATA_SEED + 4)
    frequency = rng.uniform(0.1, 0.9, size=rows)
    t = np.arange(steps)
    x = np.sin(frequency[:, None] * t + rng.uniform(0, 2 * np.pi, size=(rows, 1)))
    x += rng.normal(0, 0.3, size=x.shape)
    return split_arrays(x[..., None], frequency, standardize_y=True)


def echo_data(rows: int = 1200, steps: int = 10) -> TaskData:
    """Normal noise sequences; predict the value seen at step 2 (an echo to remember).
    Inputs ``(rows, steps, 1)``."""
    rng = np.random.default_rng(DATA_SEED + 5)
    x = rng.normal(size=(rows, steps))
    return split_arrays(x[..., None], x[:, 2] + rng.normal(0, 0.1, size=rows), standardize_y=True)
