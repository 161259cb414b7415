"""Plans are data: what an operation will do, decided from config and host states alone.

A planner turns the goal of an operation ("V live on every host") and each host's
reconciled state into a :class:`Plan`: a per-host action and an ordered tuple of frozen
step objects, each naming the hosts it touches. The executor (``ops/executor.py``) runs
exactly these steps; ``--dry-run`` renders exactly these steps; tests assert on them
without any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bluegreen.config import Config
from bluegreen.errors import BgError, StateError
from bluegreen.ops.plansteps import Boot as Boot  # the steps, planned here
from bluegreen.ops.plansteps import CanarySpec as CanarySpec
from bluegreen.ops.plansteps import Finish as Finish
from bluegreen.ops.plansteps import Hold as Hold
from bluegreen.ops.plansteps import Hook as Hook
from bluegreen.ops.plansteps import Step as Step
from bluegreen.ops.plansteps import Switch as Switch
from bluegreen.ops.plansteps import Upload as Upload
from bluegreen.ops.plansteps import Verify as Verify
from bluegreen.state import HostState


class Action(StrEnum):
    NOTHING = "nothing to do"  # already live with the goal's version and healthy
    SWITCH = "switch only"  # the goal's version is warm in the idle slot
    START = "start, gate, switch"  # the release is on the host; its slot must boot
    SHIP = "ship, start, gate, switch"  # upload first


@dataclass(frozen=True)
class HostPlan:
    host: str
    action: Action
    slot: str  # the slot live after the operation
    version: str
    old_slot: str | None  # the slot live before (None: nothing deployed yet)
    old_version: str | None
    retire: str | None  # the slot stopped once nginx drained

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "action": self.action.value, "slot": self.slot,
                "version": self.version, "old_slot": self.old_slot,
                "old_version": self.old_version, "retire": self.retire}


@dataclass(frozen=True)
class Plan:
    operation: str
    version: str
    hosts: tuple[HostPlan, ...]
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = field(default=())

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.host == name)

    @property
    def acting(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.action is not Action.NOTHING)

    def describe(self, config: Config) -> list[str]:
        return [step.describe(config) for step in self.steps]

    def to_json(self, config: Config) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "version": self.version,
            "hosts": [h.to_json() for h in self.hosts],
            "steps": [{"kind": type(s).__name__.lower(), "hosts": list(s.hosts),
                       "description": s.describe(config)} for s in self.steps],
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- planners


@dataclass(frozen=True)
class HostFacts:
    """What a planner needs to know of one host, beyond config."""

    state: HostState
    warm: Mapping[str, bool]  # slot -> running and healthy right now
    release_sha: str = ""  # sha256 recorded for the goal's release ("" when absent)


def plan_deploy(config: Config, facts: Mapping[str, HostFacts], version: str, *,
                sha256: str, retire: bool, boot_batch: int, front: tuple[str, ...] = (),
                verify: bool = True) -> Plan:
    """Goal: ``version`` live on every host. Per host: nothing, switch only, or ship;
    with ``[verify] window`` (and ``verify``), a verification window after the switch."""
    hosts: list[HostPlan] = []
    for name, f in facts.items():
        s = f.state
        if f.release_sha and f.release_sha != sha256:
            raise BgError(
                f"{name}: release {version} already exists there with another checksum",
                hint="a version names one build forever: deploy it under a new version",
            )
        if s.live is not None and s.live_version == version and f.warm.get(s.live, False):
            action, slot = Action.NOTHING, s.live
        elif s.live is not None and s.version_of(s.idle) == version and f.warm.get(s.idle):
            action, slot = Action.SWITCH, s.idle
        else:
            action = Action.START if f.release_sha == sha256 else Action.SHIP
            slot = s.idle
        hosts.append(_host_plan(name, s, action, slot, version, retire))
    return _assemble(config, "deploy", version, hosts, boot_batch=boot_batch, prune=True,
                     front=front, window=config.verify.window if verify else 0.0)


def plan_switch(config: Config, facts: Mapping[str, HostFacts], *, to: str | None,
                retire: bool, boot_batch: int, front: tuple[str, ...] = ()) -> Plan:
    """Goal: traffic on slot ``to`` (default: the idle slot, when hosts agree on one)."""
    states = {n: f.state for n, f in facts.items()}
    if all(s.live is None for s in states.values()):
        raise BgError("nothing is deployed yet: deploy a release before switching")
    if to is None:
        lives = {s.live for s in states.values()}
        if len(lives) > 1:
            raise StateError(
                "hosts are live on different slots ("
                + ", ".join(f"{n}: {s.live or '-'}" for n, s in states.items()) + ")",
                hint="choose one with `bg switch --to blue|green`, or converge with"
                " `bg deploy VERSION`",
            )
        to = states[next(iter(states))].idle
    hosts: list[HostPlan] = []
    versions = set()
    for name, f in facts.items():
        s = f.state
        version = s.version_of(to)
        if s.live == to:
            hosts.append(_host_plan(name, s, Action.NOTHING, to, s.live_version or "", retire))
            continue
        if version is None:
            raise BgError(f"{name}: {to} has never run a release, so traffic cannot switch to it",
                          hint="deploy a release first: `bg deploy ARTIFACT`")
        versions.add(version)
        action = Action.SWITCH if f.warm.get(to) else Action.START
        hosts.append(_host_plan(name, s, action, to, version, retire))
    if not any(h.action is not Action.NOTHING for h in hosts):
        live = next(iter(states.values()))
        raise BgError(f"{to} is already live ({live.live_version})")
    label = versions.pop() if len(versions) == 1 else "mixed"
    return _assemble(config, "switch", label, hosts, boot_batch=boot_batch, prune=False,
                     front=front)


def plan_rollback(config: Config, facts: Mapping[str, HostFacts], *, retire: bool,
                  boot_batch: int, front: tuple[str, ...] = ()) -> Plan:
    """Goal: every host back on the release live before its current one."""
    states = {n: f.state for n, f in facts.items()}
    if all(s.live is None for s in states.values()):
        raise BgError("nothing is deployed yet, so there is nothing to roll back to")
    lives = {(s.live_version, s.previous) for s in states.values()}
    if len(lives) > 1:
        listing = ", ".join(f"{n}: {s.live_version or '-'} (previous {s.previous or '-'})"
                            for n, s in states.items())
        raise StateError(
            f"hosts run different releases ({listing}); a rollback would take them to"
            " different places",
            hint="roll back the hosts that differ with `bg rollback --hosts NAME`, or put"
            " every host on one release with `bg deploy VERSION`",
        )
    hosts: list[HostPlan] = []
    for name, f in facts.items():
        s = f.state
        if s.previous is None:
            raise BgError(
                f"no previous release is recorded (live: {s.live_version} on {s.live})",
                hint="deploy the release you want with `bg deploy`",
            )
        slot = s.idle
        warm = f.warm.get(slot, False) and s.version_of(slot) == s.previous
        hosts.append(_host_plan(name, s, Action.SWITCH if warm else Action.START, slot,
                                s.previous, retire))
    version = hosts[0].version
    return _assemble(config, "rollback", version, hosts, boot_batch=boot_batch, prune=False,
                     front=front)


def _host_plan(name: str, s: HostState, action: Action, slot: str, version: str,
               retire: bool) -> HostPlan:
    moving = action is not Action.NOTHING and s.live is not None and s.live != slot
    return HostPlan(
        host=name, action=action, slot=slot, version=version,
        old_slot=s.live, old_version=s.live_version,
        retire=s.live if (retire and moving) else None,
    )


def _assemble(config: Config, operation: str, version: str, hosts: list[HostPlan], *,
              boot_batch: int, prune: bool, front: tuple[str, ...] = (),
              window: float = 0.0) -> Plan:
    acting = [h for h in hosts if h.action is not Action.NOTHING]
    booting = [h for h in acting if h.action in (Action.START, Action.SHIP)]
    shipping = tuple(h.host for h in acting if h.action is Action.SHIP)
    steps: list[Step] = []
    env = tuple(h.host for h in booting) if config.app.env_file else ()
    if shipping or env:
        # The env file is loaded at start: every host that boots gets it (when changed).
        steps.append(Upload(version, shipping, env))
    names = tuple(h.host for h in booting)
    for cmd in config.hooks.before_start if booting else ():
        steps.append(Hook("before_start", cmd, names))
    if booting:
        steps.append(Boot(
            version=version,
            slots={h.host: h.slot for h in booting},
            extract=shipping,
            batch=max(1, min(boot_batch, len(booting))),
        ))
    switching = tuple(h.host for h in acting)
    if acting:
        for cmd in config.hooks.before_switch:
            steps.append(Hook("before_switch", cmd, switching))
        steps.append(Switch(slots={h.host: h.slot for h in acting},
                            versions={h.host: h.version for h in acting}, front=front,
                            fleet={h.host: h.slot for h in hosts}))
        for cmd in config.hooks.after_switch:
            steps.append(Hook("after_switch", cmd, switching))
        back = {h.host: h.old_slot for h in acting if h.old_slot and h.old_slot != h.slot}
        if window > 0 and back:  # a first deploy has nothing to go back to
            steps.append(Verify(window, {h: s for h, s in
                                         ((h.host, h.slot) for h in acting) if h in back},
                                back, front))
        steps.append(Finish(
            slots={h.host: h.slot for h in acting},
            versions={h.host: h.version for h in acting},
            retire={h.host: h.retire for h in acting if h.retire},
            prune=prune,
            front=front,
        ))
        if operation == "deploy":
            for cmd in config.hooks.after_deploy:
                steps.append(Hook("after_deploy", cmd, switching))
    return Plan(operation=operation, version=version, hosts=tuple(hosts), steps=tuple(steps))
