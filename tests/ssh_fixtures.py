"""pytest fixtures for SshHost against real, throwaway sshds on loopback addresses.

The sshds come from the one harness, ``bluegreen.sandbox.sshd.Sshd`` (the sandbox hosts use
it too). Each gets its own fresh ed25519 host key, an authorized_keys made here, and a
``PermitOpen`` list, so the HTTP tests can prove their connections really start inside sshd:
a port that is open on this machine but not permitted is refused. conftest.py registers these
fixtures once, so the session-wide sshd is shared by every test module that uses it.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from bluegreen.sandbox.sshd import SSHD_BIN, Sshd, keygen, write_authorized_keys
from bluegreen.ssh import SshHost
from tests.helpers import need

SSH_ADDRESS = "127.0.0.61"  # the shared sshd
FRESH_ADDRESS = "127.0.0.62"  # sshds whose host keys the tests change


def require_root() -> None:
    need(os.geteuid() == 0, "needs root to start a throwaway sshd")
    need(Path(SSHD_BIN).exists() and shutil.which("ssh-keygen") is not None,
         f"needs {SSHD_BIN} and ssh-keygen (openssh-server)")


def free_port(address: str, start: int) -> int:
    """A port below 32768 (outside the ephemeral range) that nothing listens on."""
    for port in range(start, start + 500):
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {address} from {start}")


def host_public_key(server: Sshd) -> paramiko.PKey:
    return paramiko.Ed25519Key(filename=str(server.host_key))


def trusting(server: Sshd, path: Path) -> Path:
    """A known_hosts file at ``path`` that trusts ``server``'s current host key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(server.known_hosts_line())
    return path


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        body = f"hello {self.connection.getsockname()[1]} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out on /slow leaves a broken pipe behind: expected


@contextlib.contextmanager
def http_server(start: int) -> Iterator[int]:
    server = QuietServer(("127.0.0.1", free_port("127.0.0.1", start)), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def web_port() -> Iterator[int]:
    with http_server(18061) as port:
        yield port


@pytest.fixture(scope="session")
def unpermitted_web_port() -> Iterator[int]:
    """Open on this machine, but sshd is told not to forward to it."""
    with http_server(18561) as port:
        yield port


@pytest.fixture(scope="session")
def closed_port() -> int:
    return free_port("127.0.0.1", 19061)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root()
    key = tmp_path_factory.mktemp("client") / "id_ed25519"
    keygen(key, "bg-test-client")
    return key


@pytest.fixture(scope="session")
def authorized(client_key: Path) -> Path:
    return write_authorized_keys(client_key.parent / "authorized_keys", client_key)


def make_sshd(
    workdir: Path, address: str, authorized: Path, web_port: int, closed_port: int
) -> Sshd:
    port = free_port(address, 2222 + int(address.rsplit(".", 1)[1]))
    permit = f"127.0.0.1:{web_port} 127.0.0.1:{closed_port}"
    return Sshd(workdir, address, port, authorized, permit_open=permit)


def running(server: Sshd) -> Iterator[Sshd]:
    """``server`` started for the fixture's life, stopped after, pass or fail."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sshd(
    tmp_path_factory: pytest.TempPathFactory, authorized: Path, web_port: int, closed_port: int
) -> Iterator[Sshd]:
    yield from running(make_sshd(
        tmp_path_factory.mktemp("sshd"), SSH_ADDRESS, authorized, web_port, closed_port
    ))


@pytest.fixture
def fresh_sshd(
    tmp_path: Path, authorized: Path, web_port: int, closed_port: int
) -> Iterator[Sshd]:
    yield from running(make_sshd(tmp_path / "sshd", FRESH_ADDRESS, authorized, web_port,
                                 closed_port))


@pytest.fixture
def ssh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fabric and paramiko read ~/.ssh through $HOME: never the developer's own.
    Modules that connect use it for every test (``pytest.mark.usefixtures("ssh_home")``)."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return path


@pytest.fixture
def ssh_host(sshd: Sshd, client_key: Path, tmp_path: Path) -> Iterator[SshHost]:
    known = trusting(sshd, tmp_path / "known_hosts")
    h = SshHost(
        f"root@{sshd.address}:{sshd.port}", identity_file=str(client_key), known_hosts=str(known)
    )
    try:
        yield h
    finally:
        h.close()
