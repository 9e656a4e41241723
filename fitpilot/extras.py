"""Which optional extra of the package each part needs, and one line saying which to install.

``pip install fitpilot`` is the deployed side only (the callback, the pretrained
controller, the baselines: Keras and numpy, any Keras 3 backend). The rest comes with
extras: ``fitpilot[train]``, ``fitpilot[benchmark]``, ``fitpilot[data]``, ``fitpilot[ray]``
(``fitpilot[all]`` for everything). A leaf module: it imports none of them, it only looks
them up (``importlib.util.find_spec``).
"""

from __future__ import annotations

from importlib.util import find_spec

from fitpilot.errors import FitpilotError

#: The modules of the command line itself (in both the train and the benchmark extra).
CLI_MODULES = ("typer", "rich", "yaml", "matplotlib")
#: Extra -> the top-level modules it brings, as imported.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": (*CLI_MODULES, "tensorflow", "gymnasium", "stable_baselines3", "sklearn",
              "tensorboard"),
    "benchmark": (*CLI_MODULES, "tensorflow", "sklearn"),
    "ray": ("ray",),
}


class MissingExtraError(FitpilotError):
    """A part of fitpilot whose optional extra is not installed."""


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The ``modules`` that cannot be imported here (looked up, not imported)."""
    return [name for name in modules if find_spec(name) is None]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` (one line: what to install) unless ``extra`` is there.

    ``what`` names the part that needs it, e.g. ``"fitpilot train"``.
    """
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise MissingExtraError(
            f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'fitpilot[{extra}]'"
        )
