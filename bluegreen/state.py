"""Per-host state (``bg/state.json``): what bg last made true on a host.

State is small and written atomically (temporary file + rename). The journal is in
:mod:`bluegreen.journal`, the lock in :mod:`bluegreen.lock`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bluegreen.config import SLOTS
from bluegreen.errors import StateError
from bluegreen.host import Host
from bluegreen.layout import Layout
from bluegreen.shell import q, safe_token

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


def parse_state(host: Host, paths: Layout, raw: str) -> HostState:
    if not raw.strip():
        return HostState()
    return HostState.from_json(raw.encode(), where=f"{host.name}:{paths.state}")
