"""Test helper: small controller bundles with random weights, no training needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitpilot.controller.actions import DiscreteActions
from fitpilot.controller.bundle import Bundle, save_bundle
from fitpilot.controller.features import FeaturizerConfig
from fitpilot.controller.policy import MLPPolicy, ObsNormalization


def random_bundle(
    seed: int = 0, frame_stack: int = 1, hidden: int = 16, version: int = 1
) -> Bundle:
    """A discrete-action bundle with random MLP weights and unit normalisation; ``version``
    3 is a controller v3 bundle (featurizer v3, the scale probe, actions with a first
    decision), 1 the first format."""
    rng = np.random.default_rng(seed)
    featurizer = FeaturizerConfig(version=version)
    size = featurizer.size
    actions = DiscreteActions.v3() if version >= 3 else DiscreteActions()
    inputs = size * frame_stack
    policy = MLPPolicy(
        hidden=((rng.normal(0, 0.5, (inputs, hidden)).astype("f"), np.zeros(hidden, "f")),),
        head=(rng.normal(0, 0.5, (hidden, actions.n)).astype("f"), np.zeros(actions.n, "f")),
    )
    normalization = ObsNormalization(np.zeros(inputs, "f"), np.ones(inputs, "f"))
    metadata = {"algo": "random"}
    return Bundle(policy, featurizer, actions, normalization, frame_stack, metadata)


def write_random_bundle(
    path: str | Path, seed: int = 0, frame_stack: int = 1, version: int = 1
) -> Path:
    """Save :func:`random_bundle` to ``path``; return the path."""
    save_bundle(random_bundle(seed, frame_stack, version=version), path)
    return Path(path)


#: The controller fitpilot shipped before v2 (featurizer and actions version 1, PPO on the
#: `train` suite, `59e98e941ccfe1d5`), kept to test that v1 bundles load and act as before.
V1_BUNDLE = Path(__file__).parent / "data" / "controller_v1_59e98e94.zip"
#: The controller fitpilot shipped before v3 (featurizer v2: weight features; actions v2:
#: rollback; `b1363f1344448dd7`), kept to test that v2 bundles load and act as before.
V2_BUNDLE = Path(__file__).parent / "data" / "controller_v2_b1363f13.zip"
