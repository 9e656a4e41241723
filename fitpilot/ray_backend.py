"""The Ray backend's plumbing, shared by ``fitpilot benchmark`` and ``fitpilot train``.

Ray is an optional extra (``pip install fitpilot[ray]``): nothing in fitpilot
imports it unless ``--backend ray`` is given, and then only through
:func:`import_ray`, which turns a missing install into a one-line
:class:`RayBackendError`.

Where the work runs:

- no ``--ray-address`` and no ``RAY_ADDRESS``: a local Ray instance with one
  CPU per core of this machine (no dashboard, worker logs kept out of the
  terminal), shut down at the end of the command;
- ``--ray-address ADDRESS`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets):
  an existing cluster, ``auto``, ``HOST:6379`` or ``ray://HOST:10001``.

Each benchmark run (a Ray task) and each training environment (a Ray actor)
asks for :attr:`RayOptions.worker_cpus` CPUs and, if given,
:attr:`RayOptions.worker_memory` bytes of memory; TensorFlow in that worker
gets ``int(worker_cpus)`` threads (at least one).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from fitpilot.errors import FitpilotError, first_line

BACKENDS = ("local", "ray")
#: The environment variable Ray (and ``ray job submit``) read for a cluster address.
ADDRESS_VARIABLE = "RAY_ADDRESS"
INSTALL_HINT = "pip install 'fitpilot[ray]'"
#: Seconds to wait for a TCP connection to a ``HOST:PORT`` cluster address.
CONNECT_TIMEOUT = 10.0

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([mg])?(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"m": 1024**2, "g": 1024**3}


class RayBackendError(FitpilotError):
    """Ray is missing, unreachable, or asked for resources it cannot give."""


@dataclass(frozen=True)
class RayOptions:
    """Where and with what resources Ray workers run.

    Attributes:
        address: the cluster to connect to; ``None`` means ``RAY_ADDRESS`` if set,
            else a new local instance.
        worker_cpus: CPUs per benchmark run / training environment (fractions allowed).
        worker_memory: memory per worker in bytes (``None``: Ray's default, no reservation).
    """

    address: str | None = None
    worker_cpus: float = 1.0
    worker_memory: int | None = None

    @property
    def threads(self) -> int:
        """TensorFlow threads per worker: ``int(worker_cpus)``, at least 1."""
        return max(1, int(self.worker_cpus))

    @property
    def cluster_address(self) -> str | None:
        """The cluster address (option, else ``RAY_ADDRESS``); ``None``: a local instance."""
        return self.address or os.environ.get(ADDRESS_VARIABLE) or None

    def remote_options(self) -> dict[str, Any]:
        """Keyword arguments of ``.options(...)`` for one worker's task or actor."""
        options: dict[str, Any] = {"num_cpus": self.worker_cpus}
        if self.worker_memory:
            options["memory"] = self.worker_memory
        return options


def parse_memory(text: str) -> int:
    """``"512MB"``, ``"512m"``, ``"2GB"``, ``"1.5g"`` or a plain number of MB -> bytes."""
    match = _MEMORY.match(text)
    value = float(match.group(1)) if match else math.nan
    if not match or value <= 0:
        raise RayBackendError(
            f"bad `worker_memory` {text!r}; give a size in MB or GB, e.g. 512MB or 2GB"
        )
    return int(value * _UNITS[(match.group(2) or "m").lower()])


def ray_options(
    backend: str,
    ray_address: str | None = None,
    worker_cpus: float | None = None,
    worker_memory: str | None = None,
) -> RayOptions | None:
    """The backend options as :class:`RayOptions` (``None`` for the local backend).

    Ray options given with the local backend are refused rather than ignored.
    """
    if backend not in BACKENDS:
        raise RayBackendError(f"unknown `backend` {backend!r}; use one of {', '.join(BACKENDS)}")
    given = [
        name
        for name, value in (
            ("`ray_address`", ray_address),
            ("`worker_cpus`", worker_cpus),
            ("`worker_memory`", worker_memory),
        )
        if value is not None
    ]
    if backend == "local":
        if given:
            one = len(given) == 1
            raise RayBackendError(
                f"{', '.join(given)} {'is' if one else 'are'} for `backend='ray'`; add "
                f"`backend='ray'`, or leave {'it' if one else 'them'} out"
            )
        return None
    cpus = 1.0 if worker_cpus is None else float(worker_cpus)
    if not (math.isfinite(cpus) and cpus > 0):
        raise RayBackendError(f"`worker_cpus` must be a positive number, not {worker_cpus}")
    memory = parse_memory(worker_memory) if worker_memory is not None else None
    return RayOptions(address=ray_address or None, worker_cpus=cpus, worker_memory=memory)


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`RayBackendError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayBackendError(
            f"`backend='ray'` needs Ray, which is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    return ray


def connect(options: RayOptions) -> tuple[ModuleType, bool]:
    """Connect this process to Ray if it is not yet; return ``(ray, started_here)``.

    A Ray connection made earlier (for instance by a test fixture) is reused
    as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = options.cluster_address
    if address is not None:
        _check_reachable(address)
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            # "local": a new instance even if a `ray start` cluster runs on this machine.
            ray.init(
                address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet
            )
        elif address.startswith("ray://"):  # Ray Client: init options would go to the server
            ray.init(address=address)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayBackendError(
            f"cannot connect to {where}: {first_line(exc)}; check `ray_address` / "
            f"{ADDRESS_VARIABLE} (e.g. auto, HOST:6379 or ray://HOST:10001), "
            f"or unset both for a local instance"
        ) from exc
    return ray, True


@contextlib.contextmanager
def session(options: RayOptions | None) -> Iterator[ModuleType | None]:
    """Ray, connected for the duration; shut down at the end if this call started it.
    ``None`` (the local backend): nothing to connect, ``None`` is yielded."""
    if options is None:
        yield None
        return
    ray, started = connect(options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def check_capacity(ray: ModuleType, options: RayOptions, workers: int, what: str) -> None:
    """Refuse a request that would wait forever: a worker that fits on no node, or
    ``workers`` workers that must all run at once (``what``, e.g. "environments") but
    do not fit on the cluster together.

    On a cluster that may grow (an autoscaler), a shortfall is a warning, not an error.
    """
    nodes = _nodes(ray)
    if nodes is None:  # not every kind of connection lists nodes: then Ray's own warnings tell
        return
    slots = sum(_node_slots(node, options) for node in nodes)
    plural = "" if options.worker_cpus == 1 else "s"
    asked = f"{options.worker_cpus:g} CPU{plural} (`worker_cpus`)"
    if options.worker_memory:
        asked += f" and {options.worker_memory / 2**30:.4g} GB (`worker_memory`)"
    problem = None
    if slots == 0:
        problem = f"each worker asks for {asked}, more than any Ray node has; ask for less"
    elif workers > slots:
        problem = (
            f"{workers} {what} of {asked} must run at once but the Ray cluster fits {slots}; "
            f"lower the count or the resources per worker (fractions of a CPU are allowed)"
        )
    if problem is None:
        return
    if options.cluster_address is None:
        raise RayBackendError(problem)
    warnings.warn(f"{problem} (waiting in case the cluster scales up)", stacklevel=2)


def worker_slots(ray: ModuleType, options: RayOptions) -> int:
    """How many workers of ``options``' resources the cluster can run at once (>= 1)."""
    nodes = _nodes(ray)
    if nodes is None:
        return max(1, int(float(ray.cluster_resources().get("CPU", 1)) // options.worker_cpus))
    return max(1, sum(_node_slots(node, options) for node in nodes))


def _nodes(ray: ModuleType) -> list[dict[str, float]] | None:
    """The resources of each live node, or ``None`` if this connection cannot list them."""
    try:
        return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]
    except Exception:
        return None


def _node_slots(resources: dict[str, float], options: RayOptions) -> int:
    """Workers of ``options``' CPUs (and memory) that fit on a node with ``resources``."""
    slots = int(float(resources.get("CPU", 0)) / options.worker_cpus + 1e-9)
    if options.worker_memory:
        slots = min(slots, int(float(resources.get("memory", 0)) / options.worker_memory + 1e-9))
    return slots


def _check_reachable(address: str) -> None:
    """Fail fast if ``HOST:PORT`` (or ``ray://HOST:PORT``) refuses TCP: Ray would retry forever.

    Other forms (``auto``, ``local``, a URL with a path) are left to Ray.
    """
    match = re.fullmatch(r"(?:ray://)?(\[[^\]]+\]|[^:/\[\]]+):(\d+)", address.strip())
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise RayBackendError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check "
            f"`ray_address` / {ADDRESS_VARIABLE}, or unset both for a local instance"
        ) from exc


