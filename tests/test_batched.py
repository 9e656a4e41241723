"""The batched environment: copies follow the single env, auto-reset, truncation, check_env."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fitpilot.agents.batched_vecenv import PAUSED, RESUMED_FRAMES, BatchedVecEnv
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
        new_episode = venv.reset_infos[1]["logs"]  # trained in a call of the group, copy 1 only
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


def test_weight_features_and_rollback_follow_the_single_env() -> None:
    """Featurizer v2 reads each copy's own weights; a rollback puts back its optimizer state."""
    from fitpilot.controller.actions import DiscreteActions
    from fitpilot.controller.features import FeaturizerConfig

    halve, keep, x15, double, rollback = 0, 1, 2, 3, 5
    actions = [double, double, rollback, keep, x15, rollback, halve]
    settings = dict(featurizer=FeaturizerConfig(version=2), actions=DiscreteActions.v2())
    venv = BatchedVecEnv([TASKS[0]], 2, env_kwargs=settings)
    try:
        venv.seed(5)
        obs = venv.reset()
        trajectories = [[(obs[i], 0.0, venv.reset_infos[i]["logs"])] for i in range(2)]
        for action in actions:
            venv.step_async(np.array([action, keep]))
            obs, rewards, dones, infos = venv.step_wait()
            assert not dones.any()
            for i in range(2):
                trajectories[i].append((obs[i], float(rewards[i]), infos[i]["logs"]))
    finally:
        venv.close()
    single_env = KerasTrainingEnv(tasks=[TASKS[0]], **settings)
    try:
        for i, copy_actions in enumerate([actions, [keep] * len(actions)]):
            single = single_trajectory(single_env, 5 + i, copy_actions)
            for batched_step, single_step in zip(trajectories[i], single, strict=True):
                assert_same(batched_step, single_step)
    finally:
        single_env.close()
    assert trajectories[0][0][0].shape == (FeaturizerConfig(version=2).size,)


def test_groups_in_worker_processes_act_as_one_group() -> None:
    """Two worker processes of 2 copies: env k seeded s + k, as in one group of 4."""
    from fitpilot.agents.batched_vecenv import make_batched_workers
    from fitpilot.agents.config import build_config
    from fitpilot.agents.process_vecenv import ProcessGroupsVecEnv

    def run(processes: int) -> tuple[list, list, list]:
        config = build_config({
            "tasks": "tests.user_tasks:TASKS", "n_envs": 4, "vec": "batched",
            "processes": processes, "seed": 1,
        })
        config.check()
        venv = make_batched_workers(config)
        try:
            assert isinstance(venv.venv, ProcessGroupsVecEnv) == (processes > 1)
            venv.seed(21)
            steps, infos = [(venv.reset(), np.zeros(4), np.zeros(4, bool))], []
            for action in [RAISE, STOP, KEEP, LOWER, KEEP]:
                venv.step_async(np.array([action, KEEP, action, LOWER]))
                obs, rewards, dones, step_infos = venv.step_wait()
                steps.append((obs, rewards, dones))
                infos.append([(info["task"], info["epoch"]) for info in step_infos])
            rates = venv.get_attr("initial_learning_rate", [3, 0, 2])
            assert venv.env_method("sample_learning_rate", TASKS[0], indices=[2, 1]) != []
            return steps, infos, rates
        finally:
            venv.close()

    one, one_infos, one_rates = run(1)
    two, two_infos, two_rates = run(2)
    assert two_infos == one_infos and two_rates == pytest.approx(one_rates)
    assert one[2][2].tolist() == [True, False, True, False]  # the stops reset
    for (obs_1, rewards_1, dones_1), (obs_2, rewards_2, dones_2) in zip(one, two, strict=True):
        np.testing.assert_allclose(obs_2, obs_1, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(rewards_2, rewards_1, rtol=1e-4, atol=1e-6)
        assert dones_2.tolist() == dones_1.tolist()


def _failing_group() -> BatchedVecEnv:
    raise ValueError("no such suite")


def test_an_error_in_a_worker_process_comes_back_with_its_traceback() -> None:
    from fitpilot.agents.process_vecenv import ProcessGroupsVecEnv

    with pytest.raises(ValueError, match="no such suite") as raised:
        ProcessGroupsVecEnv([_failing_group])
    assert any("_failing_group" in note for note in raised.value.__notes__)


def test_a_lone_copy_of_a_recurrent_model_trains() -> None:
    """A call of one copy (a new episode's first epoch) of a GRU: pfor failed on it."""
    from fitpilot.envs.loading import load_tasks

    gru = next(task for task in load_tasks("train") if task.name == "sine_gru")
    group = BatchedEpochRunner(dataclasses.replace(gru, epochs=2), 8, **FAST)
    try:
        assert group.lone_calls
        for index in range(8):
            group.reset_copy(index, seed=index, learning_rate=gru.learning_rate)
        logs = group.run_epochs(np.arange(8) == 0)  # a call of copy 0 alone
        assert np.isfinite(logs[0]).all()
        assert group.epochs.tolist() == [1] + [0] * 7
    finally:
        group.close()


def test_the_processes_setting_is_checked() -> None:
    from fitpilot.agents.config import TrainError, build_config

    with pytest.raises(TrainError, match="splits the copies of `vec='batched'`"):
        build_config({"processes": 2}).check()
    with pytest.raises(TrainError, match=r"`processes` \(5\) must be <= `n_envs` \(4\)"):
        build_config({"vec": "batched", "n_envs": 4, "processes": 5}).check()
    with pytest.raises(TrainError, match="must be >= 0"):
        build_config({"vec": "batched", "processes": -1}).check()
    config = build_config({"vec": "batched", "n_envs": 1, "processes": 0})
    config.check()
    assert config.batched_processes() == 1


# --- mixing tasks in lanes ------------------------------------------------------------

LONG = [dataclasses.replace(task, epochs=30) for task in TASKS]  # no episode ends by budget
THIRD = dataclasses.replace(TASKS[0], name="user_mlp_b", learning_rate=0.003, epochs=30)


@pytest.mark.parametrize("switch", ["cut", "pause"])
def test_lanes_on_different_tasks_follow_single_envs_of_the_same_seeds(switch: str) -> None:
    """Two lanes of 2 copies on three tasks, turns of 2 steps: each copy's run, paused
    and resumed (or cut), gives the observations and rewards of a single env of its seed."""
    tasks = [LONG[0], LONG[1], THIRD]
    venv = BatchedVecEnv(tasks, 4, task_steps=2, seed=3, lanes=2, task_switch=switch, **FAST)
    rng = np.random.default_rng(0)
    runs: dict[tuple[str, int, int], list] = {}  # (task, copy, episode) -> [(action, obs, reward)]
    episode: dict[tuple[str, int], int] = {}
    try:
        venv.seed(40)
        obs = venv.reset()
        current = {}
        for index in range(4):
            name, copy = venv.get_attr("task", [index])[0].name, index % 2
            episode[name, copy] = 0
            current[index] = (name, copy)
            runs[name, copy, 0] = [(None, obs[index], 0.0)]
        seen = set()
        for _ in range(9):
            actions = rng.choice([LOWER, KEEP, RAISE], size=4)
            obs, rewards, dones, infos = venv.step(actions)
            for index in range(4):
                name, copy = current[index]
                last = infos[index]["terminal_observation"] if dones[index] else obs[index]
                runs[name, copy, episode[name, copy]].append(
                    (int(actions[index]), last, float(rewards[index]))
                )
                assert dones[index] == (infos[index]["TimeLimit.truncated"])  # only turns end
                if dones[index]:
                    name = venv.get_attr("task", [index])[0].name
                    current[index] = (name, copy)
                    resumed = RESUMED_FRAMES in infos[index]
                    assert resumed == (switch == "pause" and (name, copy) in episode)
                    assert infos[index].get(PAUSED, False) == (switch == "pause")
                    if not resumed:
                        episode[name, copy] = episode.get((name, copy), -1) + 1
                        runs[name, copy, episode[name, copy]] = [(None, obs[index], 0.0)]
                    else:
                        np.testing.assert_array_equal(
                            obs[index], runs[name, copy, episode[name, copy]][-1][1]
                        )
                    seen.add(name)
    finally:
        venv.close()
    assert seen == {task.name for task in tasks}  # every task took a lane
    # turns of 2 steps: a run of more than 2 steps went on over a pause
    assert any(len(run) > 3 for run in runs.values()) == (switch == "pause")
    singles = {task.name: KerasTrainingEnv(tasks=[task]) for task in tasks}
    try:
        for (name, copy, number), run in runs.items():
            single, task_index = singles[name], [task.name for task in tasks].index(name)
            obs_1, _ = single.reset(seed=40 + copy + 7919 * task_index)
            for _ in range(number):  # earlier episodes of that copy, cut: same seed sequence
                obs_1, _ = single.reset()
            np.testing.assert_allclose(run[0][1], obs_1, rtol=1e-4, atol=1e-5)
            for action, obs, reward in run[1:]:
                obs_1, reward_1, *_ = single.step(action)
                np.testing.assert_allclose(obs, obs_1, rtol=1e-4, atol=1e-5)
                assert reward == pytest.approx(reward_1, rel=1e-4, abs=1e-6)
    finally:
        for single in singles.values():
            single.close()


@pytest.mark.parametrize("switch", ["cut", "pause"])
def test_ppo_bootstraps_the_episodes_a_turn_ends(switch: str) -> None:
    """What PPO stores for a step that ends a turn: its reward plus gamma times the value of
    the episode's last observation (stacked and normalised, as the policy saw it); an
    episode that its budget ends gets no bootstrap (SB3 reads ``TimeLimit.truncated``)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from fitpilot.agents.config import build_config
    from fitpilot.agents.train import new_model
    from fitpilot.agents.vecenv import wrap

    steps, n = 6, 4
    config = build_config(
        {"tasks": "tests.user_tasks:TASKS", "n_envs": n, "vec": "batched", "lanes": 2},
        hp={"n_steps": steps, "batch_size": 12, "n_epochs": 1, "learning_rate": 0.0},
    )
    tasks = [SHORT, TASKS[1], THIRD]
    workers = BatchedVecEnv(tasks, n, task_steps=2, lanes=2, task_switch=switch, **FAST)
    venv = wrap(VecMonitor(workers), config)
    seen: list[tuple[np.ndarray, np.ndarray, list[dict]]] = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:  # before SB3 adds the bootstrap to the rewards
            rewards, dones = self.locals["rewards"], self.locals["dones"]
            seen.append((rewards.copy(), dones.copy(), self.locals["infos"]))
            return True

    try:
        model = new_model(config, venv)
        model.learn(steps * n, callback=Record())
        buffer = model.rollout_buffer
        ends = {"truncated": 0, "terminated": 0}
        for step, (rewards, dones, infos) in enumerate(seen):
            for index in range(n):
                expected = float(rewards[index])
                if dones[index] and infos[index]["TimeLimit.truncated"]:
                    last = torch.as_tensor(infos[index]["terminal_observation"][None])
                    with torch.no_grad():
                        value = float(model.policy.predict_values(last)[0, 0])
                    expected += model.gamma * value
                    ends["truncated"] += 1
                elif dones[index]:
                    ends["terminated"] += 1
                assert buffer.rewards[step, index] == pytest.approx(expected, rel=1e-5, abs=1e-6)
                if step + 1 < steps:
                    assert buffer.episode_starts[step + 1, index] == dones[index]
        assert ends["truncated"] > 0 and ends["terminated"] > 0
    finally:
        venv.close()


def test_the_frame_stack_of_a_resumed_episode_holds_its_earlier_frames() -> None:
    from gymnasium import spaces
    from stable_baselines3.common.vec_env import VecEnv as VecEnv_

    from fitpilot.agents.batched_vecenv import ResumingFrameStack

    class Scripted(VecEnv_):
        """Two envs; env 1 resumes an episode whose frames were 1, 2, then shows 3."""

        def __init__(self) -> None:
            super().__init__(2, spaces.Box(-9, 9, (2,), np.float32), spaces.Discrete(2))

        def reset(self) -> np.ndarray:
            return np.zeros((2, 2), np.float32)

        def step_async(self, actions: np.ndarray) -> None:
            pass

        def step_wait(self) -> tuple:
            last = np.full(2, 7, np.float32)
            resumed = {"terminal_observation": last, RESUMED_FRAMES: np.array([[1, 1], [2, 2]])}
            obs = np.array([[5, 5], [3, 3]], np.float32)
            return obs, np.zeros(2), np.array([False, True]), [{}, resumed]

        def get_attr(self, attr_name: str, indices: object = None) -> list:
            return [None, None]

        close = set_attr = env_method = env_is_wrapped = lambda self, *args, **kwargs: None

    stack = ResumingFrameStack(Scripted(), 3)
    stack.reset()
    obs, _, _, infos = stack.step(np.zeros(2, int))
    assert obs[0].tolist() == [0, 0, 0, 0, 5, 5]  # an ongoing episode: as VecFrameStack
    assert obs[1].tolist() == [1, 1, 2, 2, 3, 3]  # resumed: its two frames before 3
    assert infos[1]["terminal_observation"].tolist() == [0, 0, 0, 0, 7, 7]


def test_the_lane_settings_are_checked() -> None:
    from fitpilot.agents.config import TrainError, build_config

    with pytest.raises(TrainError, match="`lanes`, `task_switch` set how the copies"):
        build_config({"lanes": 2, "task_switch": "pause"})
    with pytest.raises(TrainError, match=r"`lanes` \(3\) must be >= 1 and divide `n_envs` \(16\)"):
        build_config({"vec": "batched", "n_envs": 16, "lanes": 3})
    with pytest.raises(TrainError, match=r"`lanes` \(2\) must be a multiple of the worker proc"):
        build_config({"vec": "batched", "n_envs": 12, "lanes": 2, "processes": 3})
    with pytest.raises(TrainError, match="unknown `task_switch` 'stop'; use one of cut, pause"):
        build_config({"vec": "batched", "task_switch": "stop"})
    with pytest.raises(TrainError, match="`turn_budgets` must be > 0"):
        build_config({"vec": "batched", "turn_budgets": 0})
    with pytest.raises(TrainError, match="`lanes` set how the copies"):  # Ray: one env per actor
        build_config({"backend": "ray", "lanes": 2})
    with pytest.raises(ValueError, match=r"lanes \(3\) must be <= the number of tasks \(2\)"):
        BatchedVecEnv(TASKS, 3, lanes=3, **FAST)
    config = build_config({"vec": "batched", "n_envs": 16, "lanes": 4, "processes": 2})
    assert (config.lanes, config.turn_budgets, config.task_switch) == (4, 4.0, "cut")


def test_the_factory_builds_lanes_and_the_resuming_frame_stack() -> None:
    """make_workers, the one factory, passes the lane settings on; wrap stacks with
    ResumingFrameStack."""
    from fitpilot.agents.batched_vecenv import ResumingFrameStack
    from fitpilot.agents.config import build_config
    from fitpilot.agents.vecenv import make_workers, wrap

    config = build_config(
        {
            "tasks": "tests.user_tasks:TASKS",
            "vec": "batched",
            "n_envs": 4,
            "lanes": 2,
            "turn_budgets": 1,
            "task_switch": "pause",
        }
    )
    workers = make_workers(config)
    try:
        venv = workers.venv
        assert isinstance(venv, BatchedVecEnv)
        settings = (len(venv._lanes), venv.copies, venv.task_switch, venv.turn_budgets)
        assert settings == (2, 2, "pause", 1)
        assert isinstance(wrap(workers, config).venv, ResumingFrameStack)
    finally:
        workers.close()
