"""Every example command in README.md and docs/*.md runs, so they stay true.

The commands are read from the ``bash`` (and unlabelled) code blocks of the README, then
of each page of docs/ (in :data:`PAGES` order), and run in that order in a fresh folder,
as a user who follows them runs them: ``my_tasks.py`` is docs/tasks.md's own example
(also installed as ``my_package/my_tasks.py`` for the import-path example). Runs that would take
minutes are scaled down only by flags appended to the README's command line
(for a repeated option, the last one wins): :data:`SCALE_DOWN`. Commands that
cannot run here are listed in :data:`SKIPPED` with the reason.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from tests.commandline import REPO, run_fitpilot

README = REPO / "README.md"
#: The pages whose commands run, in this order (the README first, then the docs).
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
#: The page that holds the ``my_tasks.py`` example the commands use.
TASKS_PAGE = REPO / "docs" / "tasks.md"

# Flags appended per command, in seconds rather than minutes. Training: one environment,
# in-process, PPO updates of 32 steps and no holdout evaluation; `--timesteps` is scaled by
# `scaled_timesteps`. Benchmark: one seed at one starting rate, the learned controller and the
# smallest grid of constant rates.
SCALE_DOWN = {
    "train": [
        "--n-envs", "1", "--eval-every", "0", "--hp", "n_steps=32", "--hp", "batch_size=32",
    ],
    "benchmark": [
        "--seeds", "1", "--lr-factors", "1", "--oracle-grid", "3", "--strategies", "learned",
    ],
}
TRAIN_DEFAULT_TIMESTEPS = 100_000

SKIPPED = {
    "make setup": "sets up the environment these tests run in",
    "make test": "runs the tests, this one included",
    ".venv/bin/python benchmarks/ray_scaling.py": "a 5-minute measurement of Ray's overheads",
    ".venv/bin/python benchmarks/ray_scaling.py --only overhead training --timesteps 2048":
    "a measurement of Ray's overheads (minutes)",
    "fitpilot recipe experiments/configs/pretrained_v3.yaml --seeds 3 --out runs/pretrained-v3":
    "trains the shipped recipe 3 times and benchmarks each bundle (40 minutes); "
    "tests/test_recipe.py runs the command on a tiny recipe",
    "pip install 'fitpilot[ray]'": "installs a package (the dev extras hold ray already)",
    "fitpilot train --backend ray --ray-address ray://head-node:10001 --n-envs 16 --out runs/ppo":
    "needs a Ray cluster with a Ray Client server",
    "RAY_ADDRESS=auto fitpilot benchmark --backend ray --out results":
    "needs a cluster started with `ray start` on this machine",
    "ray job submit --address http://head-node:8265 --working-dir . -- fitpilot benchmark "
    "--backend ray --tasks my_tasks:TASKS --out results": "needs a Ray cluster's job server",
}


def readme_commands() -> list[str]:
    """The command lines of the pages' bash code blocks, in order (with shlex quoting).

    Also unlabelled blocks of ``fitpilot`` commands only. Continuation lines
    (ending in a backslash) are joined and comments dropped.
    """
    commands = []
    text = "\n".join(page.read_text() for page in PAGES)
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        joined = body.replace("\\\n", " ").splitlines()
        lines = [words for line in joined if (words := shlex.split(line, comments=True))]
        if language == "bash" or (not language and all(w[0] == "fitpilot" for w in lines)):
            commands += [shlex.join(words) for words in lines]
    return commands


def readme_python_block(after: str) -> str:
    """The first ``python`` code block after the text ``after`` in :data:`TASKS_PAGE`."""
    text = TASKS_PAGE.read_text()
    start = text.index(after)
    match = re.compile(r"^```python\n(.*?)^```", re.M | re.S).search(text, start)
    assert match, f"no python block after {after!r} in README.md"
    return match.group(1)


def scaled_timesteps(words: list[str]) -> str:
    """``--timesteps`` scaled by 64 / 100,000 (at least 64), so a resume still adds steps."""
    given = [int(words[i + 1]) for i, word in enumerate(words[:-1]) if word == "--timesteps"]
    steps = given[-1] if given else TRAIN_DEFAULT_TIMESTEPS
    return str(max(64, steps * 64 // TRAIN_DEFAULT_TIMESTEPS))


def scaled_down(command: str) -> list[str]:
    """The arguments after ``fitpilot``, with the flags of :data:`SCALE_DOWN` appended."""
    words = shlex.split(command)[1:]
    extra = list(SCALE_DOWN.get(words[0], []))
    if words[0] == "train":
        extra += ["--timesteps", scaled_timesteps(words)]
    return words + extra


def workspace(folder: Path) -> Path:
    """A user's folder: the README's ``my_tasks.py``, and a package holding it."""
    source = readme_python_block("Save this as `my_tasks.py`")
    (folder / "my_tasks.py").write_text(source)
    (folder / "my_package").mkdir()
    (folder / "my_package" / "__init__.py").write_text("")
    (folder / "my_package" / "my_tasks.py").write_text(source)
    return folder


def runnable(ray: bool) -> list[str]:
    """The README's ``fitpilot`` commands not skipped, each once: those on Ray, or the others."""
    commands = [
        command
        for command in readme_commands()
        if command not in SKIPPED and ("--backend ray" in command) == ray
    ]
    return list(dict.fromkeys(commands))


def run_in_order(commands: list[str], folder: Path) -> None:
    for command in commands:
        started = time.perf_counter()
        result = run_fitpilot(*scaled_down(command), cwd=folder, timeout=600)
        assert result.returncode == 0, f"documented command failed: {command}\n{result.stderr}"
        print(f"{time.perf_counter() - started:6.1f} s  {command}")  # shown with pytest -s


def test_every_readme_command_runs_or_is_skipped_with_a_reason() -> None:
    commands = readme_commands()
    assert len(commands) >= 10  # the parser finds the pages' blocks
    unknown = [c for c in commands if c not in SKIPPED and not c.startswith("fitpilot ")]
    assert unknown == [], f"add these documented commands to SKIPPED with a reason: {unknown}"
    stale = sorted(set(SKIPPED) - set(commands))
    assert stale == [], f"SKIPPED lists commands the README no longer has: {stale}"


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path: Path) -> None:
    commands = runnable(ray=False)
    run_in_order(commands, workspace(tmp_path))
    assert (tmp_path / "runs" / "mine" / "controller.zip").is_file()
    assert (tmp_path / "results" / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.ray
def test_readme_ray_commands_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run_in_order(runnable(ray=True), workspace(tmp_path))
    assert (tmp_path / "runs" / "ppo" / "controller.zip").is_file()
