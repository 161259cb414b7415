"""Plans are data: what an operation will do, decided from config and host state alone.

Operations execute a plan; ``--dry-run`` prints it; tests assert on it without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bluegreen.config import Config
from bluegreen.errors import BgError
from bluegreen.state import HostState


@dataclass(frozen=True)
class Plan:
    operation: str
    version: str
    slot: str  # the slot that will be live
    old_slot: str | None  # the slot live now (None on a first deploy)
    old_version: str | None
    upload: bool  # ship an artifact
    start: bool  # (re)start ``slot`` and health-gate it
    retire: bool  # stop ``old_slot`` once nginx drained
    hooks: tuple[str, ...]
    steps: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _steps(config: Config, p: dict[str, Any]) -> tuple[str, ...]:
    slot, version, old = p["slot"], p["version"], p["old_slot"]
    port = config.slots[slot]
    out = ["lock every host and read its state"]
    if p["upload"]:
        out.append(f"upload and extract release {version} (skipped where already present)")
        if config.app.env_file:
            out.append("upload the env file to shared/env (mode 0600)")
    if p["start"]:
        out.append(
            f"stop whatever runs in {slot}; point {slot} at {version}; start it on :{port}"
        )
        h = config.health
        out.append(
            f"health gate: GET {h.path} on :{port} until {h.expect} x{h.successes}"
            f" (every {h.interval:g}s, {h.timeout:g}s each, {h.deadline:g}s at most)"
        )
    for hook in p["hooks"]:
        out.append(f"hook before_switch: {hook}")
    out.append(f"render upstream -> {slot} (:{port}); stage it; {config.nginx.test_command}")
    out.append(f"reload nginx; confirm X-BG-Slot: {slot} via {config.nginx.probe_url}")
    out.append("record state and journal")
    if p["retire"] and old:
        drain = config.switch.drain_timeout
        out.append(f"wait for nginx's old workers (<= {drain:g}s); stop {old}")
    elif old:
        out.append(f"keep {old} running (warm) for an instant rollback")
    out.append(f"prune releases beyond {config.app.keep_releases}; release the lock")
    return tuple(out)


def _make(config: Config, **p: Any) -> Plan:
    return Plan(**p, steps=_steps(config, p))


def plan_deploy(config: Config, state: HostState, version: str, *, retire: bool) -> Plan:
    live = state.live
    slot = state.idle
    return _make(
        config,
        operation="deploy",
        version=version,
        slot=slot,
        old_slot=live,
        old_version=state.live_version,
        upload=True,
        start=True,
        retire=retire and live is not None,
        hooks=config.hooks.before_switch,
    )


def plan_rollback(config: Config, state: HostState, *, idle_warm: bool, retire: bool) -> Plan:
    if state.live is None:
        raise BgError("nothing is deployed yet, so there is nothing to roll back to")
    target = state.previous
    if target is None:
        raise BgError(
            f"no previous release is recorded (live: {state.live_version} on {state.live})",
            hint="deploy the release you want with `bg deploy`",
        )
    slot = state.idle
    warm = idle_warm and state.version_of(slot) == target
    return _make(
        config,
        operation="rollback",
        version=target,
        slot=slot,
        old_slot=state.live,
        old_version=state.live_version,
        upload=False,
        start=not warm,
        retire=retire,
        hooks=(),
    )


def plan_switch(
    config: Config, state: HostState, *, to: str | None, idle_warm: bool, retire: bool
) -> Plan:
    if state.live is None:
        raise BgError("nothing is deployed yet: deploy a release before switching")
    slot = to or state.idle
    if slot == state.live:
        raise BgError(f"{slot} is already live ({state.live_version})")
    version = state.version_of(slot)
    if version is None:
        raise BgError(f"{slot} has never run a release, so traffic cannot switch to it")
    return _make(
        config,
        operation="switch",
        version=version,
        slot=slot,
        old_slot=state.live,
        old_version=state.live_version,
        upload=False,
        start=not idle_warm,
        retire=retire,
        hooks=(),
    )
