"""fitpilot: a learned training controller for Keras.

Importing ``fitpilot`` is cheap and quiet: TensorFlow, Keras and the rest are
loaded on first use of the names below.

    from fitpilot import LearnedController
    model.fit(x, y, validation_split=0.2, epochs=50,
              callbacks=[LearnedController.pretrained()])
"""

from __future__ import annotations

import importlib
import sys
from importlib.util import find_spec
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fitpilot._version import __version__
from fitpilot.runtime import quiet_environment

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

quiet_environment()

_LAZY = {
    "TrainingTask": "fitpilot.envs.tasks",
    "TaskData": "fitpilot.envs.tasks",
    "Split": "fitpilot.envs.tasks",
    "load_tasks": "fitpilot.envs.loading",
    "FitpilotError": "fitpilot.errors",
    "LearnedController": "fitpilot.controller.callback",
    "Featurizer": "fitpilot.controller.features",
    "KerasTrainingEnv": "fitpilot.envs.env",
    "Prodigy": "fitpilot.baselines.prodigy",
    "find_learning_rate": "fitpilot.baselines.lr_finder",
    "LRFinderResult": "fitpilot.baselines.lr_finder",
    "LRFinder": "fitpilot.baselines.lr_finder",
    "GreedyLR": "fitpilot.baselines.greedy_lr",
    "AdaLRS": "fitpilot.baselines.adalrs",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fitpilot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


# gymnasium.make("fitpilot/KerasTraining-v0") works once fitpilot and gymnasium are both
# imported, in either order; import fitpilot does not import gymnasium (~0.5 s) for it.


def _register_env(gymnasium: ModuleType) -> None:
    importlib.import_module("fitpilot.envs").register_env(gymnasium)


class _RegisterEnvOnImport:
    """A ``sys.meta_path`` finder (one-shot): registers the env right after gymnasium loads.

    Not an ``importlib.abc.MetaPathFinder`` subclass: importing that module costs more
    than the rest of ``import fitpilot``.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != "gymnasium":
            return None
        sys.meta_path.remove(self)
        spec = find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is not None and hasattr(loader, "exec_module"):
            execute = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                execute(module)
                _register_env(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "gymnasium" in sys.modules:
    _register_env(sys.modules["gymnasium"])
else:
    sys.meta_path.insert(0, _RegisterEnvOnImport())

