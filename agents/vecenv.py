"""The vectorised training environment: workers, episode monitor, normalisation, frame stack.

The wrapper stack is ``VecNormalize(VecFrameStack(VecMonitor(workers), k))``
(a :class:`~fitpilot.agents.batched_vecenv.ResumingFrameStack`, for paused batched episodes):
the last ``k`` raw frames are stacked oldest first, with zeros before the
first epoch of a run, then the stacked vector is normalised, exactly as
:class:`~fitpilot.controller.policy.ObservationPipeline` does at deployment.
(Normalising before stacking breaks SB3's off-policy replay buffer, which
stores the observations ``VecNormalize`` received: DLR-RM/stable-baselines3#693.)

With more than one environment each runs in its own process
(``SubprocVecEnv``, forkserver start): TensorFlow is imported and the Keras
models are built inside the child by :func:`make_env`, which sizes the
child's TensorFlow (and torch) thread pools to one thread first.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from fitpilot.agents.config import TrainConfig, TrainError
from fitpilot.agents.env_factory import make_env
from fitpilot.runtime import worker_start_method

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv, VecNormalize

    from fitpilot.ray_backend import RayOptions


def make_workers(
    config: TrainConfig, n_envs: int | None = None, ray: RayOptions | None = None
) -> VecEnv:
    """``n_envs`` monitored environments: the one place that decides how they run.

    ``config.backend`` ``ray``: one Ray actor each (:mod:`~fitpilot.agents.ray_vecenv`, with
    the ``ray`` options). Else as ``config.vec`` says: ``subproc``, in this process if 1,
    else one subprocess each; ``dummy``, all in this process; ``batched``, a
    :class:`~fitpilot.agents.batched_vecenv.BatchedVecEnv` in this process, or its copies
    split into ``config.processes`` worker processes (``ProcessGroupsVecEnv``).
    ``TrainConfig.check`` refuses the combinations that cannot run.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    n_envs = n_envs or config.n_envs
    if config.backend == "ray":
        if ray is None:
            raise TrainError("`backend` ray needs the Ray options (address, CPUs per worker)")
        from fitpilot.agents.ray_vecenv import make_ray_workers  # the optional extra, Ray

        return make_ray_workers(config, ray, n_envs)
    if config.vec == "batched":
        # imports the envs, hence TensorFlow: configured there first
        from fitpilot.agents.batched_vecenv import make_batched_workers

        return make_batched_workers(config, n_envs)
    factory = functools.partial(make_env, config.task_spec, config)
    if n_envs == 1 or config.vec == "dummy":
        workers: VecEnv = DummyVecEnv([factory] * n_envs)
    else:
        workers = SubprocVecEnv([factory] * n_envs, start_method=worker_start_method())
    return VecMonitor(workers)


def wrap(workers: VecEnv, config: TrainConfig, statistics: Path | None = None) -> VecNormalize:
    """Stack frames, then normalise (fresh statistics, or those saved at ``statistics``)."""
    from stable_baselines3.common.vec_env import VecNormalize

    from fitpilot.agents.batched_vecenv import ResumingFrameStack  # SB3 only: no TensorFlow

    stacked = workers
    if config.env.frame_stack > 1:  # a VecFrameStack that knows resumed episodes (batched)
        stacked = ResumingFrameStack(workers, config.env.frame_stack)
    if statistics is not None:
        return load_normalization(statistics, stacked)
    return VecNormalize(
        stacked,
        norm_obs=True,
        norm_reward=config.env.norm_reward,
        clip_obs=config.env.clip_obs,
        gamma=float(config.hp.get("gamma", 0.99)),
    )


def load_normalization(path: Path, workers: VecEnv) -> VecNormalize:
    """Saved ``VecNormalize`` statistics around ``workers``, set to keep updating."""
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        normalized = VecNormalize.load(str(path), workers)
    except Exception as exc:  # a pickle can fail in many ways; all mean "unreadable"
        raise TrainError(
            f"cannot read normalisation statistics {path} ({type(exc).__name__}: {exc}); "
            f"delete that checkpoint to resume from an earlier one"
        ) from exc
    normalized.training = True
    return normalized
