"""Export a stable-baselines3 policy to a controller bundle: torch modules -> plain arrays.

What can be exported is what :class:`~fitpilot.controller.policy.MLPPolicy`
represents: a flattened 1-D observation, ``Linear`` layers each followed by the
same activation (``Tanh`` or ``ReLU``), then one ``Linear`` head.

- PPO / A2C (``ActorCriticPolicy``): ``mlp_extractor.policy_net`` is the hidden
  stack, ``action_net`` the head; the head gives logits (discrete actions,
  argmax) or a Gaussian mean (continuous actions, clipped to ``[-1, 1]``).
  The value network is not needed to act and is not exported.
- DQN (``DQNPolicy``): ``q_net.q_net`` is ``Linear, ReLU, ..., Linear``; the
  last layer is the head, argmax of the Q-values.

Anything else (another features extractor, another activation, a squashed
output, a custom network) is refused with :class:`ExportError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fitpilot.agents.config import TrainError
from fitpilot.controller.bundle import Bundle
from fitpilot.controller.policy import MLPPolicy, ObsNormalization

if TYPE_CHECKING:
    import torch.nn as nn
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.vec_env import VecNormalize

    from fitpilot.agents.config import EnvSettings

Layer = tuple[np.ndarray, np.ndarray]


class ExportError(TrainError):
    """A policy whose architecture a controller bundle cannot represent."""


def export_policy(policy: BasePolicy) -> MLPPolicy:
    """The numpy twin of an SB3 policy: same deterministic action for the same input."""
    # SB3 (and TensorFlow, through tensorboard) load when a bundle is exported, after configure;
    # gymnasium too (the command line loads this module in a benchmark-only install).
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import MlpExtractor
    from stable_baselines3.dqn.policies import DQNPolicy

    if (
        not isinstance(policy.observation_space, spaces.Box)
        or len(policy.observation_space.shape) != 1
    ):
        raise ExportError(
            f"only 1-D Box observations can be exported, got {policy.observation_space}"
        )
    if isinstance(policy, DQNPolicy):
        _check_flatten(policy.q_net.features_extractor)
        layers, activation = _read_sequential(policy.q_net.q_net, "q_net.q_net")
        if not layers:
            raise ExportError("the DQN q_net has no Linear layer")
        return MLPPolicy(tuple(layers[:-1]), layers[-1], activation, "q_values")
    if isinstance(policy, ActorCriticPolicy):
        _check_flatten(policy.features_extractor)
        if not policy.share_features_extractor:
            _check_flatten(policy.pi_features_extractor)
        if type(policy.mlp_extractor) is not MlpExtractor:
            raise ExportError(
                f"custom mlp_extractor {type(policy.mlp_extractor).__name__} cannot be exported; "
                f"use policy_kwargs.net_arch"
            )
        if policy.squash_output:
            raise ExportError(
                "squashed (tanh) action outputs cannot be exported; drop squash_output"
            )
        hidden, activation = _read_sequential(
            policy.mlp_extractor.policy_net, "mlp_extractor.policy_net", hidden_only=True
        )
        head = _linear(policy.action_net, "action_net")
        if isinstance(policy.action_space, spaces.Discrete):
            kind = "logits"
        elif isinstance(policy.action_space, spaces.Box):
            kind = "gaussian_mean"
        else:
            raise ExportError(f"action space {policy.action_space} cannot be exported")
        return MLPPolicy(tuple(hidden), head, activation, kind)
    raise ExportError(
        f"policy {type(policy).__name__} cannot be exported; train with PPO, A2C or DQN "
        f"and the default MlpPolicy"
    )


def normalization_of(vec_normalize: VecNormalize | None, size: int) -> ObsNormalization:
    """VecNormalize's statistics of the (stacked) observation of ``size`` values.

    Identity statistics when observations are not normalised.
    """
    if vec_normalize is None or not vec_normalize.norm_obs:
        return ObsNormalization.identity(size)
    rms = vec_normalize.obs_rms
    return ObsNormalization(
        mean=np.asarray(rms.mean, np.float32),
        var=np.asarray(rms.var, np.float32),
        clip=float(vec_normalize.clip_obs),
        epsilon=float(vec_normalize.epsilon),
    )


def frame_stack_of(model: BaseAlgorithm) -> int:
    """Frames stacked by the model's ``VecFrameStack`` (1 without one)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecFrameStack  # SB3: see above

    env = model.get_env()
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecFrameStack):
            return int(env.stacked_obs.n_stack)
        env = env.venv
    return 1


def export_bundle(
    model: BaseAlgorithm, settings: EnvSettings, metadata: dict[str, Any] | None = None
) -> Bundle:
    """The controller bundle of ``model`` (its env must be the training wrapper stack)."""
    frame_stack = frame_stack_of(model)
    return make_bundle(model.policy, model.get_vec_normalize_env(), frame_stack, settings, metadata)


def make_bundle(
    policy: BasePolicy,
    vec_normalize: VecNormalize | None,
    frame_stack: int,
    settings: EnvSettings,
    metadata: dict[str, Any] | None = None,
) -> Bundle:
    """A bundle from a policy, the observation statistics, frame stacking and env settings."""
    numpy_policy = export_policy(policy)
    features = settings.featurizer_config().size
    inputs = features * frame_stack
    normalization = normalization_of(vec_normalize, inputs)
    if numpy_policy.input_size != inputs or len(normalization.mean) != inputs:
        raise ExportError(
            f"the policy takes {numpy_policy.input_size} inputs and the normalisation has "
            f"{len(normalization.mean)} statistics, but {frame_stack} stacked frames of "
            f"{features} features are {inputs}"
        )
    return Bundle(
        policy=numpy_policy,
        featurizer=settings.featurizer_config(),
        actions=settings.action_scheme(),
        normalization=normalization,
        frame_stack=frame_stack,
        metadata=dict(metadata or {}),
    )


# --- torch -> arrays -------------------------------------------------------------


def _activation_name(module: nn.Module) -> str | None:
    import torch.nn as nn  # torch and SB3 load with the learner, not with this module

    return {nn.Tanh: "tanh", nn.ReLU: "relu"}.get(type(module))


def _check_flatten(extractor: nn.Module) -> None:
    from stable_baselines3.common.torch_layers import FlattenExtractor  # SB3: with the learner

    if type(extractor) is not FlattenExtractor:
        raise ExportError(
            f"features extractor {type(extractor).__name__} cannot be exported; keep the "
            f"default FlattenExtractor (no policy_kwargs.features_extractor_class)"
        )


def _linear(module: nn.Module, where: str) -> Layer:
    """``(W, b)`` of a ``Linear`` layer, ``W`` shaped ``(inputs, outputs)``, float32."""
    import torch.nn as nn  # torch loads with the learner, not with this module

    if type(module) is not nn.Linear:
        raise ExportError(f"{where} is a {type(module).__name__}, not a Linear layer")
    weight = module.weight.detach().cpu().numpy().astype(np.float32).T.copy()
    bias = (
        module.bias.detach().cpu().numpy().astype(np.float32)
        if module.bias is not None
        else np.zeros(weight.shape[1], np.float32)
    )
    return weight, bias


def _read_sequential(
    sequential: nn.Module, where: str, hidden_only: bool = False
) -> tuple[list[Layer], str]:
    """Layers of ``Linear, act, Linear, act, ... [, Linear]`` and the one activation used.

    With ``hidden_only`` every ``Linear`` must be followed by the activation.
    """
    import torch.nn as nn  # torch loads with the learner, not with this module

    if not isinstance(sequential, nn.Sequential):
        raise ExportError(f"{where} is a {type(sequential).__name__}, not an nn.Sequential")
    modules = list(sequential)
    layers: list[Layer] = []
    activations: set[str] = set()
    for i, module in enumerate(modules):
        if i % 2 == 0:
            layers.append(_linear(module, f"{where}[{i}]"))
            continue
        name = _activation_name(module)
        if name is None:
            raise ExportError(
                f"{where}[{i}] is {type(module).__name__}; a bundle can only hold Tanh or ReLU "
                f"activations (policy_kwargs.activation_fn: tanh or relu)"
            )
        activations.add(name)
    if hidden_only and len(modules) % 2:
        raise ExportError(f"{where} ends with a Linear layer without activation")
    if len(activations) > 1:
        raise ExportError(f"{where} mixes activations {sorted(activations)}; use one")
    return layers, activations.pop() if activations else "identity"
