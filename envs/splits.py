"""How the generated and bundled datasets of the built-in suites are split and scaled: one rule.

``split_arrays`` shuffles the rows with a fixed seed, splits them 60/20/20 (or a fixed
number of training rows and up to 300 + 300), standardises the inputs on the training
split, and standardises regression targets (or makes class labels int32).
"""

from __future__ import annotations

import numpy as np

from fitpilot.envs.tasks import Split, TaskData

DATA_SEED = 1234
TRAIN_SHARE, VALIDATION_SHARE = 0.6, 0.2


def split_arrays(
    x: np.ndarray, y: np.ndarray, standardize_y: bool = False, train_rows: int | None = None
) -> TaskData:
    """Shuffle (fixed seed), split 60/20/20 or ``train_rows`` + up to 300 + 300, standardise."""
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    x, y = x[order].astype("float32"), y[order]
    n_train = train_rows or int(TRAIN_SHARE * len(x))
    n_val = min((len(x) - n_train) // 2, 300) if train_rows else int(VALIDATION_SHARE * len(x))
    n_test = n_val if train_rows else len(x) - n_train - n_val
    parts = np.split(np.arange(n_train + n_val + n_test), [n_train, n_train + n_val])
    flat = x[parts[0]].reshape(n_train, -1)
    mean = flat.mean(axis=0).reshape(x.shape[1:])
    std = flat.std(axis=0).reshape(x.shape[1:])
    std = np.where(std < 1e-3, 1.0, std)  # constant features (blank digit pixels) stay 0
    x = (x - mean) / std
    if standardize_y:
        y = y.astype("float32")
        y = ((y - y[parts[0]].mean()) / (y[parts[0]].std() + 1e-6)).reshape(-1, 1)
    else:
        y = y.astype("int32")
    return TaskData(*(Split(x[p], y[p]) for p in parts))
