"""What each command returns: frozen values the CLI alone renders, as text or as JSON.

Operations build these and never print or shape JSON themselves (pipx's ``result.py`` is
the model); ``bluegreen/cli/`` turns them into lines, or into the ``--json`` envelope whose
``result`` is each value's :meth:`to_json`. A change of a payload is a change here (and of
the README's "JSON output" section, which lists every key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The version of the ``--json`` envelope (its ``schema`` key): raised when a key changes
# meaning or goes away; adding a key keeps it.
SCHEMA_VERSION = 1

Json = dict[str, Any]


# ------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class StepTiming:
    title: str
    seconds: float
    ok: bool
    note: str = ""

    def to_json(self) -> Json:
        return {"title": self.title, "seconds": self.seconds, "ok": self.ok,
                "note": self.note}


@dataclass(frozen=True)
class HostOutcome:
    host: str
    outcome: str  # "switched", "unchanged", "restored", "failed: ..."
    commands: int

    def to_json(self) -> Json:
        return {"host": self.host, "outcome": self.outcome, "commands": self.commands}


@dataclass(frozen=True)
class OperationResult:
    """deploy, switch, rollback, setup, migrate, promote, abort, remove."""

    operation: str
    app: str
    target: str
    version: str | None
    slot: str | None
    previous_slot: str | None
    previous_version: str | None
    hosts: tuple[HostOutcome, ...]
    steps: tuple[StepTiming, ...]
    seconds: float
    summary: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {
            "operation": self.operation,
            "app": self.app,
            "target": self.target,
            "version": self.version,
            "slot": self.slot,
            "previous": {"slot": self.previous_slot, "version": self.previous_version},
            "hosts": [h.to_json() for h in self.hosts],
            "steps": [s.to_json() for s in self.steps],
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------ status


@dataclass(frozen=True)
class SlotStatus:
    port: int
    version: str | None
    release: str | None  # the release directory the slot's link points at
    running: bool
    healthy: bool
    live: bool

    def to_json(self) -> Json:
        return {"port": self.port, "version": self.version, "release": self.release,
                "running": self.running, "healthy": self.healthy, "live": self.live}


@dataclass(frozen=True)
class NginxStatus:
    upstream_slot: str | None
    upstream_port: int | None
    serving: str | None  # the X-BG-Slot a probe through nginx answered with

    def to_json(self) -> Json:
        return {"upstream_slot": self.upstream_slot, "upstream_port": self.upstream_port,
                "serving": self.serving}


@dataclass(frozen=True)
class HostStatus:
    host: str
    live: str | None
    version: str | None
    previous: str | None
    updated_at: str
    slots: dict[str, SlotStatus]
    nginx: NginxStatus
    lock: Json | None  # the lock's holder, as its holder.json says
    interrupted: str | None  # the command of a dead holder
    in_progress: str | None  # a running holder, described
    transient: tuple[str, ...]  # differences expected while ``in_progress`` runs
    problems: tuple[str, ...]

    def to_json(self) -> Json:
        return {
            "host": self.host, "live": self.live, "version": self.version,
            "previous": self.previous, "updated_at": self.updated_at,
            "slots": {name: s.to_json() for name, s in self.slots.items()},
            "nginx": self.nginx.to_json(), "lock": self.lock,
            "interrupted": self.interrupted, "in_progress": self.in_progress,
            "transient": list(self.transient), "problems": list(self.problems),
        }


@dataclass(frozen=True)
class LbStatus:
    host: str
    servers: tuple[str, ...]  # "address:port" its upstream lists
    serving: str | None
    problems: tuple[str, ...]

    def to_json(self) -> Json:
        return {"host": self.host, "servers": list(self.servers), "serving": self.serving,
                "problems": list(self.problems)}


@dataclass(frozen=True)
class StatusResult:
    app: str
    target: str
    hosts: tuple[HostStatus, ...]
    balancers: tuple[LbStatus, ...] = ()
    has_balancers: bool = False  # the target has load balancers ("lbs" is then in the JSON)
    canary: Json | None = None  # a running canary (ops/canary.py: status)

    @property
    def diverged(self) -> bool:
        return len({(h.live, h.version) for h in self.hosts}) > 1

    @property
    def divergence(self) -> str:
        if not self.diverged:
            return ""
        return ", ".join(f"{h.host}: {h.live or '-'} ({h.version or '-'})" for h in self.hosts)

    @property
    def problems(self) -> list[str]:
        """Every problem, prefixed by its host (load balancers' too)."""
        listed: list[HostStatus | LbStatus] = [*self.hosts, *self.balancers]
        return [f"{h.host}: {p}" for h in listed for p in h.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> Json:
        return {
            **({"canary": self.canary} if self.canary else {}),
            "app": self.app,
            "target": self.target,
            "hosts": [h.to_json() for h in self.hosts],
            **({"lbs": [lb.to_json() for lb in self.balancers]} if self.has_balancers else {}),
            "diverged": self.diverged,
            "divergence": self.divergence,
            "ok": self.ok,
        }


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
