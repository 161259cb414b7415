"""Per-host state (``bg/state.json``), the journal and the lock.

State is small and written atomically (temporary file + rename). The journal is
append-only JSON lines, written ahead: each step's entries travel in front of the next
script bg runs on the host (no extra round trip), so a crash loses at most the outcome of
the step it interrupted. The lock is a directory made with ``mkdir`` (atomic on every
POSIX filesystem) holding the holder's details, so a second ``bg`` sees who holds it and
since when; a holder that provably died (same controller, process gone) is taken over.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bluegreen.config import SLOTS
from bluegreen.errors import LockHeldError, StaleLockError, StateError
from bluegreen.host import Host, controller_identity
from bluegreen.layout import Layout
from bluegreen.shell import ScriptExit, q, safe_token

STATE_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_STATE_HINT = ("restore it from a backup or remove it and run `bg setup`"
               " (bg then treats the host as new)")
_STATE_KEYS = frozenset({"format", "live", "versions", "previous", "updated_at"})
_TIMESTAMP = re.compile(r"^(|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})?)$")


def _state_slot(value: Any, where: str, key: str) -> str | None:
    """A slot name from a state file: None, "blue" or "green"; else StateError."""
    if value is None and key == "live":
        return None
    if not isinstance(value, str) or value not in SLOTS:
        raise StateError(f"{where}: key {key!r} holds {value!r:.80}, which is neither blue"
                         " nor green", hint=_STATE_HINT)
    return value


def _state_version(value: Any, where: str, key: str) -> str | None:
    """A version from a state file: None or a plain token (see ``safe_token``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError(f"{where}: key {key!r} must be a version string, got {value!r:.80}",
                         hint=_STATE_HINT)
    try:
        return safe_token(value, "version")
    except ValueError as exc:
        raise StateError(f"{where}: key {key!r}: {exc}", hint=_STATE_HINT) from exc


@dataclass(frozen=True)
class HostState:
    """What bg last made true on a host."""

    live: str | None = None
    versions: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(SLOTS))
    previous: str | None = None  # the version live before the current one
    updated_at: str = ""

    def version_of(self, slot: str | None) -> str | None:
        return self.versions.get(slot) if slot else None

    @property
    def live_version(self) -> str | None:
        return self.version_of(self.live)

    @property
    def idle(self) -> str:
        return "green" if self.live == "blue" else "blue"

    def to_json(self) -> bytes:
        data = {
            "format": STATE_VERSION,
            "live": self.live,
            "versions": self.versions,
            "previous": self.previous,
            "updated_at": self.updated_at,
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, *, where: str) -> HostState:
        """Parse and validate a host's state file: every value is checked here, before
        any of it can reach a script or a path (a host's files are input like any other).
        Raises StateError naming the file and the key."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise StateError(f"{where} is not a bg state file: {exc}", hint=_STATE_HINT
                             ) from exc
        if not isinstance(data, dict):
            raise StateError(f"{where} is not a bg state file: not a JSON object",
                             hint=_STATE_HINT)
        fmt = data.get("format", STATE_VERSION)
        if fmt != STATE_VERSION or isinstance(fmt, bool):
            raise StateError(f"{where}: format {fmt!r} is not one this bg reads"
                             f" ({STATE_VERSION})", hint=_STATE_HINT)
        unknown = sorted(set(data) - _STATE_KEYS)
        if unknown:
            raise StateError(f"{where}: unknown key {unknown[0]!r}", hint=_STATE_HINT)
        if "live" not in data or "versions" not in data:
            raise StateError(f"{where} is not a bg state file: missing key "
                             f"{'live' if 'live' not in data else 'versions'!r}",
                             hint=_STATE_HINT)
        live = _state_slot(data["live"], where, "live")
        raw_versions = data["versions"]
        if not isinstance(raw_versions, dict):
            raise StateError(f"{where}: key 'versions' must be an object, got"
                             f" {raw_versions!r:.80}", hint=_STATE_HINT)
        for slot in raw_versions:
            _state_slot(slot, where, "versions")
        versions = {slot: _state_version(raw_versions.get(slot), where, f"versions.{slot}")
                    for slot in SLOTS}
        previous = _state_version(data.get("previous"), where, "previous")
        updated = data.get("updated_at", "")
        if not isinstance(updated, str) or not _TIMESTAMP.match(updated):
            raise StateError(f"{where}: key 'updated_at' is not a timestamp: {updated!r:.80}",
                             hint=_STATE_HINT)
        if live is not None and versions.get(live) is None:
            raise StateError(f"{where}: live slot {live} has no version recorded")
        return cls(live=live, versions=versions, previous=previous, updated_at=updated)

    def switched(self, slot: str, version: str) -> HostState:
        """The state after traffic moved to ``slot`` running ``version``."""
        versions = dict(self.versions)
        versions[slot] = version
        previous = self.live_version if self.live != slot or self.live_version != version else (
            self.previous
        )
        return replace(self, live=slot, versions=versions, previous=previous, updated_at=now_iso())


def read_state(host: Host, paths: Layout) -> HostState:
    raw = host.read(paths.state)
    if raw is None:
        return HostState()
    return HostState.from_json(raw, where=f"{host.name}:{paths.state}")


def write_state_script(paths: Layout, state: HostState) -> str:
    """Shell that replaces state.json atomically (to batch it with other work)."""
    tmp = q(paths.state + ".tmp")
    return (
        f"printf '%s' {q(state.to_json().decode())} > {tmp} && mv -f {tmp} {q(paths.state)}"
    )


# ----------------------------------------------------------------------------- journal


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


# ----------------------------------------------------------------------------- lock


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot: tells a reused pid apart."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def holder_info(command: str) -> dict[str, Any]:
    who = controller_identity()
    return {
        **who,
        "started": _process_start(os.getpid()),
        "command": command,
        "time": now_iso(),
    }


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this machine and its process no longer exists."""
    if holder.get("controller") != socket.gethostname():
        return False  # another operator's machine: we cannot tell, so we never guess
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    return started == "" or started != holder.get("started")


def describe_holder(holder: dict[str, Any]) -> str:
    age = ""
    try:
        since = datetime.fromisoformat(str(holder["time"]))
        age = f", for {int((datetime.now(UTC) - since).total_seconds())}s"
    except (KeyError, ValueError):
        pass
    return (
        f"{holder.get('user', '?')}@{holder.get('controller', '?')} pid {holder.get('pid', '?')}"
        f" running `{holder.get('command', '?')}` since {holder.get('time', '?')}{age}"
    )


LOCKED_EXIT = ScriptExit.LOCKED


def lock_script(paths: Layout, holder: dict[str, Any]) -> str:
    """mkdir is the atomic test-and-set; on failure print the holder."""
    lock = q(paths.lock)
    info = q(json.dumps(holder, sort_keys=True))
    return (
        f"umask 022; {{ [ -d {q(paths.bg)} ] || mkdir -p {q(paths.bg)}; }}"
        f" && if mkdir {lock} 2>/dev/null; then "
        f"printf '%s\\n' {info} > {lock}/holder.json; "
        f"else cat {lock}/holder.json 2>/dev/null; exit {LOCKED_EXIT}; fi"
    )


def takeover_script(paths: Layout, dead: dict[str, Any], holder: dict[str, Any]) -> str:
    """Take over a lock whose holder died: ``mkdir`` of a directory named after that one
    holder is the atomic claim, so of two operations taking over at once exactly one wins
    (the other sees the winner as holder and exits LOCKED)."""
    lock = q(paths.lock)
    claim = q(f"{paths.lock}/taken-{_claim_id(dead)}")
    info = q(json.dumps(holder, sort_keys=True))
    return (
        f"if mkdir {claim} 2>/dev/null; then "
        f"printf '%s\\n' {info} > {lock}/holder.json.tmp && "
        f"mv -f {lock}/holder.json.tmp {lock}/holder.json; "
        f"else cat {lock}/holder.json 2>/dev/null; exit {LOCKED_EXIT}; fi"
    )


def _claim_id(holder: dict[str, Any]) -> str:
    pid, started = holder.get("pid"), holder.get("started")
    ok = isinstance(pid, int) and isinstance(started, str) and started.isdigit()
    return f"{pid}-{started}" if ok else "unknown"


def parse_holder(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def parse_state(host: Host, paths: Layout, raw: str) -> HostState:
    if not raw.strip():
        return HostState()
    return HostState.from_json(raw.encode(), where=f"{host.name}:{paths.state}")


def raise_held(host: Host, paths: Layout, holder_text: str) -> None:
    holder = parse_holder(holder_text)
    clear = "bg lock release" + ("" if host.name == "local" else " --target <target>")
    if holder_is_gone(holder):
        raise StaleLockError(
            f"{host.name}: the lock is stale: its holder is gone ({describe_holder(holder)})",
            hint=f"make sure no bg is running, then clear it with `{clear}`"
            f" (lock: {paths.lock})",
        )
    raise LockHeldError(
        f"{host.name}: another bg operation holds the lock: {describe_holder(holder)}",
        hint=f"wait for it to finish; if it crashed, clear it with `{clear}`",
    )


def release_script(paths: Layout) -> str:
    return f"rm -rf {q(paths.lock)}"


def read_lock(host: Host, paths: Layout) -> dict[str, Any] | None:
    raw = host.read(f"{paths.lock}/holder.json")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"command": "?", "note": "unreadable holder.json"}
    return data if isinstance(data, dict) else {}
