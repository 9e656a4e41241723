"""The results store: one JSON-lines file, a settings header then one line per finished run.

``DIR/runs.jsonl``: line 1 is ``{"type": "header", "settings": {...}}`` (written
atomically), every further line one run record, appended as soon as the run
finishes (flushed and fsync'd), so killing a benchmark loses no finished run.
A line cut short by a kill is skipped with one warning, and its run redone.
Non-finite numbers are written as ``null``: the file is strict JSON. A failed run
(one that raised) is a line too; a resumed benchmark runs it again and appends the
new record, which then stands for the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from fitpilot.experiments.settings import (
    PROTOCOL,
    RESUMABLE_PROTOCOLS,
    BenchmarkError,
    RunKey,
    RunRecord,
    Settings,
)
from fitpilot.experiments.strategies import ORACLE, STRATEGY_TABLE
from fitpilot.jsonable import jsonable

STORE_FILE = "runs.jsonl"


def store_path(directory: str | Path) -> Path:
    return Path(directory) / STORE_FILE


@dataclass
class StoreContents:
    """A store as read: its settings, its readable runs, the line numbers it skipped."""

    path: Path
    settings: Settings
    runs: list[RunRecord] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    def keys(self) -> set[RunKey]:
        return {run.key for run in self.runs}

    def warning(self) -> str | None:
        """One line about skipped (unreadable) lines, or ``None``."""
        if not self.skipped:
            return None
        lines = ", ".join(map(str, self.skipped[:5])) + (" ..." if len(self.skipped) > 5 else "")
        return (
            f"warning: skipped {len(self.skipped)} unreadable line(s) of {self.path} "
            f"(line {lines}; cut short by a kill?); their runs count as not done"
        )


def read_store(directory: str | Path) -> StoreContents:
    """Read ``DIR/runs.jsonl``; :class:`BenchmarkError` if it is missing or has no header."""
    path = store_path(directory)
    if not path.is_file():
        raise BenchmarkError(
            f"no benchmark results in {directory} (expected {path}); run a benchmark there first"
        )
    with path.open("r", encoding="utf-8", errors="replace") as file:
        lines = file.read().split("\n")
    try:
        header = json.loads(lines[0])
        settings = Settings.from_dict(header["settings"])
        if header.get("type") != "header":
            raise ValueError("first line is not a header")
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(
            f"{path} is not a fitpilot benchmark store (bad header: {exc})"
        ) from exc
    contents = StoreContents(path, settings)
    latest: dict[RunKey, RunRecord] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            record = RunRecord.from_json(json.loads(line))
        except (ValueError, TypeError, AttributeError):
            contents.skipped.append(number)
            continue
        # A run is written again only after it failed (a resume retries it): the retry stands.
        known = latest.get(record.key)
        if known is None or known.failed:
            latest[record.key] = record
    contents.runs = list(latest.values())
    return contents


class ResultsStore:
    """An open store to append runs to; see :meth:`open`."""

    def __init__(self, path: Path, runs: list[RunRecord], warning: str | None) -> None:
        self.path = path
        self.runs = runs
        self.finished = {run.key for run in runs}  # failed runs are left out: they run again
        self.warning = warning
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    @classmethod
    def open(
        cls, directory: str | Path, settings: Settings, resume: bool = False, force: bool = False
    ) -> ResultsStore:
        """Create the store in ``directory``, or reopen it to resume.

        A store of a protocol version this one cannot continue, or of other settings (controller,
        tasks, strategies, reference, grid, lr factors, seeds, fitpilot
        version) is refused, and left as it is; so is an existing store without
        ``resume``. ``force`` deletes an existing store first.
        """
        directory = Path(directory)
        path = store_path(directory)
        if path.exists() and force:
            path.unlink()
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, json.dumps({"type": "header", "settings": settings.to_dict()}))
            return cls(path, [], None)
        try:
            contents = read_store(directory)
        except BenchmarkError as exc:
            raise BenchmarkError(
                f"{exc}; give a new `out` directory, or `force=True` to start over"
            ) from exc
        if contents.settings.protocol not in RESUMABLE_PROTOCOLS:
            raise BenchmarkError(
                f"{path} was written by benchmark protocol v{contents.settings.protocol} "
                f"({len(contents.runs)} runs), which this version cannot continue; its runs "
                f"stay there (a report still reads them): give a new `out` directory for a "
                f"v{PROTOCOL} benchmark, or `force=True` to delete them and start over"
            )
        differences = settings.differences(contents.settings)
        if differences:
            who = (
                "another controller"
                if contents.settings.controller != settings.controller
                else "other settings"
            )
            raise BenchmarkError(
                f"{path} was written by {who} ({'; '.join(differences)}); "
                f"give a new `out` directory, or `force=True` to start over"
            )
        if contents.runs and not resume:
            raise BenchmarkError(
                f"{directory} already holds a benchmark ({len(contents.runs)} runs); pass "
                f"`resume=True` to continue it, `force=True` to start over, or give a new "
                f"`out` directory"
            )
        _drop_partial_last_line(path)
        finished = [run for run in contents.runs if not run.failed]
        return cls(path, finished, contents.warning())

    def append(self, record: RunRecord) -> None:
        """Append one run record as one line, flushed and fsync'd before returning."""
        if self._file is None:
            raise BenchmarkError(f"{self.path} is closed")
        self._file.write(json.dumps(jsonable(record.to_json()), allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.runs.append(record)
        self.finished.add(record.key)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reuse_runs(source: str | Path, store: ResultsStore, settings: Settings) -> int:
    """Append to ``store`` (of ``settings``) the finished runs of the store in ``source`` that
    do not depend on the controller: the grid's, and those of every strategy of ``settings``
    that needs no controller and has the same chosen settings there (and the controller's
    own, when both benchmarked the same bundle). The two benchmarks must
    agree on everything else (tasks, seeds, factors, grid, reference, version); runs
    ``store`` has already are kept. Returns the number of runs copied.
    """
    contents = read_store(source)
    theirs = contents.settings
    aligned = replace(theirs, controller=settings.controller, strategies=settings.strategies,
                      strategy_settings=settings.strategy_settings,
                      controller_source=settings.controller_source)
    differences = settings.differences(aligned)
    if differences:
        raise BenchmarkError(
            f"the runs in {source} were made with other settings ({'; '.join(differences)}); "
            f"give `reuse` a benchmark of the same tasks, seeds, factors and grid"
        )

    def shared(strategy: str) -> bool:
        if strategy == ORACLE:
            return True
        row = STRATEGY_TABLE.get(strategy)
        if row is None or strategy not in settings.strategies:
            return False
        if row.needs_controller:
            return theirs.controller is not None and theirs.controller == settings.controller
        return ((theirs.strategy_settings or {}).get(strategy)
                == (settings.strategy_settings or {}).get(strategy))

    copied = 0
    for run in contents.runs:
        if shared(run.strategy) and not run.failed and run.key not in store.finished:
            store.append(run)
            copied += 1
    return copied


def _write_atomically(path: Path, line: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line without its newline (a write killed half-way), so appends start clean."""
    with path.open("rb+") as file:
        data = file.read()
        if data and not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)
