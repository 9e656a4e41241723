"""The batched environment: copies follow the single env, auto-reset, truncation, check_env."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fitpilot.agents.batched_vecenv import BatchedVecEnv
from fitpilot.envs.batched import BatchedCopyEnv, BatchedEpochRunner
from fitpilot.envs.env import KerasTrainingEnv
from tests.user_tasks import TASKS

LOWER, KEEP, RAISE, STOP = 0, 1, 2, 3
ACTIONS = [LOWER, RAISE, KEEP, RAISE, LOWER, KEEP]
SHORT = dataclasses.replace(TASKS[0], name="short_mlp", epochs=3)
# The tests of the logic around the epoch skip XLA's compile (seconds per group); the
# parity tests use it, as training does.
FAST = dict(jit_compile=False)


@pytest.fixture(scope="module")
def single_env() -> KerasTrainingEnv:
    env = KerasTrainingEnv(tasks=[TASKS[0]])
    yield env
    env.close()


def single_trajectory(env: KerasTrainingEnv, seed: int, actions: list[int]) -> list[tuple]:
    """(observation, reward, logs) of the single env from ``reset(seed=seed)`` on."""
    obs, info = env.reset(seed=seed)
    trajectory = [(obs, 0.0, info["logs"])]
    for action in actions:
        obs, reward, _, _, info = env.step(action)
        trajectory.append((obs, reward, info["logs"]))
    return trajectory


def assert_same(batched: tuple, single: tuple) -> None:
    (obs, reward, logs), (obs_1, reward_1, logs_1) = batched, single
    np.testing.assert_allclose(obs, obs_1, rtol=1e-4, atol=1e-5)
    assert reward == pytest.approx(reward_1, rel=1e-4, abs=1e-6)
    assert logs.keys() == logs_1.keys()
    for key in logs:
        assert logs[key] == pytest.approx(logs_1[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("copies", [1, 3])
def test_each_copy_follows_the_single_env_of_its_seed(
    copies: int, single_env: KerasTrainingEnv
) -> None:
    venv = BatchedVecEnv([TASKS[0]], copies)
    try:
        venv.seed(11)
        obs = venv.reset()
        trajectories = [[(obs[i], 0.0, venv.reset_infos[i]["logs"])] for i in range(copies)]
        for action in ACTIONS:
            venv.step_async(np.full(copies, action))
            obs, rewards, dones, infos = venv.step_wait()
            assert not dones.any()
            for i in range(copies):
                trajectories[i].append((obs[i], float(rewards[i]), infos[i]["logs"]))
    finally:
        venv.close()
    for i in range(copies):
        single = single_trajectory(single_env, 11 + i, ACTIONS)
        for batched_step, single_step in zip(trajectories[i], single, strict=True):
            assert_same(batched_step, single_step)
    if copies > 1:  # different seeds: different runs
        assert trajectories[0][-1][2]["loss"] != trajectories[1][-1][2]["loss"]


def test_auto_reset_after_stop_and_after_the_budget() -> None:
    venv = BatchedVecEnv([SHORT], 2, **FAST)
    try:
        venv.seed(3)
        venv.reset()
        # copy 0 stops at once; copy 1 trains epochs 2 and 3 (the budget ends its episode)
        venv.step_async(np.array([STOP, KEEP]))
        obs, rewards, dones, infos = venv.step_wait()
        assert dones.tolist() == [True, False]
        assert infos[0]["TimeLimit.truncated"] is False
        assert infos[0]["epoch"] == 1 and "terminal_observation" in infos[0]
        assert venv.reset_infos[0]["epoch"] == 1  # the new episode trained its first epoch
        assert not np.array_equal(obs[0], infos[0]["terminal_observation"])
        venv.step_async(np.array([KEEP, KEEP]))
        obs, rewards, dones, infos = venv.step_wait()
        assert dones.tolist() == [False, True]
        assert infos[1]["epoch"] == SHORT.epochs and "test" in infos[1]
        assert venv.reset_infos[1]["epoch"] == 1
        copy = venv.get_attr("copy_runner", [1])[0]
        assert copy.epoch == 1
        new_episode = venv.reset_infos[1]["logs"]  # trained in a call of copy 1 alone
    finally:
        venv.close()
    single = KerasTrainingEnv(tasks=[SHORT])
    try:
        single.reset(seed=3 + 1)
        for _ in range(SHORT.epochs - 1):
            single.step(KEEP)
        _, info = single.reset()
    finally:
        single.close()
    assert new_episode == pytest.approx(info["logs"], rel=1e-4, abs=1e-6)


def test_copies_move_to_the_next_task_truncated() -> None:
    venv = BatchedVecEnv([SHORT, TASKS[1]], 2, task_steps=1, seed=0, **FAST)
    try:
        venv.reset()
        first = venv.get_attr("task")[0].name
        venv.step_async(np.array([KEEP, KEEP]))
        obs, _, dones, infos = venv.step_wait()
        assert dones.all()
        assert all(info["TimeLimit.truncated"] for info in infos)
        assert venv.get_attr("task")[0].name != first
        assert all(r["epoch"] == 1 for r in venv.reset_infos)
        assert obs.shape == (2, *venv.observation_space.shape)
    finally:
        venv.close()


def test_the_batched_runner_leaves_op_determinism_as_it_found_it() -> None:
    """Like the single runners: a user's own fit with Dropout afterwards must still run."""
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    group = BatchedEpochRunner(TASKS[0], 2, **FAST)
    try:
        group.reset_copy(0, seed=0, learning_rate=0.01)
        group.reset_copy(1, seed=1, learning_rate=0.01)
        group.run_epochs()
        assert not tf_config.is_op_determinism_enabled()
    finally:
        group.close()


def test_a_single_copy_passes_check_env() -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    group = BatchedEpochRunner(TASKS[0], 2, **FAST)
    env = BatchedCopyEnv(group.copy(1))
    try:
        gym_check(env, skip_render_check=True)
        sb3_check(env, warn=True)
    finally:
        env.close()
        group.close()


def test_ppo_learns_on_the_batched_env() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(BatchedVecEnv([SHORT], 4, **FAST))
    try:
        model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
        model.learn(16)
        assert model.num_timesteps == 16
    finally:
        venv.close()
