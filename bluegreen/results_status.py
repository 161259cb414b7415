"""``bg status``'s result (see :mod:`bluegreen.results`): what runs where, per host and
load balancer, and the problems found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bluegreen.results import Json


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
