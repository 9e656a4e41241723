"""A stable-baselines3 ``VecEnv`` whose environments run as Ray actors; the learner stays here.

``RayVecEnv`` behaves like ``DummyVecEnv`` / ``SubprocVecEnv``: ``reset()``
uses the seeds and options set by ``seed()`` / ``set_options()`` once;
``step_wait()`` returns observations stacked on a first axis of length
``num_envs``, rewards as float32 ``(num_envs,)``, dones as bool ``(num_envs,)``
and one info dict per environment, with auto-reset,
``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``.

A dead actor (its process killed, its node lost: ``RayActorError``) does not
stop training: it is replaced by a new actor, whose first observation is
returned as if the episode had ended (``done=True``, reward 0,
``terminal_observation`` = the last observation seen,
``TimeLimit.truncated=True`` so that on-policy algorithms bootstrap from it,
and ``info["actor_restarted"] = True``), with a warning. Attributes set with
``set_attr`` before the loss are not replayed onto the new actor. After
:data:`MAX_CONSECUTIVE_RESTARTS` losses of one environment without a
successful step in between, :class:`RayBackendError` is raised.

:func:`make_ray_workers` is the ``--backend ray`` counterpart of
:func:`fitpilot.agents.vecenv.make_workers`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from fitpilot.agents.config import TrainConfig
from fitpilot.agents.env_factory import make_env
from fitpilot.agents.ray_actor import EnvActor
from fitpilot.ray_backend import (
    RayBackendError,
    RayOptions,
    check_capacity,
    connect,
    import_ray,
)

MAX_CONSECUTIVE_RESTARTS = 3
#: What :meth:`RayVecEnv._gather` gives for a dead actor (or no call at all).
_DEAD: Any = object()
#: Seconds ``close()`` waits for the environments' own ``close`` before killing the actors.
CLOSE_TIMEOUT = 10.0


class RayVecEnv(VecEnv):
    """``len(env_fns)`` environments, one Ray actor each.

    Args:
        env_fns: factories of gymnasium environments (pickled to the actors).
        actor_options: ``.options(...)`` of each actor, e.g. ``{"num_cpus": 1,
            "memory": 2**30}`` (default: Ray's, 1 CPU).
        threads: if given, each actor sizes TensorFlow's thread pools to this
            before calling its factory (:func:`fitpilot.runtime.configure`).

    Ray must be connected (``ray.init`` or :func:`fitpilot.ray_backend.connect`).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gymnasium.Env]],
        actor_options: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        self._ray = import_ray()
        # ray is an optional extra: import from it once import_ray() has said it is there
        from ray.exceptions import RayActorError

        self._actor_error = RayActorError
        self._env_fns = list(env_fns)
        self._threads = threads
        self._actor_class = self._ray.remote(EnvActor).options(
            max_restarts=0, **(actor_options or {})
        )
        self.actors: list[Any] = [self._new_actor(fn) for fn in self._env_fns]
        self.waiting = False
        self.closed = False
        self.restarts = 0
        self._pending: list[Any | None] = []
        self._failures = [0] * len(self.actors)
        # Per env: the last observation returned, and a restart not yet reported by step_wait.
        self._last_obs: list[Any] = [None] * len(self.actors)
        self._restarted: dict[int, tuple[Any, dict[str, Any]]] = {}
        try:
            observation_space, action_space = self._ray.get(self.actors[0].spaces.remote())
            super().__init__(len(self.actors), observation_space, action_space)
        except BaseException:
            self._kill_all()
            raise

    # --- the VecEnv protocol ---------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every environment with the pending seeds and options (then forget them)."""
        self._restarted.clear()
        refs = [
            actor.reset.remote(self._seeds[i], self._options[i])
            for i, actor in enumerate(self.actors)
        ]
        observations = []
        for i, result in enumerate(self._gather(refs)):
            if result is _DEAD:  # died during reset: a new actor, reset the same way
                result = self._replacement(i, self._seeds[i], self._options[i])
            observation, self.reset_infos[i] = result
            observations.append(observation)
        self._last_obs = observations
        self._reset_seeds()
        self._reset_options()
        return _stack(observations, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [
            None if i in self._restarted else actor.step.remote(actions[i])
            for i, actor in enumerate(self.actors)
        ]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = self._gather(self._pending)
        self._pending, self.waiting = [], False
        observations, rewards, dones, infos = [], [], [], []
        for i, result in enumerate(results):
            if result is _DEAD:
                if i not in self._restarted:  # the actor died during this step
                    self._restarted[i] = self._replacement(i)
                observation, reset_info = self._restarted.pop(i)
                self.reset_infos[i] = reset_info
                reward, done = 0.0, True
                info = {
                    "terminal_observation": self._last_obs[i],
                    "TimeLimit.truncated": True,
                    "actor_restarted": True,
                }
            else:
                observation, reward, done, info, reset_info = result
                self._failures[i] = 0
                if reset_info is not None:
                    self.reset_infos[i] = reset_info
            self._last_obs[i] = observation
            observations.append(observation)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
        return (
            _stack(observations, self.observation_space),
            np.array(rewards, dtype=np.float32),
            np.array(dones, dtype=bool),
            infos,
        )

    def close(self) -> None:
        """Close the environments (up to :data:`CLOSE_TIMEOUT` s), then end the actors."""
        if self.closed:
            return
        if self.waiting:
            self._gather(self._pending)
            self.waiting = False
        refs = [actor.close.remote() for actor in self.actors]
        self._ray.wait(refs, num_returns=len(refs), timeout=CLOSE_TIMEOUT)
        self._kill_all()
        self.closed = True

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call(indices, "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call(indices, "set_attr", attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        return self._call(indices, "env_method", method_name, method_args, method_kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return self._call(indices, "is_wrapped", wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is "
                f"`rgb_array` to obtain images.",
                stacklevel=2,
            )
            return [None for _ in self.actors]
        return self._call(None, "render")

    # --- actors ----------------------------------------------------------------------

    def _new_actor(self, env_fn: Callable[[], gymnasium.Env]) -> Any:
        return self._actor_class.remote(env_fn, self._threads)

    def _gather(self, refs: Sequence[Any | None]) -> list[Any]:
        """``ray.get`` of each ref; :data:`_DEAD` for a dead actor or a ``None`` ref."""
        live = [ref for ref in refs if ref is not None]
        try:
            values = iter(self._ray.get(live))
            return [_DEAD if ref is None else next(values) for ref in refs]
        except self._actor_error:
            pass
        results = []
        for ref in refs:
            try:
                results.append(_DEAD if ref is None else self._ray.get(ref))
            except self._actor_error:
                results.append(_DEAD)
        return results

    def _replacement(
        self, index: int, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Replace the dead actor ``index``; return the new environment's ``reset`` result."""
        while True:
            self._failures[index] += 1
            self.restarts += 1
            if self._failures[index] > MAX_CONSECUTIVE_RESTARTS:
                raise RayBackendError(
                    f"environment {index} lost its Ray actor {self._failures[index]} times in a "
                    f"row; see the Ray worker logs (e.g. /tmp/ray/session_latest/logs), give "
                    f"more `worker_memory`, or use `backend='local'`"
                )
            warnings.warn(
                f"RayVecEnv: the actor of environment {index} died; restarting its episode on a "
                f"new actor (restart {self.restarts})",
                RuntimeWarning,
                stacklevel=3,
            )
            self._kill(self.actors[index])
            self.actors[index] = self._new_actor(self._env_fns[index])
            (result,) = self._gather([self.actors[index].reset.remote(seed, options)])
            if result is not _DEAD:
                return result

    def _call(self, indices: VecEnvIndices, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on the actors of ``indices``; a dead one is replaced and asked again.

        The replacement's first observation is reported by the next ``step_wait``.
        """
        targets = list(self._get_indices(indices))
        refs = [getattr(self.actors[i], method).remote(*args) for i in targets]
        results = self._gather(refs)
        for position, (i, result) in enumerate(zip(targets, results, strict=True)):
            if result is _DEAD:
                self._restarted[i] = self._replacement(i)
                results[position] = self._ray.get(getattr(self.actors[i], method).remote(*args))
        return results

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(actor)

    def _kill_all(self) -> None:
        for actor in self.actors:
            self._kill(actor)


def _stack(observations: Sequence[Any], space: spaces.Space) -> VecEnvObs:
    """One observation per env -> arrays with a first axis of envs (Dict and Tuple per part)."""
    if isinstance(space, spaces.Dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(
            np.stack([obs[i] for obs in observations]) for i in range(len(space.spaces))
        )
    return np.stack(observations)


def make_ray_workers(
    config: TrainConfig, options: RayOptions, n_envs: int | None = None
) -> VecEnv:
    """``n_envs`` monitored training environments as Ray actors (connects to Ray if needed)."""
    n_envs = n_envs or config.n_envs
    ray, _ = connect(options)
    check_capacity(ray, options, n_envs, "environments (`n_envs`)")
    factory = functools.partial(make_env, config.task_spec, config)
    workers = RayVecEnv([factory] * n_envs, options.remote_options(), threads=options.threads)
    return VecMonitor(workers)
