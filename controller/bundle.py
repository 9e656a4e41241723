"""The controller bundle: one self-contained, versioned zip file that the callback loads.

Layout of ``controller.zip``:

- ``manifest.json``: format version, fitpilot version, featurizer config,
  action scheme, observation pipeline settings, network spec, metadata and
  the content hash;
- ``arrays.npz``: the network weights and normalisation statistics as plain
  float32 arrays (no pickles: loaded with ``allow_pickle=False``).

The content hash (sha256 of the canonical manifest without the hash, plus
every array's name, shape and bytes) names a controller in benchmark stores.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fitpilot.controller.actions import ActionScheme, DiscreteActions, action_scheme_from_dict
from fitpilot.controller.features import Featurizer, FeaturizerConfig
from fitpilot.controller.policy import MLPPolicy, ObservationPipeline, ObsNormalization
from fitpilot.errors import FitpilotError, first_line

BUNDLE_FORMAT = 1


class BundleError(FitpilotError):
    """A controller bundle that is missing, corrupt or of an incompatible version."""


@dataclass(frozen=True)
class Bundle:
    """Everything the deployed callback needs, and nothing that needs torch."""

    policy: MLPPolicy
    featurizer: FeaturizerConfig
    actions: ActionScheme
    normalization: ObsNormalization
    frame_stack: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    fitpilot_version: str = ""  # the fitpilot that made it; "" means this one

    def __post_init__(self) -> None:
        """Refuse parts that do not fit together, or non-finite numbers, with a BundleError."""
        fix = "re-export the controller"
        for name, array in self.arrays().items():
            if not np.isfinite(array).all():
                raise BundleError(f"the bundle's {name} holds NaN or inf values; {fix}")
        inputs = self.featurizer.size * self.frame_stack
        size, source = inputs, "its featurizer and frame stack give"
        layers = [*self.policy.hidden, self.policy.head]
        for i, (weight, bias) in enumerate(layers):
            layer = "head" if i == len(layers) - 1 else f"hidden layer {i}"
            if weight.ndim != 2 or bias.shape != (weight.shape[1],):
                raise BundleError(f"the bundle's policy {layer} has weights {weight.shape} "
                                  f"and bias {bias.shape}; {fix}")
            if weight.shape[0] != size:
                raise BundleError(f"the bundle's policy {layer} takes {weight.shape[0]} inputs "
                                  f"but {source} {size}; {fix}")
            size, source = weight.shape[1], "the layer before gives"
        if self.normalization.mean.shape != (inputs,) or self.normalization.var.shape != (inputs,):
            raise BundleError(f"the bundle's observation statistics have shape "
                              f"{self.normalization.mean.shape}, not ({inputs},); {fix}")
        if isinstance(self.actions, DiscreteActions):
            outputs, kinds = self.actions.n, ("logits", "q_values")
            scheme = f"discrete action scheme ({', '.join(self.actions.names)})"
        else:
            outputs, kinds = 2, ("gaussian_mean",)
            scheme = "continuous action scheme (lr factor, stop)"
        if size != outputs or self.policy.head_kind not in kinds:
            raise BundleError(
                f"the bundle's policy head gives {size} {self.policy.head_kind} but its {scheme} "
                f"needs {outputs} {' or '.join(kinds)}; {fix}"
            )
        if self.featurizer.uses_probe != bool(getattr(self.actions, "first", ())):
            raise BundleError(
                f"the bundle's featurizer is version {self.featurizer.version} but its action "
                f"scheme {'has' if getattr(self.actions, 'first', ()) else 'has no'} first "
                f"decision; version 3 takes both (the scale probe and the first decision); {fix}"
            )

    def make_featurizer(self) -> Featurizer:
        return Featurizer(self.featurizer)

    def make_pipeline(self) -> ObservationPipeline:
        return ObservationPipeline(self.normalization, self.frame_stack)

    def arrays(self) -> dict[str, np.ndarray]:
        """All arrays by name, float32."""
        arrays = {"obs_mean": self.normalization.mean, "obs_var": self.normalization.var}
        for i, (weight, bias) in enumerate(self.policy.hidden):
            arrays[f"hidden_{i}_w"], arrays[f"hidden_{i}_b"] = weight, bias
        arrays["head_w"], arrays["head_b"] = self.policy.head
        return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}

    def manifest(self) -> dict[str, Any]:
        """The JSON manifest without the content hash."""
        from fitpilot._version import __version__

        return {
            "format": BUNDLE_FORMAT,
            "fitpilot_version": self.fitpilot_version or __version__,
            "featurizer": self.featurizer.to_dict(),
            "actions": self.actions.to_dict(),
            "observation": {
                "frame_stack": self.frame_stack,
                "clip": _json_float(self.normalization.clip),
                "epsilon": self.normalization.epsilon,
            },
            "policy": {
                "hidden_layers": len(self.policy.hidden),
                "activation": self.policy.activation,
                "head": self.policy.head_kind,
            },
            "metadata": self.metadata,
        }

    @property
    def content_hash(self) -> str:
        return _content_hash(self.manifest(), self.arrays())


def save_bundle(bundle: Bundle, path: str | Path) -> str:
    """Write ``bundle`` to ``path`` (a .zip file) atomically; return its content hash."""
    path = Path(path)
    manifest, arrays = bundle.manifest(), bundle.arrays()
    digest = _content_hash(manifest, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps({**manifest, "hash": digest}, indent=2))
        archive.writestr("arrays.npz", buffer.getvalue())
    tmp.replace(path)
    return digest


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle; :class:`BundleError` says what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(
            f"no controller bundle at {path}; give the controller.zip written by "
            f"`fitpilot train`, or use LearnedController.pretrained()"
        )
    fix = "re-export it with `fitpilot train` or download it again"
    try:
        with zipfile.ZipFile(path) as archive:
            manifest_bytes = archive.read("manifest.json")
            arrays_bytes = archive.read("arrays.npz")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise BundleError(
            f"{path} is not a readable controller bundle ({first_line(exc)}); {fix}"
        ) from exc
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise BundleError(f"{path} is corrupt: its manifest.json is not JSON "
                          f"({first_line(exc)}); {fix}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is corrupt: its manifest.json holds a JSON "
                          f"{type(manifest).__name__}, not an object; {fix}")
    try:
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        # numpy's own message suggests allow_pickle=True: not for a file from elsewhere.
        raise BundleError(f"{path} is corrupt: its arrays.npz is not a numpy array archive; "
                          f"{fix}") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path} is bundle format {manifest.get('format')!r}, made by fitpilot "
            f"{manifest.get('fitpilot_version', '?')}; this fitpilot reads format "
            f"{BUNDLE_FORMAT}: retrain the controller or install the fitpilot that made it"
        )
    try:
        bundle = _bundle_from(manifest, arrays)
    except FitpilotError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    except KeyError as exc:
        raise BundleError(f"{path} is an incomplete controller bundle (missing {exc})") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{path} is corrupt: {first_line(exc)}; {fix}") from exc
    stored_hash = manifest.pop("hash", None)
    if stored_hash != _content_hash(manifest, arrays):
        raise BundleError(
            f"{path} is corrupt: its content hash does not match its manifest; re-export it"
        )
    return bundle


def _bundle_from(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Bundle:
    spec, obs = manifest["policy"], manifest["observation"]
    hidden = tuple(
        (arrays[f"hidden_{i}_w"], arrays[f"hidden_{i}_b"]) for i in range(spec["hidden_layers"])
    )
    policy = MLPPolicy(hidden, (arrays["head_w"], arrays["head_b"]), spec["activation"],
                       spec["head"])
    normalization = ObsNormalization(
        arrays["obs_mean"], arrays["obs_var"], float(obs["clip"]), float(obs["epsilon"])
    )
    return Bundle(
        policy=policy,
        featurizer=FeaturizerConfig.from_dict(manifest["featurizer"]),
        actions=action_scheme_from_dict(manifest["actions"]),
        normalization=normalization,
        frame_stack=int(obs["frame_stack"]),
        metadata=manifest.get("metadata", {}),
        fitpilot_version=str(manifest.get("fitpilot_version", "")),
    )


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else "inf"


def _content_hash(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name], dtype=np.float32)
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
