"""Shared test set-up: quiet TensorFlow with small thread pools, and a seed per test.

TensorFlow's thread pools can only be sized before its first op, so this runs
at collection time, before any test module touches TensorFlow.
"""

from __future__ import annotations

import pytest

from fitpilot.runtime import configure

TEST_THREADS = 2  # the CI machine has 2 cores; other engineers share them while developing
SEED = 0

configure(TEST_THREADS)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Seed Python, numpy and Keras before every test, so its weights and shuffles repeat."""
    import keras

    keras.utils.set_random_seed(SEED)
