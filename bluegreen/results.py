"""What each command returns: frozen values the CLI alone renders, as text or as JSON.

Operations build these and never print or shape JSON themselves (pipx's ``result.py`` is
the model); ``bluegreen/cli/`` turns them into lines, or into the ``--json`` envelope whose
``result`` is each value's :meth:`to_json`. A change of a payload is a change here (and of
the README's "JSON output" section, which lists every key).

The operations' result lives here; ``bg status``'s in :mod:`bluegreen.results_status`, and
history's, the lock's and logs' in :mod:`bluegreen.results_history`, so that a command
builds only its own classes at start-up (each frozen dataclass costs ~0.3 ms to create).
Their names are importable from here too, each module loaded on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bluegreen.results_history import HistoryResult as HistoryResult
    from bluegreen.results_history import HostLogLines as HostLogLines
    from bluegreen.results_history import LockHolder as LockHolder
    from bluegreen.results_history import LockReleaseResult as LockReleaseResult
    from bluegreen.results_history import LockStatusResult as LockStatusResult
    from bluegreen.results_history import LogsResult as LogsResult
    from bluegreen.results_history import OperationSummary as OperationSummary
    from bluegreen.results_status import HostStatus as HostStatus
    from bluegreen.results_status import LbStatus as LbStatus
    from bluegreen.results_status import NginxStatus as NginxStatus
    from bluegreen.results_status import SlotStatus as SlotStatus
    from bluegreen.results_status import StatusResult as StatusResult

# The version of the ``--json`` envelope (its ``schema`` key): raised when a key changes
# meaning or goes away; adding a key keeps it.
SCHEMA_VERSION = 1

Json = dict[str, Any]

_ELSEWHERE = {
    **dict.fromkeys(("HostStatus", "LbStatus", "NginxStatus", "SlotStatus", "StatusResult"),
                    "bluegreen.results_status"),
    **dict.fromkeys(("HistoryResult", "HostLogLines", "LockHolder", "LockReleaseResult",
                     "LockStatusResult", "LogsResult", "OperationSummary"),
                    "bluegreen.results_history"),
}


def __getattr__(name: str) -> Any:
    """``from bluegreen.results import StatusResult``: its module, loaded on first use."""
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
