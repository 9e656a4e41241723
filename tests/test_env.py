"""KerasTrainingEnv: gymnasium/SB3 env checks, rewards, divergence, seeded reproducibility."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check
from stable_baselines3.common.env_checker import check_env as sb3_check

from fitpilot.agents.config import EnvSettings
from fitpilot.controller.actions import DiscreteActions
from fitpilot.controller.features import Featurizer
from fitpilot.envs import ENV_ID
from fitpilot.envs.env import EnvError, KerasTrainingEnv
from fitpilot.envs.tasks import TaskError
from tests.user_tasks import TASKS

KEEP, STOP = 1, 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env() -> KerasTrainingEnv:
    environment = KerasTrainingEnv(tasks=TASKS)
    yield environment
    environment.close()


def run_episode(env: KerasTrainingEnv, seed: int, actions: list[int], **options):
    obs, info = env.reset(seed=seed, options=options)
    trajectory = [(obs, 0.0, info["learning_rate"])]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trajectory.append((obs, reward, info["learning_rate"]))
        if terminated or truncated:
            break
    return trajectory, info


def test_gymnasium_and_sb3_check_env(env: KerasTrainingEnv) -> None:
    gym_check(env, skip_render_check=True)
    sb3_check(env, warn=True)


def test_registered_id_makes_the_env() -> None:
    made = gymnasium.make(ENV_ID, tasks=TASKS)
    try:
        assert isinstance(made.unwrapped, KerasTrainingEnv)
    finally:
        made.close()


def test_seeded_resets_reproduce_the_trajectory(env: KerasTrainingEnv) -> None:
    actions = [0, 2, KEEP, 2, 0]
    first, _ = run_episode(env, 7, actions, task="user_mlp")
    second, _ = run_episode(env, 7, actions, task="user_mlp")
    other, _ = run_episode(env, 8, actions, task="user_mlp")
    for (obs_a, reward_a, lr_a), (obs_b, reward_b, lr_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert reward_a == reward_b and lr_a == lr_b
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=False))


def test_actions_change_the_learning_rate_and_stop_ends(env: KerasTrainingEnv) -> None:
    factors = DiscreteActions().factors
    obs, info = env.reset(seed=0, options={"task": "user_mlp", "learning_rate": 0.01})
    assert env.observation_space.contains(obs)
    assert info["epoch"] == 1
    _, _, _, _, info = env.step(0)
    assert info["learning_rate"] == pytest.approx(0.01 * factors[0], rel=1e-5)
    _, _, _, _, info = env.step(2)
    assert info["learning_rate"] == pytest.approx(0.01 * factors[0] * factors[2], rel=1e-5)
    assert info["epoch"] == 3
    _, reward, terminated, truncated, info = env.step(STOP)
    assert terminated and not truncated and reward == 0.0
    assert info["epoch"] == 3 and math.isfinite(info["test"]["loss"])


def test_rewards_sum_to_log_improvement_minus_epoch_cost(env: KerasTrainingEnv) -> None:
    _, first_info = env.reset(seed=3, options={"task": "user_regression"})
    rewards, terminated, info = 0.0, False, first_info
    while not terminated:
        _, reward, terminated, _, info = env.step(KEEP)
        rewards += reward
    budget = TASKS[1].epochs
    assert info["epoch"] == budget
    expected = math.log(first_info["best"] / info["best"]) - env.epoch_cost * (budget - 1)
    assert rewards == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert info["best"] <= first_info["best"]


def test_budget_ends_the_episode_with_test_metrics(env: KerasTrainingEnv) -> None:
    _, info = run_episode(env, 1, [KEEP] * 100, task="user_mlp")
    assert info["epoch"] == TASKS[0].epochs
    assert set(info["test"]) == {"loss", "accuracy"}
    assert 1 <= info["best_epoch"] <= info["epoch"]


def test_divergence_ends_with_the_penalty_not_an_exception() -> None:
    env = KerasTrainingEnv(tasks=[TASKS[1]], divergence_penalty=2.5, max_lr=1e30)
    try:
        obs, info = env.reset(seed=0, options={"learning_rate": 0.01})
        assert not info["diverged"]
        terminated, steps = False, 0
        while not terminated and steps < 60:
            obs, reward, terminated, _, info = env.step(2)  # raise x3 every epoch
            steps += 1
        assert terminated and info["diverged"] and reward == -2.5
        assert info["epoch"] < TASKS[1].epochs
        assert np.all(np.isfinite(obs)) and obs[-1] == 1.0  # the nonfinite flag
    finally:
        env.close()


def test_sampled_starting_learning_rates_span_the_factor_range() -> None:
    env = KerasTrainingEnv(tasks=[TASKS[0]], lr_factor_range=(0.01, 100.0))
    try:
        factors = []
        for seed in range(12):
            _, info = env.reset(seed=seed)
            factors.append(info["initial_learning_rate"] / TASKS[0].learning_rate)
        assert min(factors) >= 0.01 * 0.999 and max(factors) <= 100 * 1.001
        assert max(factors) / min(factors) > 10
    finally:
        env.close()


def test_observation_has_the_featurizer_size(env: KerasTrainingEnv) -> None:
    assert env.observation_space.shape == (Featurizer.size,)


def test_a_plain_fit_with_dropout_runs_after_the_env_in_the_same_process() -> None:
    """The env leaves TensorFlow's op determinism as it found it (off), in a fresh process."""
    code = """
import keras, numpy as np
from fitpilot.envs.env import KerasTrainingEnv
from tests.user_tasks import TASKS
env = KerasTrainingEnv(tasks=TASKS)
env.reset(seed=0)
env.step(1)
env.close()
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                          keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(np.random.rand(32, 4), np.arange(32) % 3, epochs=2, verbose=0)
print("fit ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "FITPILOT_THREADS": "1"}, check=False,
    )
    assert result.returncode == 0 and result.stdout == "fit ok\n", result.stderr[-1500:]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, from the repository root, with one TF thread."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "FITPILOT_THREADS": "1"}, check=False,
    )


def test_gymnasium_make_works_after_a_plain_import_fitpilot() -> None:
    """Registered once fitpilot and gymnasium are both imported, in either order; cheaply."""
    made = run_python(f"""
import sys
import fitpilot
assert "gymnasium" not in sys.modules  # import fitpilot does not pay for gymnasium
import gymnasium
assert {ENV_ID!r} in gymnasium.registry and "tensorflow" not in sys.modules
env = gymnasium.make({ENV_ID!r}, tasks="tests.user_tasks:TASKS")
env.reset(seed=0)
env.close()
print("made")
""")
    assert made.returncode == 0 and made.stdout == "made\n", made.stderr[-1500:]
    other_order = run_python(f"import gymnasium, fitpilot; print({ENV_ID!r} in gymnasium.registry)")
    assert other_order.stdout == "True\n", other_order.stderr[-1500:]


def test_step_after_the_end_of_an_episode_needs_a_reset(env: KerasTrainingEnv) -> None:
    env.reset(seed=0, options={"task": "user_mlp"})
    assert env.step(STOP)[2]
    with pytest.raises(gymnasium.error.ResetNeeded, match="call reset"):
        env.step(KEEP)
    _, info = run_episode(env, 1, [KEEP] * 100, task="user_mlp")
    assert info["epoch"] == TASKS[0].epochs  # the budget ended it
    with pytest.raises(gymnasium.error.ResetNeeded, match="call reset"):
        env.step(KEEP)
    with pytest.raises(gymnasium.error.ResetNeeded, match="before step"):
        KerasTrainingEnv(tasks=TASKS).step(KEEP)


@pytest.mark.parametrize(
    "action",
    [1.5, "1", True, np.bool_(True), None, 4, -1, np.float32(1), np.array([1]), np.array([[1]]),
     np.array(1.0), [1]],
    ids=repr,
)
def test_actions_outside_the_action_space_are_refused(env: KerasTrainingEnv, action) -> None:
    env.reset(seed=0, options={"task": "user_mlp"})
    with pytest.raises(EnvError, match=r"is not in the action space Discrete\(4\); give an int "
                                       r"in 0..3 \(lower, keep, raise, stop\)"):
        env.step(action)
    for valid in (KEEP, np.int64(KEEP), np.array(KEEP)):
        assert env.step(valid)[4]["action"] == "keep"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"task": 99}, TaskError, "reset option `task` is 99, outside 0..1"),
        ({"task": -1}, TaskError, "reset option `task` is -1, outside 0..1"),
        ({"task": True}, TaskError, "must be a task name or index, got True"),
        ({"task": "nope"}, TaskError, "no task named 'nope'"),
        ({"lr_factor": 0}, EnvError, "`lr_factor` must be a positive finite number, got 0"),
        ({"lr_factor": -2.0}, EnvError, "`lr_factor` must be a positive finite number"),
        ({"lr_factor": math.inf}, EnvError, "`lr_factor` must be a positive finite number"),
        ({"lr_factor": math.nan}, EnvError, "`lr_factor` must be a positive finite number"),
        ({"lr_factor": "2"}, EnvError, "`lr_factor` must be a positive finite number"),
        ({"learning_rate": 0.0}, EnvError, "`learning_rate` must be a positive finite number"),
        ({"learning_rate": 1e-3, "lr_factor": 2.0}, EnvError, "not both"),
        ({"lr_factr": 2.0}, EnvError,
         "unknown reset option(s) lr_factr; the options are task, learning_rate, lr_factor"),
        ([("task", 0)], EnvError, "reset options must be a dict"),
    ],
    ids=str,
)
def test_bad_reset_options_are_refused(
    env: KerasTrainingEnv, options, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        env.reset(seed=0, options=options)


def test_recipe_defaults_are_the_env_defaults() -> None:
    settings, parameters = EnvSettings(), inspect.signature(KerasTrainingEnv).parameters
    for name in ("epoch_cost", "divergence_penalty", "lr_factor_range", "lr_distribution",
                 "tuned_fraction", "min_lr", "max_lr"):
        assert getattr(settings, name) == parameters[name].default, name
    assert settings.action_scheme() == DiscreteActions()


def test_every_attribute_is_created_in_init() -> None:
    env = KerasTrainingEnv(tasks=[TASKS[0]])
    try:
        created = set(vars(env))
        env.reset(seed=0)
        env.step(KEEP)
        env.step(STOP)
        later = {name for name in set(vars(env)) - created if not name.startswith("_np_random")}
        assert later == set()
    finally:
        env.close()


def test_the_docstring_spec_lists_every_feature_and_action() -> None:
    doc = KerasTrainingEnv.__doc__
    for section in ("Action Space", "Observation Space", "Rewards", "Episode End", "Arguments"):
        assert f"## {section}" in doc
    rows = [line.split("|")[1:3] for line in doc.splitlines() if line.strip().startswith("| ")]
    table = {(num.strip(), name.strip()) for num, name in rows}
    assert {(str(i), name) for i, name in enumerate(Featurizer.feature_names)} <= table
    assert {(str(i), name) for i, name in enumerate(DiscreteActions().names)} <= table
    assert f'gymnasium.make("{ENV_ID}"' in doc
    assert not re.search(r"\{[a-z_]+\}", doc)  # every placeholder filled
