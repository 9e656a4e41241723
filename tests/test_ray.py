"""The Ray backend (issue 8): RayVecEnv semantics, dead actors, benchmark and training on Ray.

One local Ray instance (2 CPUs) serves the whole module. The ``VecEnv`` tests
use a TensorFlow-free env (``tests/ray_tasks.py``), so their actors start in
about a second; the benchmark and training tests use the tiny tasks of
``tests/benchmark_tasks.py`` and ``tests/user_tasks.py``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv
from typer.testing import CliRunner

from fitpilot.agents.config import build_config
from fitpilot.agents.ray_vecenv import MAX_CONSECUTIVE_RESTARTS, RayVecEnv, make_ray_workers
from fitpilot.agents.train import RunFolder, train
from fitpilot.cli import app
from fitpilot.controller.bundle import load_bundle
from fitpilot.experiments.store import read_store
from fitpilot.ray_backend import (
    RayBackendError,
    RayOptions,
    check_capacity,
    connect,
    import_ray,
    parse_memory,
    ray_options,
    worker_slots,
)
from tests.bundles import write_random_bundle
from tests.ray_tasks import CRASH_MARKER, DIE_ON_START, counting_env

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

TINY_TASKS = "tests.user_tasks:TASKS"


@pytest.fixture(scope="module", autouse=True)
def markers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start Ray for the module; workers inherit the test markers' paths from this process."""
    folder = tmp_path_factory.mktemp("ray_markers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CRASH_MARKER, str(folder / "crashed"))
        patch.setenv(DIE_ON_START, str(folder / "die"))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield folder
        finally:
            ray.shutdown()


def wait_until_dead(actor: Any, seconds: float = 30) -> None:
    """Return once calls to ``actor`` fail as dead; ``ray.kill`` takes effect asynchronously."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the actor is still alive")


def kill(actor: Any) -> None:
    """``ray.kill(actor)``, returning once the actor is gone."""
    ray.kill(actor)
    wait_until_dead(actor)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


# --- RayVecEnv: the VecEnv interface ---------------------------------------------------


def test_ray_vecenv_steps_resets_and_seeds_like_dummy_vecenv() -> None:
    factories = [counting_env, counting_env]
    on_ray, dummy = RayVecEnv(factories, {"num_cpus": 0.5}), DummyVecEnv(factories)
    try:
        for venv in (on_ray, dummy):
            venv.seed(7)
            venv.set_options([{}, {"start": 5}])
        observations = on_ray.reset()
        np.testing.assert_array_equal(observations, dummy.reset())
        assert observations.shape == (2, 2) and observations[1, 0] == 5
        assert on_ray.reset_infos == dummy.reset_infos == [{"resets": 1}] * 2

        # env 0: three steps then action 1 at the time limit (terminated and truncated: a real
        # end); env 1: terminated at step 2, then cut by the time limit (truncated only).
        actions = [(0, 0), (0, 1), (0, 0), (1, 0), (0, 0), (0, 0)]
        ends = []
        for step, pair in enumerate(actions):
            got = on_ray.step(np.array(pair))
            want = dummy.step(np.array(pair))
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1].dtype == np.float32 and got[2].dtype == bool
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[2], want[2])
            for env, (info, expected) in enumerate(zip(got[3], want[3], strict=True)):
                assert info.keys() == expected.keys()
                assert info["TimeLimit.truncated"] == expected["TimeLimit.truncated"]
                if "terminal_observation" in expected:
                    np.testing.assert_array_equal(
                        info["terminal_observation"], expected["terminal_observation"]
                    )
                    assert got[0][env][1] == 0  # auto-reset: the new episode's first observation
                    ends.append((step, env, info["TimeLimit.truncated"]))
            assert on_ray.reset_infos == dummy.reset_infos
        assert ends == [(1, 1, False), (3, 0, False), (5, 1, True)]

        # Seeds and options are used by one reset only, as in DummyVecEnv.
        np.testing.assert_array_equal(on_ray.reset(), dummy.reset())
    finally:
        on_ray.close()
        dummy.close()


def test_ray_vecenv_attributes_methods_wrappers_rendering_and_close() -> None:
    factories = [counting_env, counting_env]
    on_ray, dummy = RayVecEnv(factories, {"num_cpus": 0.5}), DummyVecEnv(factories)
    try:
        assert on_ray.get_attr("max_steps") == [4, 4]
        on_ray.set_attr("max_steps", 2, indices=1)
        assert on_ray.get_attr("max_steps") == [4, 2] and on_ray.get_attr("max_steps", 1) == [2]
        assert on_ray.env_method("double", 3, indices=[0]) == [6]
        assert on_ray.env_method("double", value=4) == [8, 8]
        wrapper = gymnasium.wrappers.RecordEpisodeStatistics
        assert on_ray.env_is_wrapped(wrapper) == dummy.env_is_wrapped(wrapper) == [True, True]
        assert on_ray.env_is_wrapped(gymnasium.wrappers.TimeLimit) == [False, False]
        assert on_ray.has_attr("max_steps") and not on_ray.has_attr("no_such_attribute")
        with pytest.raises(AttributeError):
            on_ray.get_attr("no_such_attribute")

        assert on_ray.render_mode == dummy.render_mode == "rgb_array"
        on_ray.reset()
        dummy.reset()
        on_ray.step(np.array([0, 0]))
        dummy.step(np.array([0, 0]))
        image = on_ray.render()
        assert image.shape == (4, 3, 3) and image.max() == 1
        np.testing.assert_array_equal(image, dummy.render())
    finally:
        actors = list(on_ray.actors)
        on_ray.close()
        dummy.close()
    on_ray.close()  # twice is fine
    wait_until_dead(actors[0])


# --- RayVecEnv: a dead actor is replaced ---------------------------------------------------


def test_a_dead_actor_is_replaced_and_its_episode_restarted(markers: Path) -> None:
    venv = RayVecEnv([counting_env, counting_env], {"num_cpus": 0.5})
    try:
        venv.seed(1)
        venv.reset()
        before, *_ = venv.step(np.array([0, 0]))
        old_pid = ray.get(venv.actors[0].pid.remote())
        kill(venv.actors[0])
        with pytest.warns(RuntimeWarning, match="actor of environment 0 died"):
            observations, rewards, dones, infos = venv.step(np.array([0, 0]))
        assert dones.tolist() == [True, False] and rewards[0] == 0 and rewards[1] == 2
        assert infos[0]["actor_restarted"] and infos[0]["TimeLimit.truncated"]
        np.testing.assert_array_equal(infos[0]["terminal_observation"], before[0])
        assert observations[0, 1] == 0 and observations[1, 1] == 2  # a new episode; env 1 goes on
        assert ray.get(venv.actors[0].pid.remote()) != old_pid and venv.restarts == 1
        observations, *_ = venv.step(np.array([0, 0]))
        assert observations[:, 1].tolist() == [1, 3]

        # Lost between two steps and noticed by get_attr: the next step reports the restart.
        kill(venv.actors[1])
        with pytest.warns(RuntimeWarning, match="actor of environment 1 died"):
            assert venv.get_attr("max_steps") == [4, 4]
        observations, _, dones, infos = venv.step(np.array([0, 0]))
        assert dones.tolist() == [False, True] and infos[1]["actor_restarted"]
        assert observations[:, 1].tolist() == [2, 0] and venv.restarts == 2

        # A replacement that cannot even start: a clear error after a few attempts.
        (markers / "die").touch()
        kill(venv.actors[0])
        with (
            pytest.warns(RuntimeWarning),
            pytest.raises(RayBackendError, match=f"{MAX_CONSECUTIVE_RESTARTS + 1} times in a row"),
        ):
            venv.step(np.array([0, 0]))
    finally:
        (markers / "die").unlink(missing_ok=True)
        venv.close()


# --- plumbing: options, missing Ray, capacity -------------------------------------------------


def test_backend_options_memory_sizes_and_bad_input() -> None:
    assert ray_options("local") is None
    options = ray_options("ray", "auto", 0.5, "1.5GB")
    assert options == RayOptions("auto", 0.5, int(1.5 * 2**30))
    assert options.threads == 1 and ray_options("ray", worker_cpus=2).threads == 2
    assert options.remote_options() == {"num_cpus": 0.5, "memory": int(1.5 * 2**30)}
    assert [parse_memory(t) for t in ("512MB", "512m", "800", "2GB", "2g")] == [
        512 * 2**20, 512 * 2**20, 800 * 2**20, 2 * 2**30, 2 * 2**30,
    ]
    for bad in ("lots", "0", "-1GB", "2TB"):
        with pytest.raises(RayBackendError, match="bad `worker_memory`"):
            parse_memory(bad)
    with pytest.raises(RayBackendError, match="`worker_cpus` is for `backend='ray'`; add"):
        ray_options("local", worker_cpus=2)
    with pytest.raises(RayBackendError, match="`worker_cpus` must be a positive number"):
        ray_options("ray", worker_cpus=0)
    with pytest.raises(RayBackendError, match="unknown `backend` 'spark'"):
        ray_options("spark")


def test_the_local_backend_does_not_import_ray() -> None:
    code = (
        "import sys; import fitpilot.cli, fitpilot.experiments.benchmark, fitpilot.agents.train, "
        "fitpilot.agents.vecenv, fitpilot.ray_backend; "
        "fitpilot.ray_backend.ray_options('local'); assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_missing_ray_install_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayBackendError, match=r"pip install 'fitpilot\[ray\]'"):
        import_ray()


def test_an_unreachable_cluster_fails_fast_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    with pytest.raises(RayBackendError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1 "):
        connect(RayOptions(address="127.0.0.1:1"))
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    with pytest.raises(RayBackendError, match="cannot reach the Ray cluster at ray://"):
        connect(RayOptions())


def test_requests_larger_than_the_local_instance_are_refused() -> None:
    with pytest.raises(RayBackendError, match="asks for 4 CPUs .*, more than any Ray node has"):
        check_capacity(ray, RayOptions(worker_cpus=4), 1, "benchmark runs")
    with pytest.raises(RayBackendError, match="and 1024 GB .*more than any Ray node has"):
        check_capacity(ray, RayOptions(worker_memory=2**40), 1, "benchmark runs")
    with pytest.raises(RayBackendError, match="3 environments of 1 CPU .* fits 2; lower"):
        check_capacity(ray, RayOptions(), 3, "environments")
    check_capacity(ray, RayOptions(worker_cpus=0.5), 4, "environments")
    assert worker_slots(ray, RayOptions(worker_cpus=0.5)) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["benchmark", "--worker-cpus", "2"], "error: --worker-cpus is for --backend ray"),
        (["benchmark", "--backend", "ray", "--jobs", "2"], "error: --jobs is for the local"),
        (["benchmark", "--backend", "ray", "--worker-memory", "lots"], "error: bad --worker-mem"),
        (["train", "--backend", "spark"], "error: unknown --backend 'spark'"),
        (["train", "--backend", "ray", "--n-envs", "3"], "error: 3 environments (--n-envs) of"),
    ],
)
def test_bad_backend_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    code, output = cli(*args, "--tasks", TINY_TASKS, "--out", str(tmp_path / "out"))
    assert code == 2, output
    assert output.startswith(message) and output.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- the benchmark on Ray ---------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_on_ray_matches_local_survives_a_lost_worker_and_resumes(
    tmp_path: Path, markers: Path
) -> None:
    bundle = write_random_bundle(tmp_path / "controller.zip")
    common = [
        "benchmark", "--controller", str(bundle), "--tasks", "tests.ray_tasks:CRASH_ONCE",
        "--seeds", "1", "--lr-factors", "0.1,1", "--oracle-grid", "2", "--lr-reference", "default",
        "--strategies", "constant,early_stopping,learned",
    ]
    planned = 2 * 3 + 2
    on_ray = ["--out", str(tmp_path / "ray"), "--backend", "ray", "--worker-memory", "1GB"]
    code, output = cli(*common, *on_ray)
    assert code == 0, output
    assert (markers / "crashed").exists(), "no Ray worker died: the retry was not exercised"

    code, output = cli(*common, "--out", str(tmp_path / "local"))
    assert code == 0, output
    remote, local = read_store(tmp_path / "ray"), read_store(tmp_path / "local")
    assert remote.settings == local.settings
    assert len(remote.runs) == len(local.runs) == planned and not remote.skipped
    twins = {run.key: run for run in local.runs}
    for run in remote.runs:
        twin = twins.pop(run.key)
        assert run.epochs == twin.epochs
        assert run.test_loss == pytest.approx(twin.test_loss, rel=1e-3)
    assert not twins
    assert (tmp_path / "ray" / "report.md").is_file()

    # Killed after five runs: --resume runs the other three and keeps the five as they were.
    store = tmp_path / "ray" / "runs.jsonl"
    kept = b"".join(store.read_bytes().splitlines(keepends=True)[:6])
    store.write_bytes(kept)
    code, output = cli(*common, *on_ray, "--resume")
    assert code == 0, output
    assert f"resuming: 5 of {planned} runs" in output
    after = store.read_bytes()
    assert after.startswith(kept) and after.count(b"\n") == planned + 1
    assert len({run.key for run in read_store(tmp_path / "ray").runs}) == planned


# --- training on Ray ---------------------------------------------------------------------------


@pytest.mark.slow
def test_training_on_ray_survives_a_killed_actor(tmp_path: Path) -> None:
    recipe = {
        "tasks": TINY_TASKS,
        "eval_every": 0,
        "checkpoint_every": 128,
        "hp": {"n_steps": 64, "n_epochs": 2},
    }
    local = train(build_config(recipe, {"timesteps": 128, "n_envs": 1}), tmp_path / "local")

    made: list[RayVecEnv] = []

    def workers(config: object) -> object:
        venv = make_ray_workers(config, RayOptions())  # type: ignore[arg-type]
        made.append(venv.venv)  # type: ignore[attr-defined]
        return venv

    folder = RunFolder(tmp_path / "ray")
    killed: list[int] = []

    def kill_an_actor_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if made and folder.checkpoint_file("", 128, "zip").exists():
                killed.append(ray.get(made[0].actors[0].pid.remote()))
                ray.kill(made[0].actors[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_an_actor_after_the_first_checkpoint, daemon=True)
    killer.start()
    config = build_config(recipe, {"timesteps": 384, "n_envs": 2})
    with pytest.warns(RuntimeWarning, match="actor of environment 0 died"):
        summary = train(config, folder.path, workers=workers)
    killer.join(timeout=10)
    assert killed and made[0].restarts == 1 and made[0].closed

    assert summary["timesteps"] == 384 and summary["n_envs"] == 2
    assert summary.keys() == local.keys()
    assert {p.name for p in folder.path.iterdir()} == {
        p.name for p in (tmp_path / "local").iterdir()
    }
    assert [folder.checkpoint_file("", s, "zip").is_file() for s in (128, 256, 384)] == [True] * 3
    bundle = load_bundle(folder.bundle)
    assert bundle.content_hash == summary["bundle_hash"] and bundle.metadata["timesteps"] == 384
