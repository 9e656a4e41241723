"""The ``--backend`` options that ``fitpilot benchmark`` and ``fitpilot train`` share.

Not a command itself (not in ``COMMAND_MODULES``). The options are parsed by
:func:`fitpilot.ray_backend.ray_options`; nothing here imports Ray.
"""

from __future__ import annotations

from typing import Annotated

import typer

Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="local: processes on this machine (default). ray: Ray workers, on a local Ray "
        "instance or the cluster at --ray-address / RAY_ADDRESS (pip install 'fitpilot\\[ray]').",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to use with --backend ray (auto, HOST:6379, ray://HOST:10001). "
        "Default: RAY_ADDRESS, else a local Ray instance with one CPU per core.",
    ),
]
WorkerCpus = Annotated[
    float | None,
    typer.Option(
        "--worker-cpus",
        help="CPUs per Ray worker, fractions allowed; TensorFlow gets int(CPUs) threads. "
        "Default 1.",
    ),
]
WorkerMemory = Annotated[
    str | None,
    typer.Option(
        "--worker-memory",
        help="Memory reserved per Ray worker, e.g. 1GB or 800MB (a plain number is MB). "
        "Default: no reservation.",
    ),
]
