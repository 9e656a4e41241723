"""``BatchedVecEnv``: N training runs per step in a few compiled calls, tasks mixed in lanes.

The SB3 ``VecEnv`` of ``fitpilot train --vec batched``. Its N environments are split
into ``lanes`` of G = N / lanes slots; a lane trains G copies of one task
(:class:`~fitpilot.envs.batched.BatchedEpochRunner`, one group of G copies per task),
and the lanes hold different tasks. One ``step`` applies every slot's action, trains
one epoch of each lane's copies (with validation) in one call per lane, and reads
each slot's observation and reward through its copy's own
:class:`~fitpilot.envs.env.KerasTrainingEnv` (the same featurizer, reward and episode
end as the single environment). Each copy has its own starting learning rate, seed
and data order: copy j of task t is seeded ``seed + j + 7919 t`` at its first reset.

Auto-reset as SB3 does it: an episode that ends (stop, budget, divergence) is reset
at once, its last observation in ``info["terminal_observation"]``. A reset trains the
new episode's first epoch: when it follows a stop, in the lane's one call; when the
step's own epoch ended the episode, in a second call for those copies.

**Turns.** A lane holds a task for a turn of ``turn_budgets`` times the task's epoch
budget in steps (``task_steps`` steps if given), then takes the next task of a seeded
random cycle (every task once per cycle) that no other lane holds. What happens to
the episodes running at the end of a turn is ``task_switch``:

- ``"cut"``: they end truncated (``TimeLimit.truncated``, so PPO bootstraps them from
  the value of their last observation); the lane's copies start new episodes on the
  next task.
- ``"pause"``: they end truncated for SB3 as well, but their copies keep their state:
  when the task's turn comes again, each copy's episode goes on where it stopped. Its
  first observation then carries ``info[RESUMED_FRAMES]``, the episode's earlier
  observations, from which :class:`ResumingFrameStack` puts the frame stack back as it
  was (the policy sees what an uninterrupted run shows it). Short turns thus mix tasks
  across consecutive rollouts without cutting episodes short. ``info[PAUSED]`` marks
  a paused episode's last step (episode statistics skip it).

Each task's group is built and compiled on its first turn (seconds) and kept.

By default (``processes: 1``) TensorFlow runs in the learner's process, on one thread:
the learner waits for the step anyway, and no transport is paid. With ``processes``
> 1, :func:`make_batched_workers` splits the lanes into worker processes, so that every
core trains epochs (see :func:`grouped`); the workers step in lockstep, a fast one
waiting for a slow one (:meth:`BatchedVecEnv.timing` and the workers' timing show it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from fitpilot.agents.config import TASK_SWITCHES, WORKER_THREADS, TrainConfig
from fitpilot.runtime import configure

if TYPE_CHECKING:
    from fitpilot.envs.batched import BatchedCopyEnv, BatchedEpochRunner
    from fitpilot.envs.tasks import TrainingTask

_TASK_SEED_STRIDE = 7919  # copy j's env of task t is seeded seed + j + stride * t
#: Info key of a resumed episode's first observation: its earlier observations,
#: ``float32[k, n]`` oldest first (k >= 0).
RESUMED_FRAMES = "resumed_frames"
#: Info key (True) of the last step of a paused episode (``task_switch="pause"``).
PAUSED = "paused"

Result = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


@dataclass
class _Lane:
    """Slots ``[start, start + copies)``: copies ``0..copies-1`` of task ``task``'s group."""

    start: int
    task: int
    turn: int  # steps it holds the task
    steps: int = 0  # steps on the task so far


@dataclass
class _Episodes:
    """Per copy ``(task, j)``: the observations of its episode so far, while one runs."""

    frames: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)
    infos: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)

    def start(self, copy: tuple[int, int], obs: np.ndarray, info: dict[str, Any]) -> None:
        self.frames[copy], self.infos[copy] = [obs], info

    def add(self, copy: tuple[int, int], obs: np.ndarray, info: dict[str, Any]) -> None:
        self.frames[copy].append(obs)
        self.infos[copy] = dict(info)  # as the env gave it: the step's keys are added later

    def end(self, copy: tuple[int, int]) -> None:
        self.frames.pop(copy, None)
        self.infos.pop(copy, None)

    def running(self, copy: tuple[int, int]) -> bool:
        return copy in self.frames


class BatchedVecEnv(VecEnv):
    """``n_envs`` copies in ``lanes`` lanes, each on its own task, stepped in one call per lane.

    Args:
        tasks: the tasks (in-memory :class:`TrainingTask`s); at least ``lanes``.
        n_envs: all copies (N), a multiple of ``lanes``.
        env_kwargs: the other arguments of :class:`KerasTrainingEnv`.
        task_steps: steps of a turn on any task (overrides ``turn_budgets``).
        seed: seeds the order of tasks (the copies are seeded by :meth:`seed`).
        jit_compile: compile each group's epoch with XLA (see ``BatchedEpochRunner``).
        lanes: how many tasks train at once (each on ``n_envs / lanes`` copies).
        turn_budgets: a lane's turn on a task, in epoch budgets of that task (rounded
            to whole steps, at least 1). Unused while every task holds a lane.
        task_switch: ``"cut"`` or ``"pause"`` the episodes at the end of a turn.
    """

    def __init__(
        self,
        tasks: Sequence[TrainingTask],
        n_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        task_steps: int | None = None,
        seed: int | None = None,
        jit_compile: bool = True,
        lanes: int = 1,
        turn_budgets: float = 4.0,
        task_switch: str = "cut",
    ) -> None:
        self.tasks = list(tasks)
        if lanes < 1 or n_envs % lanes:
            raise ValueError(f"n_envs ({n_envs}) must be a multiple of lanes ({lanes}) >= 1")
        if lanes > len(self.tasks):
            raise ValueError(
                f"lanes ({lanes}) must be <= the number of tasks ({len(self.tasks)}): each "
                f"lane trains a task of its own"
            )
        if task_switch not in TASK_SWITCHES:
            raise ValueError(f"task_switch must be one of {', '.join(TASK_SWITCHES)}")
        self.env_kwargs = dict(env_kwargs or {})
        self.task_steps, self.turn_budgets, self.task_switch = task_steps, turn_budgets, task_switch
        self.jit_compile = jit_compile
        self.copies = n_envs // lanes  # G: copies per group, slots per lane
        self._groups: dict[int, tuple[BatchedEpochRunner, list[BatchedCopyEnv]]] = {}
        self._rng = np.random.default_rng(seed)
        self._cycle: list[int] = []
        self._seed: int | None = None  # copy j of task t is seeded _seed + j + stride * t
        self._seeded: set[tuple[int, int]] = set()  # copies seeded since the last seed
        self._episodes = _Episodes()
        self._lanes: list[_Lane] = []
        for index in range(lanes):
            task = self._next_task({lane.task for lane in self._lanes})
            self._lanes.append(_Lane(index * self.copies, task, self._turn_length(task)))
        envs = self._envs(self._lanes[0].task)
        super().__init__(n_envs, envs[0].observation_space, envs[0].action_space)
        self._actions: np.ndarray | None = None
        self._timing = {"step_seconds": 0.0, "epoch_seconds": 0.0, "calls": 0, "steps": 0}

    # -- groups ----------------------------------------------------------------

    def _next_task(self, held: set[int]) -> int:
        """The next task of the cycle that no other lane holds (the cycle refills)."""
        for _ in range(2):
            for position, task in enumerate(self._cycle):
                if task not in held:
                    return self._cycle.pop(position)
            self._cycle += [int(t) for t in self._rng.permutation(len(self.tasks))]
        raise AssertionError("more lanes than tasks")  # refused in __init__

    def _turn_length(self, task: int) -> int:
        if self.task_steps is not None:
            return self.task_steps
        return max(1, round(self.turn_budgets * self.tasks[task].epochs))

    def _envs(self, task: int) -> list[BatchedCopyEnv]:
        """The copies' environments of ``task`` (its group is built on first use)."""
        # TensorFlow loads with the envs: make_batched_workers configures it first
        from fitpilot.envs.batched import BatchedCopyEnv, BatchedEpochRunner

        if task not in self._groups:
            group = BatchedEpochRunner(self.tasks[task], self.copies, jit_compile=self.jit_compile)
            envs = [
                BatchedCopyEnv(group.copy(i), **self.env_kwargs) for i in range(group.copies)
            ]
            self._groups[task] = (group, envs)
        return self._groups[task][1]

    def _group(self, task: int) -> BatchedEpochRunner:
        self._envs(task)
        return self._groups[task][0]

    def _run(self, task: int, active: np.ndarray | None = None) -> None:
        """One epoch call of ``task``'s group (timed)."""
        started = time.perf_counter()
        self._group(task).run_epochs(active)
        self._timing["epoch_seconds"] += time.perf_counter() - started
        self._timing["calls"] += 1

    def _env(self, index: int) -> BatchedCopyEnv:
        """The environment behind slot ``index``."""
        lane = self._lanes[index // self.copies]
        return self._envs(lane.task)[index - lane.start]

    def warm_up(self) -> None:
        """Build and compile every task's group now, not on its first turn (before reset)."""
        for task in range(len(self.tasks)):
            group = self._group(task)
            group.run_epochs()  # traces and compiles; copies reset later
            if group.lone_calls:  # the call of one copy (a new episode's first epoch)
                group.run_epochs(np.arange(group.copies) == 0)

    def timing(self) -> dict[str, float]:
        """Seconds in ``step_wait`` and in its epoch calls, the calls and steps so far."""
        return dict(self._timing)

    # -- episodes ----------------------------------------------------------------

    def _begin_reset(self, task: int, copy: int, options: dict | None = None) -> None:
        seed = None
        if self._seed is not None and (task, copy) not in self._seeded:
            seed = self._seed + copy + _TASK_SEED_STRIDE * task
            self._seeded.add((task, copy))
        self._envs(task)[copy].begin_reset(seed=seed, options=options)

    def _end_reset(self, task: int, copy: int) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self._envs(task)[copy].end_reset(self._group(task).logs(copy))
        self._episodes.start((task, copy), obs, info)
        return obs, info

    def _start(self, task: int, copies: list[int]) -> dict[int, tuple[np.ndarray, dict]]:
        """Copies ``copies`` of ``task`` (reset begun): their first epoch, in one call."""
        if not copies:
            return {}
        mask = np.zeros(self.copies, bool)
        mask[copies] = True
        self._run(task, None if mask.all() else mask)
        return {copy: self._end_reset(task, copy) for copy in copies}

    # -- VecEnv ----------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Every copy starts afresh (paused episodes too): one call per lane."""
        if self._seeds[0] is not None:
            self._seed, self._seeded = int(self._seeds[0]), set()
        self._episodes = _Episodes()
        observations = []
        for lane in self._lanes:
            for copy in range(self.copies):
                options = self._options[lane.start + copy]
                self._begin_reset(lane.task, copy, options or None)
            started = self._start(lane.task, list(range(self.copies)))
            for copy in range(self.copies):
                observations.append(started[copy][0])
                self.reset_infos[lane.start + copy] = started[copy][1]
        self._reset_seeds()
        self._reset_options()
        return np.stack(observations)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Every lane's step: its epoch call, plus one for copies whose epoch ended them."""
        assert self._actions is not None, "step_async() first"
        started = time.perf_counter()
        observations: list[Any] = [None] * self.num_envs
        rewards = np.zeros(self.num_envs, np.float32)
        dones = np.zeros(self.num_envs, bool)
        infos: list[dict[str, Any]] = [{}] * self.num_envs
        for lane in self._lanes:
            part = slice(lane.start, lane.start + self.copies)
            self._step_lane(lane, self._actions[part], observations, rewards, dones, infos)
        self._actions = None
        self._timing["step_seconds"] += time.perf_counter() - started
        self._timing["steps"] += 1
        return np.stack(observations), rewards, dones, infos

    def _step_lane(
        self,
        lane: _Lane,
        actions: np.ndarray,
        observations: list[Any],
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """One step of ``lane``'s copies; writes their slots of the step's return values."""
        task, envs, n = lane.task, self._envs(lane.task), self.copies
        lane.steps += 1
        switching = len(self.tasks) > len(self._lanes) and lane.steps >= lane.turn
        results: list[Any] = [None] * n
        stopped = np.zeros(n, bool)  # ended without an epoch: reset now
        for copy, env in enumerate(envs):
            results[copy] = env.begin_step(actions[copy])
            stopped[copy] = results[copy] is not None
            if stopped[copy] and not switching:
                self._begin_reset(task, copy)
        active = np.ones(n, bool) if not switching else ~stopped
        fresh: dict[int, tuple[np.ndarray, dict]] = {}
        resets: list[int] = []
        if active.any():
            self._run(task, None if active.all() else active)
        group = self._group(task)
        for copy, env in enumerate(envs):
            if not stopped[copy]:
                results[copy] = env.end_step(group.logs(copy))
                if results[copy][2] and not switching:
                    resets.append(copy)
            elif not switching:
                fresh[copy] = self._end_reset(task, copy)
        for copy in resets:  # their epoch ended the episode: the new episode's first epoch
            self._begin_reset(task, copy)
        fresh.update(self._start(task, resets))
        for copy, (obs, _, terminated, _, info) in enumerate(results):
            if terminated:
                if copy not in fresh:
                    self._episodes.end((task, copy))
            else:
                self._episodes.add((task, copy), obs, info)
        if switching:
            fresh = self._switch(lane)
        for copy, (obs, reward, terminated, truncated, info) in enumerate(results):
            index = lane.start + copy
            truncated = truncated or (switching and not terminated)
            rewards[index], dones[index] = reward, terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if switching and self.task_switch == "pause" and not terminated:
                info[PAUSED] = True
            if dones[index]:
                info["terminal_observation"] = obs
                observations[index], self.reset_infos[index] = fresh[copy][:2]
                if len(fresh[copy]) > 2:
                    info[RESUMED_FRAMES] = fresh[copy][2]
            else:
                observations[index] = obs
            infos[index] = info

    def _switch(self, lane: _Lane) -> dict[int, tuple]:
        """``lane`` takes its next task: its copies' first observations there (and infos).

        ``"cut"`` ends the running episodes of the old task; ``"pause"`` keeps them, and
        resumes those of the new task (with their earlier frames), starting the others.
        """
        old = lane.task
        if self.task_switch == "cut":
            for copy in range(self.copies):
                self._episodes.end((old, copy))
        held = {other.task for other in self._lanes if other is not lane}
        lane.task = self._next_task(held)
        lane.steps, lane.turn = 0, self._turn_length(lane.task)
        waiting = [c for c in range(self.copies) if not self._episodes.running((lane.task, c))]
        for copy in waiting:
            self._begin_reset(lane.task, copy)
        first: dict[int, tuple] = dict(self._start(lane.task, waiting))
        for copy in range(self.copies):
            if copy not in first:  # a paused episode goes on
                frames = self._episodes.frames[(lane.task, copy)]
                info = dict(self._episodes.infos[(lane.task, copy)])
                first[copy] = (frames[-1], info, _earlier(frames))
        return first

    def close(self) -> None:
        for group, envs in self._groups.values():
            for env in envs:
                env.close()
            group.close()
        self._groups.clear()

    # attributes and methods of the copy environments behind the slots

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self._env(i), attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for i in self._get_indices(indices):
            setattr(self._env(i), attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        return [
            getattr(self._env(i), method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _earlier(frames: list[np.ndarray]) -> np.ndarray:
    """``float32[k - 1, n]``: all but the last of ``k`` frames, oldest first."""
    if len(frames) == 1:
        return np.zeros((0, frames[0].size), frames[0].dtype)
    return np.stack(frames[:-1])


class ResumingFrameStack(VecFrameStack):
    """``VecFrameStack`` that puts back the earlier frames of a resumed episode.

    A slot whose step is done starts with zeros before its first frame, as a new
    episode does; if the VecEnv resumed a paused episode there (``info[RESUMED_FRAMES]``,
    see :class:`BatchedVecEnv`), its last frames go back in front of the observation,
    so the stack holds what it would have held had the episode not been paused.
    Otherwise the same as ``VecFrameStack`` (1-D observations).
    """

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = super().step_wait()
        stack = self.stacked_obs
        width = stack.stacked_obs.shape[-1] // stack.n_stack  # one frame
        for index, info in enumerate(infos):
            frames = info.get(RESUMED_FRAMES)
            if dones[index] and frames is not None:
                history = np.zeros((stack.n_stack - 1, width), stack.stacked_obs.dtype)
                kept = frames[len(frames) - (stack.n_stack - 1):] if stack.n_stack > 1 else []
                history[len(history) - len(kept):] = kept
                stack.stacked_obs[index, :-width] = history.reshape(-1)
        return stack.stacked_obs, rewards, dones, infos


def make_batched_workers(config: TrainConfig, n_envs: int | None = None) -> VecEnv:
    """``n_envs`` monitored copies of ``config``'s tasks, batched in ``config.lanes`` lanes.

    In ``config.batched_processes()`` worker processes, each with an equal share of the
    lanes (at least one; see :func:`grouped`), or in this process for one. Every worker
    has the same task order.
    """
    n_envs = n_envs or config.n_envs
    processes = min(config.batched_processes(), n_envs)
    lanes = max(1, config.lanes // processes)  # per process
    make_group = functools.partial(batched_group, config, lanes)
    return VecMonitor(grouped(make_group, n_envs, processes))


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


def batched_group(config: TrainConfig, lanes: int, copies: int) -> BatchedVecEnv:
    """``copies`` copies of ``config``'s tasks in ``lanes`` lanes, in this process."""
    configure(WORKER_THREADS)
    from fitpilot.envs.loading import load_tasks  # loads TensorFlow: configured just above

    tasks = load_tasks(config.task_spec)
    return BatchedVecEnv(
        tasks,
        copies,
        config.env.env_kwargs(),
        seed=config.seed,
        lanes=lanes,
        turn_budgets=config.turn_budgets,
        task_switch=config.task_switch,
    )
