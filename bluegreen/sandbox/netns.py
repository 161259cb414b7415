"""Low-level plumbing of the sandbox: running tools, pid files, network namespaces.

Everything here acts only on the namespaces it is given by name (those the sandbox created) and
checks a process's namespace before signalling it, so nothing outside a sandbox is touched.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

from bluegreen.errors import BgError


class SandboxError(BgError):
    """The sandbox could not be built or torn down; ``detail`` carries the tool's output."""


def run(
    argv: list[str], *, stdin: str | None = None, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    devnull = DEVNULL if stdin is None else None
    kwargs: dict[str, Any] = {"capture_output": True, "text": True, "timeout": timeout}
    proc = subprocess.run(argv, input=stdin, stdin=devnull, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SandboxError(
            f"{shlex.join(argv)} failed (exit {proc.returncode})",
            detail=(proc.stdout + proc.stderr).strip(),
        )
    return proc


def try_run(argv: list[str]) -> list[str]:
    """Run ``argv``; its failure as a one-item list (teardown goes on regardless)."""
    proc = run(argv, check=False)
    return [] if proc.returncode == 0 else [f"{shlex.join(argv)}: {proc.stderr.strip()}"]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_answers(address: str, port: int) -> bool:
    """Any HTTP status line. A raw socket, so no proxy settings from the environment apply."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: sandbox\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path}: missing)"
    return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def netns_keys(names: Sequence[str]) -> dict[tuple[int, int], str]:
    """(device, inode) of each named namespace that exists -> its name."""
    keys: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
        except FileNotFoundError:
            continue
        keys[(st.st_dev, st.st_ino)] = name
    return keys


def netns_key_of(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None  # exited, or a zombie
    return (st.st_dev, st.st_ino)


def netns_pids(names: Sequence[str]) -> dict[int, str]:
    """pid -> namespace name for processes in the named network namespaces (``ip netns pids``)."""
    keys = netns_keys(names)
    found: dict[int, str] = {}
    if keys:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                name = keys.get(netns_key_of(int(entry)) or (0, 0))
                if name is not None:
                    found[int(entry)] = name
    return found


def _signal_if_inside(pid: int, key: tuple[int, int], sig: signal.Signals) -> None:
    """Signal ``pid`` only if it is still in the namespace: a pidfd pins it against pid reuse."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if netns_key_of(pid) == key:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def kill_netns_processes(
    names: Sequence[str], *, spare: set[int], term_wait: float, kill_wait: float
) -> set[int]:
    """SIGTERM all; after ``term_wait`` SIGKILL all but ``spare`` (the inits, which reap the
    rest), and halfway through ``kill_wait`` those too. Returns the pids still there at the end.
    """
    keys = {name: key for key, name in netns_keys(names).items()}
    began = time.monotonic()
    termed: set[int] = set()
    while True:
        pids = netns_pids(names)
        elapsed = time.monotonic() - began
        if not pids or elapsed > term_wait + kill_wait:
            return set(pids)
        for pid, name in pids.items():
            if elapsed > term_wait + kill_wait / 2 or (elapsed > term_wait and pid not in spare):
                _signal_if_inside(pid, keys[name], signal.SIGKILL)
            elif pid not in termed:
                _signal_if_inside(pid, keys[name], signal.SIGTERM)
                termed.add(pid)
        time.sleep(0.05)
