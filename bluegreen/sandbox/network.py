"""The sandbox's links: each host's own veth to this machine, and an optional shared network.

Host N's own link is a veth pair ``bgsNa`` (here, 10.231.N.1/30) - ``bgsNb`` (inside,
10.231.N.2/30): this machine reaches the host, the hosts do not reach each other. With a shared
network, each host also gets ``bglNb`` inside (10.232.0.N/24), whose peer ``bglNa`` is a port of
the bridge ``br0`` in the sandbox's switch namespace ``bgswM`` (M: its first host's index), so
every host reaches every other host's shared address, as app hosts and load balancers on one LAN
do. The bridge lives in a namespace of its own, not here: this machine's firewall (say Docker's
FORWARD policy DROP, which bridged traffic meets when br_netfilter is loaded) never sees the
hosts' traffic, shared addresses exist only inside the sandbox's namespaces, and deleting that
one namespace removes the bridge and all its ports.
"""

from __future__ import annotations

from collections.abc import Sequence

from bluegreen.sandbox.host import SandboxHost
from bluegreen.sandbox.netns import SandboxError, link_exists, netns_exists, run, try_run

SHARED_NETWORK = "10.232.0"
SWITCH_PREFIX = "bgsw"
BRIDGE = "br0"


def own_address(index: int) -> str:
    return f"10.231.{index}.2"


def shared_address(index: int) -> str:
    return f"{SHARED_NETWORK}.{index}"


def switch_name(first_index: int) -> str:
    """The namespace holding the shared network's bridge."""
    return f"{SWITCH_PREFIX}{first_index}"


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


def create_switch(name: str) -> None:
    """Claim the namespace ``name`` (``ip netns add`` fails if it exists, say a stale one) and
    put an up bridge in it."""
    proc = run(["ip", "netns", "add", name], check=False)
    if proc.returncode != 0:
        raise SandboxError(f"cannot create the sandbox switch {name}", detail=proc.stderr.strip())
    run(["ip", "-n", name, "-batch", "-"],
        stdin=f"link add name {BRIDGE} type bridge\nlink set {BRIDGE} up\n")


def join_switch(host: SandboxHost, switch: str) -> None:
    """A veth pair from the host to the bridge in ``switch``, holding ``host.shared_address``."""
    if host.shared_address is None:
        raise SandboxError(f"{host.netns} has no shared address to join {switch} with")
    port, inside = host.shared_veth, f"bgl{host.index}b"
    run(["ip", "link", "add", port, "netns", switch, "type", "veth",
         "peer", "name", inside, "netns", host.netns])
    run(["ip", "-n", switch, "-batch", "-"],
        stdin=f"link set {port} master {BRIDGE}\nlink set {port} up\n")
    inside_cmds = [f"addr add {host.shared_address}/24 dev {inside}", f"link set {inside} up"]
    run(["ip", "-n", host.netns, "-batch", "-"], stdin="\n".join(inside_cmds) + "\n")


def switch_ports(switch: str) -> list[str]:
    """The bridge's ports (each a host's ``bglNa``)."""
    listed = run(["ip", "-n", switch, "-o", "link", "show", "master", BRIDGE]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in listed.splitlines()]


def disconnect(hosts: Sequence[SandboxHost], switch: str | None) -> list[str]:
    """Delete every link and the switch namespace the sandbox made; the problems met."""
    problems: list[str] = []
    for host in hosts:
        if link_exists(host.veth):
            problems += try_run(["ip", "link", "del", host.veth])
    if switch is not None and netns_exists(switch):
        problems += try_run(["ip", "netns", "del", switch])
    return problems
