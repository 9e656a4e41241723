"""The deployed policy in numpy: observation normalisation, frame stacking and an MLP.

No torch here: a controller bundle stores the network as plain arrays and this
module runs it. Shapes: one raw observation is ``(n_features,)``; the network
input is ``(n_features * frame_stack,)``, frames oldest first, normalised with
statistics of that same shape.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

Activation = Literal["tanh", "relu", "identity"]
Head = Literal["logits", "q_values", "gaussian_mean"]

_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "identity": lambda x: x,
}


@dataclass(frozen=True)
class ObsNormalization:
    """VecNormalize-style statistics: ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``."""

    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    epsilon: float = 1e-8

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        scaled = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    @classmethod
    def identity(cls, size: int) -> ObsNormalization:
        return cls(np.zeros(size, np.float32), np.ones(size, np.float32) - 1e-8, np.inf, 1e-8)


@dataclass(frozen=True)
class MLPPolicy:
    """A feed-forward policy: ``hidden`` layers ``(W, b)`` with ``activation``, then ``head``.

    ``W`` has shape ``(inputs, outputs)``. The head's output is read by ``head_kind``:
    argmax of logits or Q-values (discrete), or a Gaussian mean clipped to ``[-1, 1]``.
    """

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]
    activation: Activation = "tanh"
    head_kind: Head = "logits"

    @property
    def input_size(self) -> int:
        first = self.hidden[0][0] if self.hidden else self.head[0]
        return int(first.shape[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Head outputs for inputs ``x`` of shape ``(batch, input_size)``."""
        act = _ACTIVATIONS[self.activation]
        h = np.asarray(x, dtype=np.float32)
        for weight, bias in self.hidden:
            h = act(h @ weight + bias)
        return h @ self.head[0] + self.head[1]

    def act(self, x: np.ndarray) -> np.ndarray:
        """Deterministic actions for inputs ``(batch, input_size)``: ints ``(batch,)`` or floats."""
        out = self.forward(x)
        if self.head_kind == "gaussian_mean":
            return np.clip(out, -1.0, 1.0)
        return np.argmax(out, axis=-1)


class ObservationPipeline:
    """Raw featurizer output -> the last ``frame_stack`` frames stacked -> normalised.

    Mirrors ``VecNormalize(VecFrameStack(env, frame_stack))`` of training: raw
    frames are stacked oldest first, with zeros before the first epoch of a run,
    and the stacked vector is normalised with statistics of shape
    ``(n_features * frame_stack,)``. (Stacking first is what stable-baselines3's
    off-policy algorithms support: its replay buffer stores the observations
    before ``VecNormalize``, DLR-RM/stable-baselines3#693.)
    """

    def __init__(self, normalization: ObsNormalization, frame_stack: int = 1) -> None:
        self.normalization = normalization
        self.frame_stack = frame_stack
        self.reset()

    def reset(self) -> None:
        size = len(self.normalization.mean) // self.frame_stack
        self._frames: deque[np.ndarray] = deque(
            [np.zeros(size, np.float32)] * self.frame_stack, maxlen=self.frame_stack
        )

    def __call__(self, raw_obs: np.ndarray) -> np.ndarray:
        """Push one raw observation ``(n_features,)``; return the input ``(n_features * k,)``."""
        self._frames.append(np.asarray(raw_obs, np.float32))
        return self.normalization(np.concatenate(self._frames))
