"""One gymnasium environment inside a Ray actor: the worker side of :class:`RayVecEnv`.

A plain class, made a Ray actor by :mod:`fitpilot.agents.ray_vecenv`. It
imports neither Ray nor stable-baselines3 (whose import pulls in torch and
TensorFlow), so an actor costs only what its environment needs.

:meth:`EnvActor.step` follows stable-baselines3's workers (``DummyVecEnv``,
``SubprocVecEnv``): ``done = terminated or truncated``,
``info["TimeLimit.truncated"] = truncated and not terminated``, and at the end
of an episode ``info["terminal_observation"]`` holds the last observation
while the environment is reset at once and its first observation returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium

from fitpilot.runtime import configure

#: One step's result: observation, reward, done, info, reset info (None without a reset).
StepResult = tuple[Any, float, bool, dict[str, Any], "dict[str, Any] | None"]


class EnvActor:
    """Holds ``env_fn()``; sizes TensorFlow's thread pools to ``threads`` first if given."""

    def __init__(self, env_fn: Callable[[], gymnasium.Env], threads: int | None = None) -> None:
        if threads is not None:
            configure(threads)  # before the factory imports TensorFlow
        self.env = env_fn()

    def spaces(self) -> tuple[gymnasium.Space, gymnasium.Space]:
        """``(observation_space, action_space)``."""
        return self.env.observation_space, self.env.action_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``env.reset(seed=seed, options=options)`` (options only if non-empty)."""
        maybe_options = {"options": options} if options else {}
        return self.env.reset(seed=seed, **maybe_options)

    def step(self, action: Any) -> StepResult:
        """One step in the SB3 convention, auto-resetting at the end of an episode."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = bool(terminated or truncated)
        info["TimeLimit.truncated"] = bool(truncated and not terminated)
        reset_info = None
        if done:
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return observation, float(reward), done, info, reset_info

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type[gymnasium.Wrapper]) -> bool:
        """Whether ``wrapper_class`` is among the env's wrappers (as SB3's ``is_wrapped``)."""
        env: Any = self.env
        while isinstance(env, gymnasium.Wrapper):
            if isinstance(env, wrapper_class):
                return True
            env = env.env
        return False

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def pid(self) -> int:
        """The actor's process id (diagnostics, tests)."""
        return os.getpid()
