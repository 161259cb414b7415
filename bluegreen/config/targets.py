"""``[targets.NAME]``: where bg deploys - the app hosts, an optional load-balancer tier, and how
to reach them over SSH (defaults and checks in ``TARGET_FIELDS`` of
:mod:`bluegreen.config.schema`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.config.schema import NAME_RE, TARGET_FIELDS, parse_limit, section
from bluegreen.errors import ConfigError


@dataclass(frozen=True)
class TargetConfig:
    name: str
    hosts: tuple[str, ...]
    parallel: int
    identity_file: str | None
    known_hosts: str | None
    host_key_policy: str
    boot_limit: int = 0  # hosts booting new slots at once; 0 = all
    boot_limit_percent: bool = False
    lbs: tuple[str, ...] = ()  # nginx tier; empty = nginx on every app host
    addresses: Mapping[str, str] = field(default_factory=dict)  # app host -> address for LBs
    connect_timeout: float = 10.0  # SSH: TCP connect, banner and key exchange

    @property
    def is_local(self) -> bool:
        return not self.hosts

    def boot_batch(self, hosts: int) -> int:
        """How many hosts boot a new slot at once, out of ``hosts``."""
        if self.boot_limit == 0 or hosts == 0:
            return max(hosts, 1)
        if self.boot_limit_percent:
            return max(1, math.floor(hosts * self.boot_limit / 100))
        return min(self.boot_limit, hosts)

    def address_of(self, spec: str) -> str:
        """The address the load balancers use to reach app host ``spec``."""
        if spec in self.addresses:
            return self.addresses[spec]
        hostport = spec.rsplit("@", 1)[-1]
        if hostport.startswith("["):
            return hostport[1:].split("]", 1)[0]
        return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def parse_targets(path: Path, raw: Any) -> dict[str, TargetConfig]:
    """The ``[targets]`` table of the file at ``path``; none at all is one ``local`` target."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [targets] must be a table of [targets.NAME] tables")
    targets = {name: _target(path, name, data) for name, data in raw.items()}
    if not targets:
        targets["local"] = TargetConfig("local", (), 1, None, None, "strict")
    return targets


def _target(path: Path, name: str, data: Any) -> TargetConfig:
    """One ``[targets.NAME]`` table, validated."""
    if not NAME_RE.match(name):
        raise ConfigError(f"{path}: target name {name!r} must match [a-z][a-z0-9_-]*")
    t = section(path, f"targets.{name}", data, TARGET_FIELDS)
    hosts, lbs, addresses = t["hosts"], t["lbs"], t["addresses"]
    _check_hosts(path, name, hosts)
    _check_lbs(path, name, lbs)
    _check_addresses(path, name, addresses, hosts)
    limit = parse_limit(t["boot_limit"])
    assert limit is not None  # checked by the schema
    return TargetConfig(
        name=name,
        hosts=tuple(hosts),
        parallel=t["parallel"],
        identity_file=t["identity_file"] or None,
        known_hosts=t["known_hosts"] or None,
        host_key_policy=t["host_key_policy"],
        boot_limit=limit[0],
        boot_limit_percent=limit[1],
        lbs=tuple(lbs),
        addresses=dict(addresses),
        connect_timeout=float(t["connect_timeout"]),
    )


def _check_hosts(path: Path, name: str, hosts: list[Any]) -> None:
    """Each app host a ``user@host:port`` word, none twice; ``local`` has none, others some."""
    for i, h in enumerate(hosts):
        if not isinstance(h, str) or not h.strip() or re.search(r"\s", h):
            raise ConfigError(
                f"{path}: targets.{name}.hosts[{i}] must be a host like "
                f"\"deploy@app1.example.com:22\", got {h!r}"
            )
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"{path}: targets.{name}.hosts lists a host twice")
    if name == "local" and hosts:
        raise ConfigError(f"{path}: targets.local is this machine and takes no hosts")
    if name != "local" and not hosts:
        raise ConfigError(f"{path}: targets.{name}.hosts is empty")


def _check_lbs(path: Path, name: str, lbs: list[Any]) -> None:
    """Each load balancer a ``user@host`` word; ``local`` has none."""
    for i, h in enumerate(lbs):
        if not isinstance(h, str) or not h.strip() or re.search(r"\s", h):
            raise ConfigError(
                f"{path}: targets.{name}.lbs[{i}] must be a host like "
                f"\"deploy@lb1.example.com\", got {h!r}"
            )
    if lbs and name == "local":
        raise ConfigError(f"{path}: targets.local is this machine and takes no lbs")


def _check_addresses(path: Path, name: str, addresses: Mapping[str, Any],
                     hosts: list[Any]) -> None:
    """Each entry maps one of the target's app hosts to a host name or IP address."""
    for spec, addr in addresses.items():
        if spec not in hosts:
            raise ConfigError(f"{path}: targets.{name}.addresses.{spec!r} is not one of"
                              f" targets.{name}.hosts")
        if not isinstance(addr, str) or not re.match(r"^[A-Za-z0-9.:\[\]_-]+$", addr):
            raise ConfigError(f"{path}: targets.{name}.addresses.{spec!r} must be a host"
                              f" name or IP address, got {addr!r}")
