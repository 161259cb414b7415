"""The steps a plan is made of: frozen data naming the hosts each touches, and how each
describes itself (``--dry-run``); :mod:`bluegreen.ops.steps` runs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bluegreen.config import Config
from bluegreen.ops.watchsteps import CanarySpec as CanarySpec
from bluegreen.ops.watchsteps import Hold as Hold
from bluegreen.ops.watchsteps import Verify as Verify


@dataclass(frozen=True)
class Upload:
    """Env file and artifact to every host that lacks the release."""

    version: str
    hosts: tuple[str, ...]
    env_hosts: tuple[str, ...]

    def describe(self, config: Config) -> str:
        env = (f"env file to shared/env (0600) on {_names(self.env_hosts)}, where it changed"
               if self.env_hosts else "")
        if not self.hosts:
            return env
        return f"upload release {self.version} to {_names(self.hosts)}" + (f"; {env}" if env
                                                                            else "")


@dataclass(frozen=True)
class Boot:
    """Stop what runs in the slot, point it at the release, start it, health-gate it; at
    most ``batch`` hosts at a time (``boot_limit``)."""

    version: str
    slots: Mapping[str, str]  # host -> slot
    extract: tuple[str, ...]  # hosts that extract the uploaded tarball first
    batch: int

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        h = config.health
        gate = (f"GET {h.path} until {h.expect} x{h.successes} ({h.deadline:g}s at most)")
        per = _per_slot(self.slots, config)
        batch = f", {self.batch} host(s) at a time" if self.batch < len(self.slots) else ""
        return f"start {self.version} in {per}; health gate: {gate}{batch}"


@dataclass(frozen=True)
class Hook:
    point: str
    command: str
    hosts: tuple[str, ...]

    def describe(self, config: Config) -> str:
        where = ("the controller" if self.command.startswith("local:")
                 else "the first host" if self.command == "migrate" else _names(self.hosts))
        return f"hook {self.point}: {self.command} (on {where})"


@dataclass(frozen=True)
class Switch:
    """Two-phase nginx switch of every listed host: stage + test everywhere, then reload
    and confirm each; any failure restores every host."""

    slots: Mapping[str, str]  # host -> slot it switches to
    versions: Mapping[str, str]
    # Load balancers in front of the app hosts: nginx runs on these only, each one's
    # upstream listing every app host's live slot (``fleet``: every planned host -> its
    # slot afterwards). Empty: nginx runs on the app hosts.
    front: tuple[str, ...] = ()
    fleet: Mapping[str, str] = field(default_factory=dict)
    canary: CanarySpec | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        where = f" on load balancers {_names(self.front)}" if self.front else ""
        if self.canary is not None:
            sticky = ", sticky per client address" if self.canary.sticky else ""
            return (f"canary: nginx{where} sends {self.canary.percent}% of new requests to"
                    f" {_per_slot(self.slots, config)}{sticky}, the rest to"
                    f" {_per_slot(self.canary.old, config)}: stage,"
                    f" {config.nginx.test_command}, reload, confirm through nginx")
        reach = "; every load balancer reaches each new slot first" if self.front else ""
        return (f"switch nginx{where} to {_per_slot(self.slots, config)}{reach}: stage,"
                f" {config.nginx.test_command}, reload, confirm through nginx")


@dataclass(frozen=True)
class Finish:
    """Record the state, wait for nginx's old workers, retire old slots, prune."""

    slots: Mapping[str, str]  # host -> live slot after the operation
    versions: Mapping[str, str]
    retire: Mapping[str, str]  # host -> slot to stop
    prune: bool
    front: tuple[str, ...] = ()  # load balancers: nginx's old workers are drained there

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        out = "record state"
        if self.retire:
            where = f" on {_names(self.front)}" if self.front else ""
            sockets = ("" if self.front else
                       f", open sockets {config.switch.socket_grace:g}s, then a graceful stop")
            out += (f"; wait for nginx's old workers{where}"
                    f" (<= {config.switch.drain_timeout:g}s{sockets});"
                    f" stop {_per_slot(self.retire, config, ports=False)}")
        if self.prune:
            out += f"; prune releases beyond {config.app.keep_releases}"
        return out


Step = Upload | Boot | Hook | Switch | Verify | Hold | Finish


def _names(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts) if len(hosts) <= 4 else f"{len(hosts)} hosts"


def _per_slot(slots: Mapping[str, str], config: Config, *, ports: bool = True) -> str:
    groups: dict[str, list[str]] = {}
    for host, slot in slots.items():
        groups.setdefault(slot, []).append(host)
    parts = []
    for slot, hosts in groups.items():
        port = f" (:{config.slots[slot]})" if ports else ""
        where = "" if len(groups) == 1 and len(slots) == 1 else f" on {_names(tuple(hosts))}"
        parts.append(f"{slot}{port}{where}")
    return "; ".join(parts)
