"""libvirtd and virtlogd for the VM, and the removal of what libvirt made for it.

On a machine whose service manager runs no libvirtd (a container, CI), the daemons are started
here, as children of a thread that is inside the rehearsal's network namespace, so libvirt's
networks (bridge, dnsmasq, NAT rules) are made there. A libvirtd already running cannot be used:
it lives in this machine's own namespace, where the VM's network must never be.

What libvirt holds is snapshotted before the VM is made (domains, networks, storage pools and
volumes); :meth:`Libvirt.remove_new` removes whatever is not in that snapshot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class LibvirtError(RuntimeError):
    pass


def answering(sock: Path = SOCKET) -> bool:
    """A libvirtd accepts connections on its system socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def virsh(*args: str, check: bool = True, timeout: float = 120.0) -> str:
    proc = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LibvirtError(f"virsh {' '.join(args)}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


@dataclass
class Snapshot:
    domains: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    pools: set[str] = field(default_factory=set)
    volumes: set[tuple[str, str]] = field(default_factory=set)  # (pool, volume)


def _names(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def snapshot() -> Snapshot:
    pools = _names(virsh("pool-list", "--all", "--name"))
    volumes = set()
    for pool in pools:
        out = virsh("vol-list", "--pool", pool, check=False)
        volumes |= {(pool, line.split()[0]) for line in out.splitlines() if line.split()}
    return Snapshot(domains=_names(virsh("list", "--all", "--name")),
                    networks=_names(virsh("net-list", "--all", "--name")),
                    pools=pools, volumes=volumes)


class Libvirt:
    """The daemons (started here when none runs) and the cleanup of what was made."""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.started: list[tuple[str, Path]] = []  # (daemon, pid file), in start order
        self.before = Snapshot()

    def start(self) -> None:
        if answering():
            raise LibvirtError(
                "a libvirtd already runs on this machine, in its own network namespace; the"
                " VM's network must live in the rehearsal's namespace (stop that libvirtd, e.g."
                " `systemctl stop libvirtd`)")
        self.rundir.mkdir(parents=True, exist_ok=True)
        for daemon in ("virtlogd", "libvirtd"):
            pid_file = self.rundir / f"{daemon}.pid"
            proc = subprocess.run([daemon, "-d", "-p", str(pid_file)], capture_output=True,
                                  text=True, timeout=60, check=False,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise LibvirtError(f"{daemon} -d failed (exit {proc.returncode}): "
                                   f"{proc.stderr.strip()}")
            self.started.append((daemon, pid_file))
        deadline = time.monotonic() + START_TIMEOUT
        while not answering():
            if time.monotonic() > deadline:
                raise LibvirtError(f"libvirtd did not answer on {SOCKET} in"
                                   f" {START_TIMEOUT:.0f}s")
            time.sleep(0.2)
        self.before = snapshot()

    def remove_new(self) -> list[str]:
        """Destroy and undefine every domain, network, volume and pool made since start.
        Returns what could not be removed."""
        problems: list[str] = []
        try:
            now = snapshot()
        except (LibvirtError, OSError, subprocess.TimeoutExpired) as exc:
            return [f"libvirt: {exc}"]

        def run(*args: str) -> None:
            try:
                virsh(*args)
            except (LibvirtError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc))

        for dom in sorted(now.domains - self.before.domains):
            virsh("destroy", dom, check=False)
            run("undefine", dom, "--remove-all-storage", "--nvram")
        for net in sorted(now.networks - self.before.networks):
            virsh("net-destroy", net, check=False)
            run("net-undefine", net)
        # Networks started in this namespace die with it: stop them so libvirt does not
        # believe them active later.
        for net in sorted(_names(virsh("net-list", "--name", check=False))):
            virsh("net-destroy", net, check=False)
        for pool, vol in sorted(set(snapshot().volumes) - self.before.volumes):
            run("vol-delete", "--pool", pool, vol)
        for pool in sorted(now.pools - self.before.pools):
            virsh("pool-destroy", pool, check=False)
            run("pool-undefine", pool)
        return problems

    def stop(self) -> list[str]:
        """Stop the daemons started here (libvirtd first); what would not stop."""
        problems = []
        for daemon, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                problems.append(f"{daemon}: no pid in {pid_file}")
                continue
            if not _terminate(pid):
                problems.append(f"{daemon} (pid {pid}) did not stop")
            with contextlib.suppress(OSError):
                pid_file.unlink()
        self.started.clear()
        with contextlib.suppress(OSError):
            self.rundir.rmdir()
        return problems


def _terminate(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            return not alive(pid)
        time.sleep(0.1)
    return True


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
