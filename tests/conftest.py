"""Shared test set-up: quiet TensorFlow with small thread pools, and a seed per test.

TensorFlow's thread pools can only be sized before its first op, so this runs
at collection time, before any test module touches TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The real suite's converted datasets go to a fresh folder (inherited by the commands
    that tests start), never to the user's cache."""
    previous = os.environ.get("FITPILOT_DATA_DIR")
    os.environ["FITPILOT_DATA_DIR"] = str(tmp_path_factory.mktemp("fitpilot-data"))
    yield
    if previous is None:
        os.environ.pop("FITPILOT_DATA_DIR", None)
    else:
        os.environ["FITPILOT_DATA_DIR"] = previous
