"""``BatchedVecEnv``: N training runs of one task per step, in one compiled call.

The SB3 ``VecEnv`` of ``fitpilot train --vec batched``. Its N environments are copies
of one task (:class:`~fitpilot.envs.batched.BatchedEpochRunner`): one ``step`` applies
every copy's action, trains one epoch of all N models (with validation) in one call,
and reads each copy's observation and reward through its own
:class:`~fitpilot.envs.env.KerasTrainingEnv` (the same featurizer, reward and episode
end as the single environment). Each copy has its own starting learning rate, seed
and data order.

Auto-reset as SB3 does it: an episode that ends (stop, budget, divergence) is reset
at once, its last observation in ``info["terminal_observation"]``. A reset trains the
new episode's first epoch: when it follows a stop, in the step's one call; when the
step's own epoch ended the episode, in a second call for those copies.

With several tasks, the copies train ``task_steps`` steps on one task, then all move
to the next (in a seeded random order, all tasks once per cycle): the episodes running
at the switch end truncated (``TimeLimit.truncated``). Each task's group is compiled
on its first turn (seconds) and kept.

By default (``processes: 1``) TensorFlow runs in the learner's process, on one thread:
the learner waits for the step anyway, and no transport is paid. With ``processes``
> 1, :func:`make_batched_workers` splits the copies into groups, one per worker
process, so that every core trains epochs (see :func:`grouped`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from fitpilot.agents.config import WORKER_THREADS, TrainConfig
from fitpilot.runtime import configure

if TYPE_CHECKING:
    from fitpilot.envs.batched import BatchedCopyEnv, BatchedEpochRunner
    from fitpilot.envs.tasks import TrainingTask

TASK_STEPS_PER_BUDGET = 4  # default turn on a task: this many epoch budgets of steps
_TASK_SEED_STRIDE = 7919  # copy i's env of task t is seeded seed_i + stride * t


class BatchedVecEnv(VecEnv):
    """``n_envs`` copies of one task at a time, stepped in one call per step.

    Args:
        tasks: the tasks (in-memory :class:`TrainingTask`s).
        n_envs: copies per task (N).
        env_kwargs: the other arguments of :class:`KerasTrainingEnv`.
        task_steps: steps on a task before all copies move to the next; default
            ``TASK_STEPS_PER_BUDGET`` times the task's epoch budget. Unused with one task.
        seed: seeds the order of tasks (the copies are seeded by :meth:`seed`).
        jit_compile: compile each group's epoch with XLA (see ``BatchedEpochRunner``).
    """

    def __init__(
        self,
        tasks: Sequence[TrainingTask],
        n_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        task_steps: int | None = None,
        seed: int | None = None,
        jit_compile: bool = True,
    ) -> None:
        self.tasks = list(tasks)
        self.env_kwargs = dict(env_kwargs or {})
        self.task_steps = task_steps
        self.jit_compile = jit_compile
        self._groups: dict[int, tuple[BatchedEpochRunner, list[BatchedCopyEnv]]] = {}
        self._rng = np.random.default_rng(seed)
        self._cycle: list[int] = []
        self._seeded: set[int] = set()
        self._base_seeds: list[int | None] = [None] * n_envs
        self._task = self._next_task()
        envs = self._envs(self._task)
        super().__init__(n_envs, envs[0].observation_space, envs[0].action_space)
        self._steps_on_task = 0
        self._actions: np.ndarray | None = None

    # -- groups ----------------------------------------------------------------

    def _next_task(self) -> int:
        if not self._cycle:
            self._cycle = list(self._rng.permutation(len(self.tasks)))
        return int(self._cycle.pop(0))

    def _envs(self, task: int) -> list[BatchedCopyEnv]:
        """The copies' environments of ``task`` (its group is built on first use)."""
        # TensorFlow loads with the envs: make_batched_workers configures it first
        from fitpilot.envs.batched import BatchedCopyEnv, BatchedEpochRunner

        if task not in self._groups:
            group = BatchedEpochRunner(
                self.tasks[task], len(self._base_seeds), jit_compile=self.jit_compile
            )
            envs = [
                BatchedCopyEnv(group.copy(i), **self.env_kwargs)
                for i in range(group.copies)
            ]
            self._groups[task] = (group, envs)
        return self._groups[task][1]

    @property
    def group(self) -> BatchedEpochRunner:
        """The group of the current task."""
        return self._groups[self._task][0]

    def _begin_reset(self, task: int, index: int, seed: int | None, options: dict | None) -> None:
        env = self._envs(task)[index]
        if seed is None and (task, index) not in self._seeded:
            base = self._base_seeds[index]
            seed = None if base is None else base + _TASK_SEED_STRIDE * task
        if seed is not None:
            self._seeded.add((task, index))
        env.begin_reset(seed=seed, options=options)

    def _turn_length(self) -> int:
        if self.task_steps is not None:
            return self.task_steps
        return TASK_STEPS_PER_BUDGET * self.tasks[self._task].epochs

    def warm_up(self) -> None:
        """Build and compile every task's group now, not on its first turn (before reset)."""
        for task in range(len(self.tasks)):
            self._envs(task)
            group = self._groups[task][0]
            group.run_epochs()  # traces and compiles; copies reset later
            if group.copies > 1:  # the call of one copy (a new episode's first epoch)
                group.run_epochs(np.arange(group.copies) == 0)

    # -- VecEnv ----------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every copy (with the seeds and options given, if any): one call."""
        for index in range(self.num_envs):
            seed = self._seeds[index]
            if seed is not None:
                self._base_seeds[index] = int(seed)
                self._seeded = {s for s in self._seeded if s[1] != index}
                seed = int(seed) + _TASK_SEED_STRIDE * self._task
            self._begin_reset(self._task, index, seed, self._options[index] or None)
        self.group.run_epochs()
        envs = self._envs(self._task)
        observations = []
        for index, env in enumerate(envs):
            obs, self.reset_infos[index] = env.end_reset(self.group.logs(index))
            observations.append(obs)
        self._reset_seeds()
        self._reset_options()
        return np.stack(observations)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Every copy's step: one batched epoch, plus one for copies whose epoch ended them."""
        assert self._actions is not None, "step_async() first"
        n, envs, group = self.num_envs, self._envs(self._task), self.group
        self._steps_on_task += 1
        switching = len(self.tasks) > 1 and self._steps_on_task >= self._turn_length()
        results: list[Any] = [None] * n
        stopped = np.zeros(n, bool)  # ended without an epoch: reset now
        for index, env in enumerate(envs):
            results[index] = env.begin_step(self._actions[index])
            stopped[index] = results[index] is not None
            if stopped[index] and not switching:
                self._begin_reset(self._task, index, None, None)
        active = np.ones(n, bool) if not switching else ~stopped
        observations: list[Any] = [None] * n
        resets: list[int] = []
        if active.any():
            group.run_epochs(active)
        for index, env in enumerate(envs):
            logs = group.logs(index)
            if not stopped[index]:
                results[index] = env.end_step(logs)
                if results[index][2] and not switching:
                    resets.append(index)
            elif not switching:
                observations[index], self.reset_infos[index] = env.end_reset(logs)
        if resets:  # their epoch ended the episode: the new episode's first epoch
            for index in resets:
                self._begin_reset(self._task, index, None, None)
            mask = np.zeros(n, bool)
            mask[resets] = True
            group.run_epochs(mask)
            for index in resets:
                observations[index], self.reset_infos[index] = envs[index].end_reset(
                    group.logs(index)
                )
        if switching:
            self._switch(observations)
        rewards = np.zeros(n, np.float32)
        dones = np.zeros(n, bool)
        infos: list[dict[str, Any]] = []
        for index, (obs, reward, terminated, truncated, info) in enumerate(results):
            truncated = truncated or (switching and not terminated)
            rewards[index], dones[index] = reward, terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if dones[index]:
                info["terminal_observation"] = obs
            else:
                observations[index] = obs
            infos.append(info)
        self._actions = None
        return np.stack(observations), rewards, dones, infos

    def _switch(self, observations: list[Any]) -> None:
        """All copies move to the next task: reset there, in one call."""
        self._task = self._next_task()
        self._steps_on_task = 0
        envs = self._envs(self._task)
        for index in range(self.num_envs):
            self._begin_reset(self._task, index, None, None)
        self.group.run_epochs()
        for index, env in enumerate(envs):
            observations[index], self.reset_infos[index] = env.end_reset(self.group.logs(index))

    def close(self) -> None:
        for group, envs in self._groups.values():
            for env in envs:
                env.close()
            group.close()
        self._groups.clear()

    # attributes and methods of the current task's copy environments

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        envs = self._envs(self._task)
        return [getattr(envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        envs = self._envs(self._task)
        for i in self._get_indices(indices):
            setattr(envs[i], attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        envs = self._envs(self._task)
        return [
            getattr(envs[i], method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_batched_workers(config: TrainConfig, n_envs: int | None = None) -> VecEnv:
    """``n_envs`` monitored copies per task of ``config``'s tasks, batched.

    In ``config.batched_processes()`` worker processes (see :func:`grouped`), or in
    this process for one. Every group has the same task order.
    """
    n_envs = n_envs or config.n_envs
    make_group = functools.partial(batched_group, config)
    return VecMonitor(grouped(make_group, n_envs, config.batched_processes()))


def grouped(make_group: Callable[[int], VecEnv], copies: int, processes: int) -> VecEnv:
    """``copies`` envs as one VecEnv: ``make_group(copies)`` in this process if
    ``processes`` is 1, else ``processes`` groups of nearly equal size (at most
    ``copies``), each built by ``make_group(size)`` in a worker process of its own
    (:class:`~fitpilot.agents.process_vecenv.ProcessGroupsVecEnv`)."""
    processes = min(processes, copies)
    if processes == 1:
        return make_group(copies)
    from fitpilot.agents.process_vecenv import ProcessGroupsVecEnv

    sizes = [len(part) for part in np.array_split(np.arange(copies), processes)]
    return ProcessGroupsVecEnv([functools.partial(make_group, size) for size in sizes])


def batched_group(config: TrainConfig, copies: int) -> BatchedVecEnv:
    """One group of ``copies`` copies per task of ``config``'s tasks, in this process."""
    configure(WORKER_THREADS)
    from fitpilot.envs.loading import load_tasks  # loads TensorFlow: configured just above

    tasks = load_tasks(config.task_spec)
    return BatchedVecEnv(tasks, copies, config.env.env_kwargs(), seed=config.seed)
