"""Agent training: recipes, export parity torch -> numpy, a short real run, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import keras
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fitpilot.agents.config import (
    ALGORITHMS,
    TrainConfig,
    TrainError,
    algorithm_kwargs,
    build_config,
    check_hyperparameters,
    parse_overrides,
    read_config_file,
    run_differences,
)
from fitpilot.agents.export import ExportError, export_bundle
from fitpilot.agents.train import RunFolder, new_model, train
from fitpilot.cli import app
from fitpilot.controller.bundle import load_bundle
from fitpilot.controller.callback import LearnedController
from fitpilot.controller.features import Featurizer

torch.set_num_threads(1)  # TensorFlow and torch share the 2 cores

TINY_TASKS = "tests.user_tasks:TASKS"  # 40 rows, 4 features: an epoch takes a millisecond


def run_cli(*args: str) -> tuple[int, str]:
    """``fitpilot train ARGS`` in this process: (exit code, stdout + stderr)."""
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.output


# --- recipes -------------------------------------------------------------------------


def test_overrides_are_yaml_values_and_dotted_keys_nest() -> None:
    assert parse_overrides(
        ["n_steps=64", "policy_kwargs.net_arch=[32, 32]", "policy_kwargs.activation_fn=relu"],
        "--hp",
    ) == {"n_steps": 64, "policy_kwargs": {"net_arch": [32, 32], "activation_fn": "relu"}}
    with pytest.raises(TrainError, match="key=value"):
        parse_overrides(["n_steps"], "--hp")


def test_numbers_read_as_written_in_overrides_and_config_files(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; a user and YAML 1.2 read a float.
    assert parse_overrides(
        ["learning_rate=1e-4", "a.b=[2E3, -1e+2, .5e1]", "c=1_000", "d=abc"], "--hp"
    ) == {"learning_rate": 1e-4, "a": {"b": [2000.0, -100.0, 5.0]}, "c": 1000, "d": "abc"}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("timesteps: 1e5\nhp:\n  learning_rate: 1e-4\nenv:\n  epoch_cost: 2e-2\n")
    config = build_config(read_config_file(recipe))
    assert config.timesteps == 100_000 and config.hp["learning_rate"] == 1e-4
    assert config.env.epoch_cost == 0.02 and isinstance(config.env.epoch_cost, float)
    check_hyperparameters(config)


def test_recipe_layers_defaults_file_options_then_overrides() -> None:
    recipe = {"suite": "holdout", "hp": {"n_steps": 64, "gamma": 0.9}, "env": {"epoch_cost": 0.05}}
    config = build_config(
        recipe, {"tasks": TINY_TASKS, "seed": 3}, hp={"gamma": 0.95}, env={"frame_stack": 1}
    )
    assert config.algo == "ppo" and config.seed == 3
    assert (config.tasks, config.suite) == (TINY_TASKS, None)  # --tasks replaces the suite
    assert config.hp["n_steps"] == 64 and config.hp["gamma"] == 0.95
    assert config.hp["batch_size"] == 64  # from agents/hyperparams/ppo.yaml
    assert config.hp["policy_kwargs"] == {"net_arch": [64, 64], "activation_fn": "tanh"}
    assert config.env.epoch_cost == 0.05 and config.env.frame_stack == 1
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert run_differences(config, config.to_dict()) == []
    assert run_differences(build_config({"hp": {"gamma": 0.5}}), config.to_dict())
    # A run written before `env.reward` existed trained with its default: the same recipe.
    older = config.to_dict()
    del older["env"]["reward"]
    assert run_differences(config, older) == []
    relative = TrainConfig.from_dict({**older, "env": {**older["env"], "reward": "relative"}})
    assert run_differences(relative, older) == ["env.reward: 'absolute' -> 'relative'"]


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_packaged_hyperparameters_are_accepted_by_their_algorithm(algo: str) -> None:
    config = build_config({"algo": algo})
    assert config.hyperparams_version >= 1
    assert (config.stop_bias < 0) == (algo != "dqn")  # DQN explores uniformly: no stop bias
    check_hyperparameters(config)
    assert "policy_kwargs" in algorithm_kwargs(config)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"algo": "sac"}, "unknown algorithm 'sac'; use one of ppo, a2c, dqn"),
        ({"timestep": 5}, "unknown config keys timestep"),
        ({"env": {"epoch_costs": 1}}, "unknown env keys epoch_costs"),
        ({"timesteps": "many"}, "timesteps must be an integer"),
        ({"algo": "dqn", "env": {"actions": {"kind": "continuous"}}}, "DQN needs discrete"),
        ({"env": {"frame_stack": 0}}, "frame_stack must be >= 1"),
        ({"env": {"epoch_cost": "2e-2x"}}, r"env.epoch_cost must be a number, got '2e-2x'"),
        ({"env": {"frame_stack": 2.5}}, "env.frame_stack must be an integer, got 2.5"),
        ({"env": {"norm_reward": "maybe"}}, "env.norm_reward must be true or false"),
        ({"env": {"lr_factor_range": 3}}, r"env.lr_factor_range must be a list of 2 numbers"),
        ({"env": {"lr_factor_range": [1, "a"]}}, r"env.lr_factor_range\[1\] must be a number"),
        ({"env": {"actions": 3}}, "env.actions must be a mapping of key: value, got 3"),
        ({"env": "x"}, "env must be a mapping"),
        ({"eval_factors": [1, "x"]}, r"eval_factors\[1\] must be a number, got 'x'"),
        ({"stop_bias": True}, "stop_bias must be a number, got True"),
        ({"algo": "dqn", "stop_bias": -3}, "`stop_bias` applies to PPO and A2C; set it to 0"),
    ],
)
def test_bad_recipes_are_refused(layer: dict, message: str) -> None:
    with pytest.raises(TrainError, match=message):
        build_config(layer)


def test_hyperparameters_the_algorithm_does_not_take_are_named_with_the_valid_ones() -> None:
    with pytest.raises(TrainError, match=r"PPO takes no hyperparameter n_step; .*\bn_steps\b"):
        check_hyperparameters(build_config(hp={"n_step": 64}))
    with pytest.raises(TrainError, match=r"DQN takes no hyperparameter n_epochs; .*buffer_size"):
        check_hyperparameters(build_config({"algo": "dqn"}, hp={"n_epochs": 3}))
    with pytest.raises(TrainError, match=r"no policy_kwargs shared; .*net_arch"):
        check_hyperparameters(build_config(hp={"policy_kwargs": {"shared": [64]}}))
    with pytest.raises(TrainError, match="activation_fn 'elu' cannot be exported"):
        check_hyperparameters(build_config(hp={"policy_kwargs": {"activation_fn": "elu"}}))


# --- export: the numpy policy acts like the SB3 policy ----------------------------------


class FakeEpochs(gymnasium.Env):
    """The training env's spaces; random raw observations, episodes of 1-6 steps.

    Every observation it emits is appended to :attr:`emitted`, oldest first.
    """

    def __init__(self, actions: gymnasium.Space | None = None) -> None:
        self.observation_space = gymnasium.spaces.Box(-5.0, 5.0, (Featurizer.size,), np.float32)
        self.action_space = actions or gymnasium.spaces.Discrete(4)
        self.emitted: list[np.ndarray] = []
        self._rng = np.random.default_rng(1)
        self._left = 0

    def _emit(self) -> np.ndarray:
        obs = (self._rng.normal(size=Featurizer.size) * 2).astype(np.float32)
        self.emitted.append(obs)
        return obs

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201
        super().reset(seed=seed)
        self._left = int(self._rng.integers(1, 7))
        return self._emit(), {}

    def step(self, action):  # noqa: ANN001, ANN201
        self._left -= 1
        return self._emit(), 0.0, self._left <= 0, False, {}


def untrained_model(algo: str, frame_stack: int = 2, actions: gymnasium.Space | None = None,
                    **hp: object):
    """An SB3 model on the training wrapper stack of :class:`FakeEpochs`, random statistics."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize

    config = build_config({"algo": algo}, hp=hp, env={"frame_stack": frame_stack})
    venv = VecNormalize(VecFrameStack(DummyVecEnv([lambda: FakeEpochs(actions)]), frame_stack))
    rng = np.random.default_rng(2)
    size = Featurizer.size * frame_stack
    venv.obs_rms.mean = rng.normal(size=size)
    venv.obs_rms.var = rng.uniform(0.05, 4.0, size=size)
    venv.training = False  # keep the statistics fixed while stepping
    model = new_model(config, venv)
    return model, config


@pytest.mark.parametrize(
    ("algo", "continuous"), [("ppo", False), ("a2c", False), ("dqn", False), ("ppo", True)]
)
def test_bundle_policy_chooses_the_sb3_action_on_thousands_of_observations(
    algo: str, continuous: bool
) -> None:
    actions = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else None
    model, config = untrained_model(algo, actions=actions)
    if continuous:
        config.env.actions = {"kind": "continuous", "max_log10_factor": 0.5}
    bundle = export_bundle(model, config.env)
    assert bundle.frame_stack == 2
    assert bundle.policy.activation == ("relu" if algo == "dqn" else "tanh")
    assert len(bundle.policy.hidden) == 2
    raw = np.random.default_rng(3).normal(0, 3, size=(4000, Featurizer.size * 2))
    normalized = model.get_vec_normalize_env().normalize_obs(raw.astype(np.float32))
    np.testing.assert_allclose(bundle.normalization(raw), normalized, rtol=1e-5, atol=1e-5)
    expected, _ = model.predict(normalized, deterministic=True)
    chosen = bundle.policy.act(bundle.normalization(raw))
    if continuous:
        np.testing.assert_allclose(chosen, expected, atol=1e-5)
        assert np.abs(expected).max() > 0  # not trivially zero
    else:
        assert np.array_equal(chosen, expected)
        assert len(np.unique(expected)) > 1  # the comparison covers several actions


def test_deployed_pipeline_sees_what_the_agent_saw_across_episode_ends() -> None:
    model, config = untrained_model("ppo", frame_stack=3)
    venv = model.get_env()
    fake = venv.venv.venv.envs[0]  # VecNormalize(VecFrameStack(DummyVecEnv))
    bundle = export_bundle(model, config.env)
    pipeline = bundle.make_pipeline()
    obs = venv.reset()
    pipeline.reset()
    steps = 0
    for _ in range(60):
        deployed = pipeline(fake.emitted[-1])
        np.testing.assert_allclose(deployed, obs[0], rtol=1e-5, atol=1e-5)
        action, _ = model.predict(obs, deterministic=True)
        assert bundle.policy.act(deployed[None])[0] == action[0]
        obs, _, dones, _ = venv.step(action)
        steps += 1
        if dones[0]:
            pipeline.reset()  # a new run: zeros before its first epoch
    assert len(fake.emitted) > steps  # episodes ended and restarted within the loop


def test_architectures_a_bundle_cannot_hold_are_refused() -> None:
    import torch.nn as nn

    model, config = untrained_model("ppo")
    model.policy.mlp_extractor.policy_net[1] = nn.ELU()
    with pytest.raises(ExportError, match=r"policy_net\[1\] is ELU; .*Tanh or ReLU"):
        export_bundle(model, config.env)
    model, config = untrained_model("ppo")
    config.env.frame_stack = 1  # the settings disagree with the model's wrapper stack: fine,
    assert export_bundle(model, config.env).frame_stack == 2  # the model's own stack wins


# --- a short real training run ----------------------------------------------------------


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.glob("**/events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_short_training_run_resumes_and_refuses_bad_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "tasks": TINY_TASKS,
                "eval-tasks": "tests.user_tasks:ONE",  # option spelling works too
                "hp": {"n_steps": 64, "n_epochs": 2},
                "env": {"frame_stack": 2},
            }
        )
    )
    code, output = run_cli(
        "--config", str(recipe), "--timesteps", "256", "--n-envs", "2", "--out", str(out),
        "--eval-every", "128", "--checkpoint-every", "128", "--no-progress",
    )
    assert code == 0, output
    folder = RunFolder(out)
    summary = json.loads(folder.summary.read_text())
    assert summary["timesteps"] == 256 and summary["n_envs"] == 2
    assert summary["env_steps_per_second"] > 0
    assert [e["timesteps"] for e in summary["evaluations"]] == [128, 256]
    last = summary["last_evaluation"]
    assert last["episodes"] == 3 and 0 < last["epochs_share"] <= 1 and last["test_loss"] > 0

    bundle = load_bundle(folder.bundle)
    assert bundle.content_hash == summary["bundle_hash"]
    assert bundle.frame_stack == 2 and len(bundle.normalization.mean) == 2 * Featurizer.size
    assert bundle.metadata["algo"] == "ppo" and bundle.metadata["timesteps"] == 256
    assert not np.allclose(bundle.normalization.var, 1.0)  # real statistics, not identity
    logits_bias = bundle.policy.head[1]
    assert logits_bias[-1] < logits_bias[:-1].min() - 2  # packaged stop_bias: stops start rare
    assert folder.model.is_file() and folder.normalization.is_file()
    assert folder.latest_checkpoint().steps == 256
    assert folder.checkpoint_file("", 128, "zip").is_file()
    stored = yaml.safe_load(folder.config.read_text())
    assert stored["tasks"] == TINY_TASKS and stored["hp"]["n_steps"] == 64
    tags = tensorboard_tags(folder.tensorboard)
    assert {"rollout/ep_rew_mean", "episode/return", "episode/length", "episode/log_test_loss",
            "episode/test_accuracy", "eval/log_best_val", "eval/epochs_share"} <= tags

    # Killed after the checkpoint at 128 steps: resume from there, keep counting.
    for kind, extension in (("", "zip"), ("vecnormalize_", "pkl")):
        folder.checkpoint_file(kind, 256, extension).unlink()
    config = build_config(stored, {"timesteps": 384, "n_envs": 1, "eval_every": 0})
    summary = train(config, out, resume=True)
    assert summary["timesteps"] == 384 and summary["session_timesteps"] == 256
    assert load_bundle(folder.bundle).metadata["timesteps"] == 384
    assert [e["timesteps"] for e in summary["evaluations"]] == [128]  # kept from before
    assert [p.name for p in folder.tensorboard.iterdir()] == ["run_1"]  # one continued run

    # Bad input on the run folder: one line, exit status 2.
    code, output = run_cli("--out", str(out), "--no-progress", "--hp", "gamma=0.5")
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1
    assert "holds a different run (hp.gamma" in output
    code, output = run_cli("--out", str(out), "--resume", "--hp", "gamma=0.5")
    assert code == 2 and "cannot resume" in output and "hp.gamma" in output
    code, output = run_cli("--out", str(out), "--resume", "--no-progress")
    assert code == 2 and "already has 384 steps" in output
    folder.checkpoint_file("", 384, "zip").write_bytes(b"not a zip file")
    code, output = run_cli("--out", str(out), "--resume", "--timesteps", "512", "--no-progress")
    assert code == 2 and output.startswith("error: cannot read checkpoint ")
    assert output.count("\n") == 1 and "rl_model_384_steps.zip" in output


# --- bad input at the command line ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "sac"], "error: unknown algorithm 'sac'; use one of ppo, a2c, dqn"),
        (["--hp", "n_step=64"], "error: PPO takes no hyperparameter n_step; it takes"),
        (["--hp", "n_steps"], "error: --hp takes key=value, got 'n_steps'"),
        (["--suite", "nope"], "error: unknown suite 'nope'"),
        (["--resume"], "error: nothing to resume"),
        (["--config", "missing.yaml"], "error: cannot read config file missing.yaml"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    code, output = run_cli(*args, "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 2, output
    assert output.startswith(message) and output.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_another_run_is_refused_unless_forced(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write_config(build_config({"tasks": TINY_TASKS, "seed": 1}))
    code, output = run_cli("--tasks", TINY_TASKS, "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "holds a different run (seed: 1 -> 0)" in output
    code, output = run_cli("--tasks", TINY_TASKS, "--seed", "1", "--out", str(tmp_path))
    assert code == 2 and "holds this run already; use --resume" in output
    code, output = run_cli("--out", str(tmp_path), "--resume", "--force")
    assert code == 2 and "not both" in output


def test_hyperparameter_values_the_algorithm_rejects_leave_no_run_behind(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = run_cli(
        "--tasks", TINY_TASKS, "--n-envs", "1", "--hp", "batch_size=1", "--out", str(out)
    )
    assert code == 2 and output.startswith("error: bad PPO hyperparameters: ")
    assert "batch_size" in output and output.count("\n") == 1
    assert RunFolder(out).stored_config() is None  # the corrected command needs no --force


@pytest.mark.slow
def test_a_v2_recipe_trains_and_exports_a_bundle_the_callback_runs(tmp_path: Path) -> None:
    """Featurizer v2 (weight signals) and the rollback scheme in a recipe, end to end."""
    out = tmp_path / "run"
    code, output = run_cli(
        "--tasks", "tests.user_tasks:ONE", "--timesteps", "64", "--n-envs", "1",
        "--eval-every", "0", "--hp", "n_steps=64", "--env", "featurizer.version=2",
        "--env", "actions.factors=[0.5, 1, 1.5, 2]", "--env", "actions.rollback=true",
        "--out", str(out), "--no-progress",
    )
    assert code == 0, output
    bundle = load_bundle(out / "controller.zip")
    assert bundle.featurizer.version == 2 and bundle.featurizer.size == 18
    assert bundle.policy.input_size == 18 * bundle.frame_stack
    assert yaml.safe_load((out / "config.yaml").read_text())["env"]["featurizer"]["version"] == 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    controller = LearnedController.load(out / "controller.zip")
    model.fit(x, x[:, :1], validation_split=0.25, epochs=3, verbose=0, callbacks=[controller])
    assert controller.decisions


@pytest.mark.slow
def test_the_v2_settings_train_batched_in_two_worker_processes(tmp_path: Path) -> None:
    """`--vec batched --processes 2` with featurizer v2 and rollback, from the command line."""
    out = tmp_path / "run"
    code, output = run_cli(
        "--tasks", TINY_TASKS, "--timesteps", "64", "--vec", "batched", "--n-envs", "4",
        "--processes", "2", "--eval-every", "0", "--hp", "n_steps=16", "--hp", "batch_size=32",
        "--env", "featurizer.version=2", "--env", "actions.factors=[0.5, 1, 1.5, 2]",
        "--env", "actions.rollback=true", "--out", str(out), "--no-progress",
    )
    assert code == 0, output
    bundle = load_bundle(out / "controller.zip")
    assert bundle.featurizer.version == 2 and bundle.actions.rollback
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["vec"], config["n_envs"], config["processes"]) == ("batched", 4, 2)
    assert json.loads((out / "summary.json").read_text())["timesteps"] >= 64
