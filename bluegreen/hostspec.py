"""SSH host specs as written in bluegreen.toml and on the command line: ``[user@]host[:port]``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from bluegreen.errors import ConfigError

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    hostname: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname and self.port else self.hostname
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"


def parse_host_spec(spec: str) -> SshTarget:
    """``[user@]host[:port]``, with IPv6 literals as ``[::1]`` or ``[::1]:22`` (or bare ``::1``)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"invalid host {spec!r}: {why}",
            hint="write hosts as host, user@host, host:port or user@[ipv6]:port",
        )

    if not spec or spec != spec.strip() or any(c.isspace() for c in spec):
        raise bad("empty or contains whitespace")
    user: str | None = None
    rest = spec
    if "@" in spec:
        user, rest = spec.rsplit("@", 1)
        if not _USER_RE.fullmatch(user):
            raise bad(f"{user!r} is not a valid user name")
    port_text: str | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise bad("missing ']' after an IPv6 address")
        hostname, after = rest[1:close], rest[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise bad(f"unexpected {after!r} after ']'")
            port_text = after[1:]
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise bad(f"{hostname!r} is not an IPv6 address") from None
    elif rest.count(":") > 1:  # a bare IPv6 literal cannot carry a port
        hostname = rest
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise bad("use [address]:port for IPv6 addresses with a port") from None
    else:
        hostname, _, port_text = rest.partition(":")
        if not _HOSTNAME_RE.fullmatch(hostname):
            raise bad(f"{hostname!r} is not a valid host name")
        if not _:
            port_text = None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshTarget(user=user, hostname=hostname, port=port)
