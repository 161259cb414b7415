"""One harness for the real sshds of the sandbox hosts and of the SSH tests.

It renders sshd_config, makes host and client keys, writes authorized_keys, known_hosts lines
and an OpenSSH client config, and starts, waits for and stops a foreground sshd. The sandbox
launches its sshds inside the hosts' namespaces (daemonized, see ``host.py``) from the same
config; ``tests/test_ssh_host.py`` runs one on a loopback address with :class:`Sshd`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bluegreen.sandbox.netns import SandboxError, run

SSHD_BIN = "/usr/sbin/sshd"
# sshd_config has no quoting that covers every option (and expands %), so refuse such paths.
UNSAFE_PATH = re.compile(r"[\s\"'%#\\]")


@dataclass(frozen=True)
class SshdConfig:
    """What differs between the sshds bg is tested against; the rest is fixed below."""

    address: str
    port: int
    host_key: Path
    pid_file: Path
    authorized_keys: Path
    # ``host:port ...`` sshd may forward to; None allows any (the default of sshd).
    permit_open: str | None = None
    log_level: str = "ERROR"

    def render(self) -> str:
        for path in (self.host_key, self.pid_file, self.authorized_keys):
            if UNSAFE_PATH.search(str(path)):
                raise ValueError(f"{path} contains whitespace, a quote, % or #: sshd_config "
                                 "cannot hold it")
        lines = [
            f"ListenAddress {listen_address(self.address, self.port)}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            # bg opens many channels at once (commands, SFTP, forwarded HTTP probes), in parallel.
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp",
            f"LogLevel {self.log_level}",
        ]
        if self.permit_open is not None:
            lines.append(f"PermitOpen {self.permit_open}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ClientEntry:
    """One ``Host`` block of an OpenSSH client config."""

    names: Sequence[str]
    hostname: str
    identity_file: Path
    known_hosts: Path
    port: int = 22
    user: str = "root"

    def render(self) -> str:
        return (
            f"Host {' '.join(self.names)}\n"
            f"    HostName {self.hostname}\n"
            f"    Port {self.port}\n"
            f"    User {self.user}\n"
            f"    IdentityFile {self.identity_file}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ConnectTimeout 5\n"
            "    LogLevel ERROR\n"
        )


def listen_address(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def keygen(path: Path, comment: str) -> None:
    """A fresh passphrase-less ed25519 key at ``path`` (and ``path.pub``)."""
    path.unlink(missing_ok=True)
    public_key_path(path).unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def public_key_path(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def public_key(key: Path) -> str:
    """The ``.pub`` line of ``key`` (type, base64, comment), newline-terminated."""
    return public_key_path(key).read_text()


def known_hosts_name(address: str, port: int = 22) -> str:
    """How OpenSSH and paramiko name a host in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def known_hosts_line(names: Iterable[str], host_key: Path) -> str:
    key_type, key_data = public_key(host_key).split()[:2]
    return f"{','.join(names)} {key_type} {key_data}\n"


def write_authorized_keys(path: Path, *client_keys: Path) -> Path:
    path.write_text("".join(public_key(key) for key in client_keys))
    return path


def ssh_config_text(entries: Iterable[ClientEntry], *, header: str = "") -> str:
    return (f"# {header}\n" if header else "") + "".join(e.render() for e in entries)


def answers_ssh(address: str, port: int, timeout: float = 1.0) -> bool:
    """True once something on ``address:port`` sends an SSH banner."""
    with contextlib.suppress(OSError), socket.create_connection(
        (address, port), timeout=timeout
    ) as sock:
        return sock.recv(4) == b"SSH-"
    return False


def sshd_argv(config: Path, log: Path, *, sshd_bin: str = SSHD_BIN,
              foreground: bool = False) -> list[str]:
    """sshd with ``config``, logging to ``log``; ``foreground`` keeps it attached (``-D``)."""
    return [sshd_bin, *(["-D"] if foreground else []), "-f", str(config), "-E", str(log)]


class Sshd:
    """A throwaway foreground sshd in ``workdir`` with its own fresh host key."""

    def __init__(
        self, workdir: Path, address: str, port: int, authorized_keys: Path, *,
        permit_open: str | None = None, log_level: str = "VERBOSE", sshd_bin: str = SSHD_BIN,
    ) -> None:
        self.dir = workdir
        self.address = address
        self.port = port
        self.sshd_bin = sshd_bin
        self.host_key = workdir / "host_ed25519"
        self.config_file = workdir / "sshd_config"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = SshdConfig(
            address=address, port=port, host_key=self.host_key,
            pid_file=workdir / "sshd.pid", authorized_keys=authorized_keys,
            permit_open=permit_open, log_level=log_level,
        )
        self.config_file.write_text(self.config.render())
        keygen(self.host_key, "bg-test-host")

    @property
    def entry(self) -> str:
        return known_hosts_name(self.address, self.port)

    def known_hosts_line(self) -> str:
        return known_hosts_line([self.entry], self.host_key)

    def start(self, timeout: float = 10.0) -> None:
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        argv = sshd_argv(self.config_file, self.log, sshd_bin=self.sshd_bin, foreground=True)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise SandboxError(f"sshd exited {code}: {self._log_text()}")
            if answers_ssh(self.address, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise SandboxError(f"sshd did not answer on {self.entry}: {self._log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart_with_new_host_key(self) -> None:
        self.stop()
        keygen(self.host_key, "bg-test-host")
        self.start()

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
