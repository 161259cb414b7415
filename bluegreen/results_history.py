"""The results of ``bg history``, ``bg lock`` and ``bg logs`` (see :mod:`bluegreen.results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bluegreen.results import Json


# ------------------------------------------------------------------------ history, lock, logs


@dataclass(frozen=True)
class OperationSummary:
    """One operation of the journal: its entries grouped (bluegreen/history.py)."""

    time: str | None
    op: str | None
    command: str | None
    version: str | None
    outcome: str  # ok | failed | incomplete
    seconds: float | None
    message: str | None
    user: str | None
    controller: str | None
    pid: int | None
    steps: int

    def to_json(self) -> Json:
        return {"time": self.time, "op": self.op, "command": self.command,
                "version": self.version, "outcome": self.outcome, "seconds": self.seconds,
                "message": self.message, "user": self.user, "controller": self.controller,
                "pid": self.pid, "steps": self.steps}


@dataclass(frozen=True)
class HistoryResult:
    """Per host: its operations, or (``steps``) its raw journal entries."""

    operations: dict[str, tuple[OperationSummary, ...]] = field(default_factory=dict)
    entries: dict[str, tuple[Json, ...]] = field(default_factory=dict)
    steps: bool = False

    def to_json(self) -> Json:
        if self.steps:
            return {host: list(entries) for host, entries in self.entries.items()}
        return {host: [o.to_json() for o in ops] for host, ops in self.operations.items()}


@dataclass(frozen=True)
class LockHolder:
    details: Json  # holder.json: user, controller, pid, command, time, ...
    stale: bool  # its process is provably gone

    def to_json(self) -> Json:
        return {**self.details, "stale": self.stale}


@dataclass(frozen=True)
class LockStatusResult:
    hosts: dict[str, LockHolder | None]  # None: free

    def to_json(self) -> Json:
        return {name: None if h is None else h.to_json() for name, h in self.hosts.items()}


@dataclass(frozen=True)
class LockReleaseResult:
    hosts: dict[str, bool]  # host -> whether a lock was there

    def outcome(self, host: str) -> str:
        return "released" if self.hosts[host] else "was not locked"

    def to_json(self) -> Json:
        return {"hosts": {name: self.outcome(name) for name in self.hosts}}


@dataclass(frozen=True)
class HostLogLines:
    slot: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class LogsResult:
    hosts: dict[str, HostLogLines]

    def to_json(self) -> Json:
        return {"hosts": {name: {"slot": h.slot, "lines": list(h.lines)}
                          for name, h in self.hosts.items()}}
