"""``ProcessGroupsVecEnv``: several VecEnvs, each in a worker process of its own, as one.

``fitpilot train --vec batched`` runs its copies in groups, one
:class:`~fitpilot.agents.batched_vecenv.BatchedVecEnv` per worker process, so that
the groups' epochs run on separate cores at the same time. A step sends each group
its slice of the actions, then gathers the groups' results in order (env ``i`` of
group ``g`` is env ``offset_g + i`` here). Seeds follow the same numbering: after
``seed(s)`` env ``k`` is seeded ``s + k``, whichever group holds it.

The groups step together, so each step waits for the slowest. The batched groups
are built to take the same time: the same number of copies (+-1) and the same task
order, so they train the same task at the same time. :meth:`ProcessGroupsVecEnv.timing`
shows what is left of the wait: the learner's seconds in steps beside each group's own
busy seconds.

A worker ignores Ctrl-C (the learner's process handles it and closes the workers)
and exits when the learner's end of its pipe closes. An exception in a worker
comes back to the caller, with the worker's traceback added as a note.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnvObs,
    VecEnvStepReturn,
)

from fitpilot.runtime import worker_start_method

CLOSE_SECONDS = 10.0  # how long close() waits for a worker before terminating it


def _worker(remote: Connection, parent_end: Connection, factory: CloudpickleWrapper) -> None:
    """Build the worker's VecEnv, then answer the learner's commands until ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_end.close()
    venv: VecEnv | None = None
    try:
        while True:
            try:
                command, data = remote.recv()
            except EOFError:  # the learner is gone
                break
            try:
                if venv is None:
                    venv = factory.var()
                result = _run(venv, command, data)
            except Exception as exc:  # sent back: the learner raises it
                remote.send((False, (exc, traceback.format_exc())))
                break
            remote.send((True, result))
            if command == "close":
                venv = None
                break
    except (OSError, EOFError):  # the learner is gone
        pass
    finally:
        if venv is not None:
            venv.close()
        remote.close()


def _run(venv: VecEnv, command: str, data: Any) -> Any:
    """One command of the learner on the worker's ``venv``; its result."""
    if command == "describe":
        return venv.num_envs, venv.observation_space, venv.action_space
    if command == "step":
        venv.step_async(data)
        return venv.step_wait()
    if command == "reset":
        seed, options = data
        if seed is not None:
            venv.seed(seed)
        venv.set_options(options)
        return venv.reset(), venv.reset_infos
    if command == "get_attr":
        return venv.get_attr(*data)
    if command == "set_attr":
        return venv.set_attr(*data)
    if command == "env_method":
        name, args, kwargs, indices = data
        return venv.env_method(name, *args, indices=indices, **kwargs)
    if command == "env_is_wrapped":
        return venv.env_is_wrapped(*data)
    if command == "call":  # a method of the worker's VecEnv itself
        name, args, kwargs = data
        return getattr(venv, name)(*args, **kwargs)
    if command == "close":
        return venv.close()
    raise ValueError(f"unknown worker command {command!r}")


class ProcessGroupsVecEnv(VecEnv):
    """The VecEnvs that ``factories`` build, one per worker process, as one VecEnv.

    Args:
        factories: each builds one group's VecEnv, in its worker (cloudpickled). All
            groups must have the same observation and action spaces.
        start_method: multiprocessing start method; default
            :func:`~fitpilot.runtime.worker_start_method` (never ``fork``).

    Attributes:
        processes: the worker processes, one per group.
        sizes: the number of envs in each group.
    """

    def __init__(
        self, factories: Sequence[Callable[[], VecEnv]], start_method: str | None = None
    ) -> None:
        if not factories:
            raise ValueError("ProcessGroupsVecEnv needs at least one group")
        context = multiprocessing.get_context(start_method or worker_start_method())
        self.remotes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.closed = False
        for factory in factories:
            remote, child_end = context.Pipe()
            process = context.Process(
                target=_worker, args=(child_end, remote, CloudpickleWrapper(factory)), daemon=True
            )
            process.start()
            child_end.close()
            self.remotes.append(remote)
            self.processes.append(process)
        try:
            described = self._all([("describe", None)] * len(self.remotes))
        except BaseException:
            self.close()
            raise
        self.sizes = [size for size, _, _ in described]
        self._step_started = 0.0
        self._step_seconds = 0.0
        self.offsets = np.cumsum([0, *self.sizes])
        observation_space, action_space = described[0][1:]
        for _, observation, action in described[1:]:
            if observation != observation_space or action != action_space:
                self.close()
                raise ValueError("the groups' observation or action spaces differ")
        super().__init__(int(self.offsets[-1]), observation_space, action_space)

    # -- talking to the workers ------------------------------------------------

    def _send(self, group: int, command: str, data: Any) -> None:
        try:
            self.remotes[group].send((command, data))
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            raise self._ended(group) from None

    def _receive(self, group: int) -> Any:
        try:
            ok, payload = self.remotes[group].recv()
        except (EOFError, OSError):
            raise self._ended(group) from None
        if ok:
            return payload
        exc, worker_traceback = payload
        exc.add_note(f"in batched worker process {group}:\n{worker_traceback}")
        raise exc

    def _ended(self, group: int) -> RuntimeError:
        process = self.processes[group]
        process.join(1.0)
        return RuntimeError(
            f"worker process {group} of the batched environments ended unexpectedly (exit "
            f"code {process.exitcode}); its error, if any, is printed above. A script that "
            f"starts training needs an `if __name__ == \"__main__\":` guard: the workers "
            f"import it"
        )

    def _all(self, messages: Sequence[tuple[str, Any]]) -> list[Any]:
        """Send message ``g`` to group ``g`` (all at once), then gather the answers in order."""
        for group, (command, data) in enumerate(messages):
            self._send(group, command, data)
        return [self._receive(group) for group in range(len(messages))]

    def _slice(self, group: int) -> slice:
        return slice(int(self.offsets[group]), int(self.offsets[group + 1]))

    def _by_group(self, indices: Any) -> dict[int, list[int]]:
        """Global env indices -> {group: [local indices]}, in the order given."""
        groups: dict[int, list[int]] = {}
        for index in self._get_indices(indices):
            group = int(np.searchsorted(self.offsets, index, side="right")) - 1
            groups.setdefault(group, []).append(index - int(self.offsets[group]))
        return groups

    def _per_env(self, command: str, make_data: Callable[[list[int]], Any], indices: Any) -> list:
        """``command`` in the groups holding ``indices``; the results in ``indices``' order."""
        by_group = self._by_group(indices)
        for group, local in by_group.items():
            self._send(group, command, make_data(local))
        results: dict[int, Any] = {}
        for group, local in by_group.items():
            for index, value in zip(local, self._receive(group), strict=True):
                results[int(self.offsets[group]) + index] = value
        return [results[i] for i in self._get_indices(indices)]

    def call(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of every group's VecEnv (in parallel); the results, per group."""
        return self._all([("call", (name, args, kwargs))] * len(self.remotes))

    def warm_up(self) -> None:
        """The groups' own ``warm_up`` (batched: build and compile every task), in parallel."""
        self.call("warm_up")

    def timing(self) -> dict[str, Any]:
        """``step_seconds``: the learner's seconds from sending the actions to the last
        result; ``groups``: each group's own ``timing()`` (its ``step_seconds`` are its busy
        seconds: the rest of the learner's it idled, waiting for a slower group)."""
        return {"step_seconds": self._step_seconds, "groups": self.call("timing")}

    # -- VecEnv ----------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        messages = []
        for group in range(len(self.remotes)):
            part = self._slice(group)
            seed = self._seeds[part.start]
            messages.append(("reset", (seed, self._options[part])))
        results = self._all(messages)
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return np.concatenate([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        self._step_started = time.perf_counter()
        for group in range(len(self.remotes)):
            self._send(group, "step", actions[self._slice(group)])

    def step_wait(self) -> VecEnvStepReturn:
        results = [self._receive(group) for group in range(len(self.remotes))]
        self._step_seconds += time.perf_counter() - self._step_started
        observations, rewards, dones, infos = zip(*results, strict=True)
        return (
            np.concatenate(observations),
            np.concatenate(rewards),
            np.concatenate(dones),
            [info for group_infos in infos for info in group_infos],
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for remote in self.remotes:
            with contextlib.suppress(OSError):  # the worker is gone already
                remote.send(("close", None))
        for remote in self.remotes:
            with contextlib.suppress(EOFError, OSError):
                if remote.poll(CLOSE_SECONDS):
                    remote.recv()
        for process in self.processes:
            process.join(CLOSE_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
        for remote in self.remotes:
            remote.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return self._per_env("get_attr", lambda local: (attr_name, local), indices)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        by_group = self._by_group(indices)
        for group, local in by_group.items():
            self._send(group, "set_attr", (attr_name, value, local))
        for group in by_group:
            self._receive(group)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        return self._per_env(
            "env_method", lambda local: (method_name, method_args, method_kwargs, local), indices
        )

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return self._per_env("env_is_wrapped", lambda local: (wrapper_class, local), indices)
