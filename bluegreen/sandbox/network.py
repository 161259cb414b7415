"""The sandbox's links: each host's own veth to this machine, and an optional shared bridge.

Host N's own link is a veth pair ``bgsNa`` (here, 10.231.N.1/30) - ``bgsNb`` (inside,
10.231.N.2/30): this machine reaches the host, the hosts do not reach each other. With a shared
network, each host also gets ``bglNb`` inside (10.232.0.N/24), whose peer ``bglNa`` is a port of
the sandbox's bridge ``bgbrM`` (M: its first host's index) here, so every host reaches every
other host's shared address, as app hosts and load balancers on one LAN do. The bridge has no
address here: shared addresses exist only inside the sandbox's namespaces, and two sandboxes'
bridges never route into each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from bluegreen.sandbox.host import SandboxHost
from bluegreen.sandbox.netns import SandboxError, link_exists, run, try_run

SHARED_NETWORK = "10.232.0"
BRIDGE_PREFIX = "bgbr"


def own_address(index: int) -> str:
    return f"10.231.{index}.2"


def shared_address(index: int) -> str:
    return f"{SHARED_NETWORK}.{index}"


def bridge_name(first_index: int) -> str:
    return f"{BRIDGE_PREFIX}{first_index}"


def connect(host: SandboxHost) -> None:
    """The host's own veth pair, with lo up inside."""
    i, outside, inside = host.index, host.veth, f"bgs{host.index}b"
    outside_cmds = [
        f"link add {outside} type veth peer name {inside} netns {host.netns}",
        f"addr add 10.231.{i}.1/30 dev {outside}",
        f"link set {outside} up",
    ]
    inside_cmds = [
        f"addr add {host.address}/30 dev {inside}", f"link set {inside} up", "link set lo up"
    ]
    run(["ip", "-batch", "-"], stdin="\n".join(outside_cmds) + "\n")
    run(["ip", "-n", host.netns, "-batch", "-"], stdin="\n".join(inside_cmds) + "\n")


def create_bridge(name: str) -> None:
    """Claim ``name``: ``ip link add`` fails if any bridge (say a stale one) already has it."""
    proc = run(["ip", "link", "add", "name", name, "type", "bridge"], check=False)
    if proc.returncode != 0:
        raise SandboxError(f"cannot create the sandbox bridge {name}", detail=proc.stderr.strip())
    run(["ip", "link", "set", name, "up"])


def join_bridge(host: SandboxHost, bridge: str) -> None:
    """A second veth pair from the host to ``bridge``, holding ``host.shared_address``."""
    if host.shared_address is None:
        raise SandboxError(f"{host.netns} has no shared address to join {bridge} with")
    outside, inside = host.shared_veth, f"bgl{host.index}b"
    outside_cmds = [
        f"link add {outside} type veth peer name {inside} netns {host.netns}",
        f"link set {outside} master {bridge}",
        f"link set {outside} up",
    ]
    inside_cmds = [f"addr add {host.shared_address}/24 dev {inside}", f"link set {inside} up"]
    run(["ip", "-batch", "-"], stdin="\n".join(outside_cmds) + "\n")
    run(["ip", "-n", host.netns, "-batch", "-"], stdin="\n".join(inside_cmds) + "\n")


def disconnect(hosts: Sequence[SandboxHost], bridge: str | None) -> list[str]:
    """Delete every link the sandbox made here; the problems met, as lines."""
    problems: list[str] = []
    for host in hosts:
        for link in (host.veth, host.shared_veth):
            if link_exists(link):
                problems += try_run(["ip", "link", "del", link])
    if bridge is not None and link_exists(bridge):
        problems += try_run(["ip", "link", "del", bridge])
    return problems
