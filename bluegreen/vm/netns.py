"""A network namespace of the rehearsal's own, entered by this process's calling thread.

The VM's libvirt network (a bridge, dnsmasq) exists only inside it. bg, vagrant and the load
clients run inside it as well: this thread joins the namespace with setns(2), so every child
process and every socket opened from this thread afterwards are there too. Leaving restores the
namespace the thread had before.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def current() -> str:
    """An identifier of the namespace this thread is in (e.g. ``net:[4026531840]``)."""
    return os.readlink("/proc/thread-self/ns/net")


def identity(name: str) -> str:
    """The identifier of the named namespace, as :func:`current` would report it inside."""
    return f"net:[{os.stat(NETNS_DIR / name).st_ino}]"


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


class NetNamespace:
    """``ip netns add NAME`` (loopback up), entered and left by this thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False
        self._home: int | None = None

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True,
                       text=True)
        self.created = True
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True,
                       capture_output=True, text=True)

    @property
    def inside(self) -> bool:
        return exists(self.name) and current() == identity(self.name)

    def enter(self) -> None:
        if self.inside:
            return
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(NETNS_DIR / self.name, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def leave(self) -> None:
        if self._home is None:
            return
        try:
            _setns(self._home)
        finally:
            os.close(self._home)
            self._home = None

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                             text=True, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def delete(self) -> None:
        if self.created and exists(self.name):
            subprocess.run(["ip", "netns", "del", self.name], check=True, capture_output=True,
                           text=True)
