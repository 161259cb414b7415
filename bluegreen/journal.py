"""The journal (``bg/journal.jsonl``): an append-only record of every operation's steps.

Written ahead: each step's entries travel in front of the next script bg runs on the host
(no extra round trip), so a crash loses at most the outcome of the step it interrupted.
"""

from __future__ import annotations

import json
from typing import Any

from bluegreen.host import Host, controller_identity
from bluegreen.layout import Layout
from bluegreen.shell import q
from bluegreen.state import now_iso


class Journal:
    """Append-only record of operations; entries wait in ``pending`` until the next script
    bg sends to the host carries them (:meth:`script` hands them over once)."""

    def __init__(self, host: Host, paths: Layout, operation: str) -> None:
        self.host = host
        self.paths = paths
        self.operation = operation
        self.entries: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self._who = controller_identity()

    def record(self, step: str, outcome: str, **detail: Any) -> None:
        entry: dict[str, Any] = {"time": now_iso(), "op": self.operation, "step": step}
        entry["outcome"] = outcome
        entry.update({k: v for k, v in detail.items() if v is not None})
        entry["user"] = self._who["user"]
        entry["controller"] = self._who["controller"]
        entry["pid"] = self._who["pid"]
        self.entries.append(entry)
        self.pending.append(entry)

    def begin(self, command: str, time: str) -> None:
        """The operation's first entry (``time``: when it began), in front of any recorded
        while it took the lock."""
        self.record("begin", "ok", command=command, time=time)
        entry = self.entries.pop()
        self.pending.remove(entry)
        self.entries.insert(0, entry)
        self.pending.insert(0, entry)

    def script(self) -> str:
        """Shell that appends the pending entries (empty when there are none); once."""
        if not self.pending:
            return ""
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.pending)
        self.pending = []
        return f"printf '%s' {q(lines)} >> {q(self.paths.journal)} 2>/dev/null || true"


def read_journal(host: Host, paths: Layout, limit: int = 50) -> list[dict[str, Any]]:
    result = host.run(f"tail -n {int(limit)} {q(paths.journal)} 2>/dev/null || true")
    out = []
    for line in result.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out
