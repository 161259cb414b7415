"""From `vagrant ssh-config` output to a bg target, so the rehearsal VM is just a host.

    vagrant ssh-config > .vagrant/ssh-config
    python -m bluegreen.vagrant .vagrant/ssh-config >> bluegreen.toml

Vagrant's own ssh-config disables host key checking (StrictHostKeyChecking no,
UserKnownHostsFile /dev/null); bg does not follow it: the target gets its own known_hosts
file, and the first `bg --accept-new-host-keys` records the VM's key.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bluegreen.errors import ConfigError
from bluegreen.tomlwriter import dumps

_LINE = re.compile(r"(\S+?)(?:\s*=\s*|\s+)(.*)")


@dataclass(frozen=True)
class VagrantHost:
    name: str
    hostname: str
    port: int
    user: str
    identity_file: str

    @property
    def spec(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def parse_ssh_config(text: str) -> list[VagrantHost]:
    """Every `Host` block of `vagrant ssh-config` output (one per machine).

    Keys are case-insensitive and separated from their value by spaces, tabs or ``=``; a
    value may be quoted; the first value of a key counts, as in ssh.
    """
    blocks: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key == "host":
            blocks.append({"host": value})
        elif blocks and key not in blocks[-1]:
            blocks[-1][key] = value
    hosts = []
    for b in blocks:
        missing = [k for k in ("hostname", "user", "port") if k not in b]
        if missing:
            raise ConfigError(f"vagrant ssh-config: host {b['host']!r} has no {missing[0]}")
        try:
            port = int(b["port"])
        except ValueError as exc:
            raise ConfigError(f"vagrant ssh-config: bad Port {b['port']!r}") from exc
        if not 1 <= port <= 65535 or not b["hostname"] or re.search(r"\s", b["hostname"]):
            raise ConfigError(f"vagrant ssh-config: host {b['host']!r} has a bad address"
                              f" {b['hostname']!r}:{b['port']}")
        hosts.append(VagrantHost(b["host"], b["hostname"], port, b["user"],
                                 b.get("identityfile", "")))
    if not hosts:
        raise ConfigError("vagrant ssh-config: no Host block found (is the VM up?)")
    return hosts


def target_toml(hosts: list[VagrantHost], *, name: str = "vagrant",
                known_hosts: str = ".vagrant/known_hosts") -> str:
    target: dict[str, object] = {"hosts": [h.spec for h in hosts]}
    if hosts[0].identity_file:
        target["identity_file"] = hosts[0].identity_file
    target["known_hosts"] = known_hosts
    return dumps({"targets": {name: target}})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = Path(args[0]).read_text() if args else sys.stdin.read()
    try:
        print(target_toml(parse_ssh_config(text)), end="")
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
