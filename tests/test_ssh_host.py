"""SshHost against a real, throwaway sshd on a loopback address (no faked paramiko).

Each sshd gets its own fresh ed25519 host key, an authorized_keys made here, and a
``PermitOpen`` list, so the HTTP tests can prove their connections really start inside
sshd: a port that is open on this machine but not permitted is refused.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paramiko
import pytest

from bluegreen.errors import ConfigError, HostError, HostKeyError
from bluegreen.ssh import SshHost, SshTarget, fingerprint, parse_host_spec

SSHD = "/usr/sbin/sshd"
SSH_ADDRESS = "127.0.0.61"  # the shared sshd
FRESH_ADDRESS = "127.0.0.62"  # sshds whose host keys the tests change


# -- parse_host_spec (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app1", SshTarget(None, "app1", None)),
        ("deploy@app1.example.com:2222", SshTarget("deploy", "app1.example.com", 2222)),
        ("user@host", SshTarget("user", "host", None)),
        ("host:22", SshTarget(None, "host", 22)),
        ("10.0.0.5", SshTarget(None, "10.0.0.5", None)),
        ("[::1]:22", SshTarget(None, "::1", 22)),
        ("root@[::1]", SshTarget("root", "::1", None)),
        ("::1", SshTarget(None, "::1", None)),
        ("a_b-c.d", SshTarget(None, "a_b-c.d", None)),
    ],
)
def test_parse_host_spec(spec: str, expected: SshTarget) -> None:
    assert parse_host_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "", " host", "host ", "ho st", "@host", "user@", "host:", "host:0", "host:65536",
        "host:22x", "host:-1", "[::1", "[::1]x", "[nope]:22", "::1:22:zz", "-oProxyCommand=x",
        "host/path", "user@@host", "a@b@c", "host..", "host:22:33",
    ],
)
def test_parse_host_spec_rejects_garbage(spec: str) -> None:
    with pytest.raises(ConfigError, match="invalid host"):
        parse_host_spec(spec)


def test_target_str_roundtrips() -> None:
    for spec in ("app1", "deploy@app1:2222", "root@[::1]:22", "::1"):
        assert str(parse_host_spec(spec)) == spec


# -- a throwaway sshd ----------------------------------------------------------------------


def require_root() -> None:
    missing = None
    if os.geteuid() != 0:
        missing = "needs root to start a throwaway sshd"
    elif not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        missing = f"needs {SSHD} and ssh-keygen (openssh-server)"
    if missing:
        if os.environ.get("BG_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"{missing} (BG_REQUIRE_ROOT_TESTS=1)")
        pytest.skip(missing)


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


def keygen(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bg-test", "-f", str(path)],
        check=True,
    )


class Sshd:
    def __init__(self, workdir: Path, address: str, port: int, authorized: Path, permit: str):
        self.dir = workdir
        self.address = address
        self.port = port
        self.host_key = workdir / "host_ed25519"
        self.config = workdir / "sshd_config"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"ListenAddress {address}:{port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin yes\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAllowTcpForwarding yes\n"
            f"PermitOpen {permit}\n"
            "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )
        keygen(self.host_key)

    @property
    def entry(self) -> str:
        return f"[{self.address}]:{self.port}"

    @property
    def public_key(self) -> paramiko.PKey:
        return paramiko.Ed25519Key(filename=str(self.host_key))

    def known_hosts_line(self) -> str:
        key_type, key_data = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{self.entry} {key_type} {key_data}\n"

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(
                (self.address, self.port), timeout=1
            ) as sock:
                if sock.recv(4) == b"SSH-":
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on {self.entry}: {self.log.read_text()}")

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
        keygen(self.host_key)
        self.start()


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
    keygen(key)
    return key


@pytest.fixture(scope="session")
def authorized(client_key: Path) -> Path:
    path = client_key.parent / "authorized_keys"
    path.write_text(Path(f"{client_key}.pub").read_text())
    return path


def make_sshd(
    workdir: Path, address: str, authorized: Path, web_port: int, closed_port: int
) -> Sshd:
    port = free_port(address, 2222 + int(address.rsplit(".", 1)[1]))
    permit = f"127.0.0.1:{web_port} 127.0.0.1:{closed_port}"
    return Sshd(workdir, address, port, authorized, permit)


@pytest.fixture(scope="session")
def sshd(
    tmp_path_factory: pytest.TempPathFactory, authorized: Path, web_port: int, closed_port: int
) -> Iterator[Sshd]:
    server = make_sshd(
        tmp_path_factory.mktemp("sshd"), SSH_ADDRESS, authorized, web_port, closed_port
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_sshd(
    tmp_path: Path, authorized: Path, web_port: int, closed_port: int
) -> Iterator[Sshd]:
    server = make_sshd(tmp_path / "sshd", FRESH_ADDRESS, authorized, web_port, closed_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fabric and paramiko read ~/.ssh through $HOME: never the developer's own."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return path


def trusting(server: Sshd, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(server.known_hosts_line())
    return path


@pytest.fixture
def host(sshd: Sshd, client_key: Path, tmp_path: Path) -> Iterator[SshHost]:
    known = trusting(sshd, tmp_path / "known_hosts")
    h = SshHost(
        f"root@{sshd.address}:{sshd.port}", identity_file=str(client_key), known_hosts=str(known)
    )
    try:
        yield h
    finally:
        h.close()


# -- commands ------------------------------------------------------------------------------


@pytest.mark.root
def test_run_returns_output_and_exit_codes(host: SshHost) -> None:
    result = host.run("echo out; echo 'it''s' \"$0\" >&2; exit 3")
    assert result.exit_code == 3
    assert not result.ok
    assert result.stdout == "out\n"
    assert result.stderr == "its /bin/sh\n"
    assert result.command == "echo out; echo 'it''s' \"$0\" >&2; exit 3"
    assert host.run("true").ok
    assert host.commands_run == 2
    assert host.name == f"root@{SSH_ADDRESS}:{host.target.port}"


@pytest.mark.root
def test_run_gives_no_stdin(host: SshHost) -> None:
    started = time.monotonic()
    assert host.run("cat", timeout=10).exit_code == 0
    assert time.monotonic() - started < 5


@pytest.mark.root
def test_run_timeout_raises_host_error_and_host_stays_usable(host: SshHost) -> None:
    started = time.monotonic()
    with pytest.raises(HostError, match="timed out"):
        host.run("sleep 5", timeout=0.5)
    assert time.monotonic() - started < 4
    assert host.run("echo again").stdout == "again\n"


KILL_MY_SSHD = """
p=$$
while [ "$p" -gt 1 ]; do
  case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; exit 0;; esac
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
exit 1
"""


@pytest.mark.root
def test_dropped_connection_is_host_error_then_reconnects(host: SshHost, tmp_path: Path) -> None:
    host.write_atomic(str(tmp_path / "f"), b"before")  # an SFTP session to lose as well
    with pytest.raises(HostError, match="connection lost"):
        host.run(KILL_MY_SSHD)
    assert host.run("echo back").stdout == "back\n"
    host.write_atomic(str(tmp_path / "f"), b"sftp is back too")
    assert host.read(str(tmp_path / "f")) == b"sftp is back too"


# -- files ---------------------------------------------------------------------------------


@pytest.mark.root
def test_write_atomic_read_roundtrip_with_mode(host: SshHost, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    target = remote / "state.json"
    host.write_atomic(str(target), b'{"live": "blue"}', mode=0o600)
    assert target.read_bytes() == b'{"live": "blue"}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    host.write_atomic(str(target), b'{"live": "green"}', mode=0o640)
    assert host.read(str(target)) == b'{"live": "green"}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in remote.iterdir()] == ["state.json"]  # no temporary left behind


@pytest.mark.root
def test_put_uploads_large_file_atomically(host: SshHost, tmp_path: Path) -> None:
    local = tmp_path / "release.tar.gz"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    target = tmp_path / "remote" / "release.tar.gz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    host.put(local, str(target), mode=0o600)
    assert target.read_bytes() == local.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert host.read(str(target)) == local.read_bytes()
    assert len(list(target.parent.iterdir())) == 1


@pytest.mark.root
def test_read_missing_is_none_and_bad_paths_are_host_errors(
    host: SshHost, tmp_path: Path
) -> None:
    assert host.read(str(tmp_path / "nope")) is None
    with pytest.raises(HostError, match="cannot write"):
        host.write_atomic(str(tmp_path / "no-such-dir" / "f"), b"x")
    with pytest.raises(HostError, match="cannot read"):
        host.put(tmp_path / "no-such-local-file", str(tmp_path / "f"))
    assert host.commands_run == 3


# -- HTTP through the host -----------------------------------------------------------------


@pytest.mark.root
def test_http_transport_reaches_port_on_the_host(host: SshHost, web_port: int) -> None:
    with httpx.Client(transport=host.http_transport()) as client:
        for i in range(3):  # keep-alive reuse of one channel, then a fresh one
            response = client.get(f"http://127.0.0.1:{web_port}/health?{i}")
            assert response.status_code == 200
            assert response.text == f"hello {web_port} /health?{i}"


@pytest.mark.root
def test_http_transport_really_starts_inside_sshd(
    host: SshHost, unpermitted_web_port: int
) -> None:
    url = f"http://127.0.0.1:{unpermitted_web_port}/"
    assert httpx.get(url).status_code == 200  # reachable from here directly...
    with (
        httpx.Client(transport=host.http_transport()) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(url)  # ...but sshd is not allowed to open it, so we did not either


@pytest.mark.root
def test_http_closed_port_is_connect_error(host: SshHost, closed_port: int) -> None:
    with (
        httpx.Client(transport=host.http_transport()) as client,
        pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{closed_port}"),
    ):
        client.get(f"http://127.0.0.1:{closed_port}/")
    assert host.run("echo still fine").ok


@pytest.mark.root
def test_http_read_timeout_is_honoured(host: SshHost, web_port: int) -> None:
    started = time.monotonic()
    with (
        httpx.Client(transport=host.http_transport(), timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get(f"http://127.0.0.1:{web_port}/slow")
    assert time.monotonic() - started < 1.8


@pytest.mark.root
def test_http_concurrent_with_run(host: SshHost, web_port: int) -> None:
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(host.run("sleep 1; echo done").stdout))
    worker.start()
    with httpx.Client(transport=host.http_transport()) as client:
        statuses = [client.get(f"http://127.0.0.1:{web_port}/").status_code for _ in range(10)]
    worker.join(10)
    assert statuses == [200] * 10
    assert results == ["done\n"]


# -- connecting ----------------------------------------------------------------------------


@pytest.mark.root
def test_ssh_config_in_home_is_honoured(
    sshd: Sshd, client_key: Path, home: Path, tmp_path: Path
) -> None:
    (home / ".ssh" / "config").write_text(
        f"Host bgtest\n  HostName {sshd.address}\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {client_key}\n"
    )
    trusting(sshd, home / ".ssh" / "known_hosts")  # the default known_hosts
    h = SshHost("bgtest")
    try:
        assert h.name == "bgtest"
        assert h.run("whoami").stdout == "root\n"
    finally:
        h.close()


@pytest.mark.root
def test_unknown_host_key_refused_by_default(
    fresh_sshd: Sshd, client_key: Path, home: Path, tmp_path: Path
) -> None:
    trusting(fresh_sshd, home / ".ssh" / "known_hosts")  # trusted there, but not where we look
    known = tmp_path / "elsewhere" / "known_hosts"
    h = SshHost(
        f"root@{FRESH_ADDRESS}:{fresh_sshd.port}",
        identity_file=str(client_key), known_hosts=str(known),
    )
    with pytest.raises(HostKeyError) as info:
        h.run("true")
    err = info.value
    expected_fp = subprocess.run(
        ["ssh-keygen", "-lf", f"{fresh_sshd.host_key}.pub"], capture_output=True, text=True,
        check=True,
    ).stdout.split()[1]
    assert expected_fp in err.message
    assert fingerprint(fresh_sshd.public_key) == expected_fp
    assert f"ssh-keyscan -p {fresh_sshd.port} {FRESH_ADDRESS} >> {known}" in err.hint
    assert "accept-new" in err.hint
    assert not known.exists()
    assert isinstance(err.__cause__, paramiko.SSHException)


@pytest.mark.root
def test_accept_new_records_key_then_strict_connects(
    fresh_sshd: Sshd, client_key: Path, tmp_path: Path
) -> None:
    known = tmp_path / "new-dir" / "known_hosts"
    spec = f"root@{FRESH_ADDRESS}:{fresh_sshd.port}"
    first = SshHost(
        spec, identity_file=str(client_key), known_hosts=str(known), host_key_policy="accept-new"
    )
    try:
        assert first.run("echo hi").stdout == "hi\n"
    finally:
        first.close()
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    recorded = paramiko.HostKeys(str(known)).lookup(fresh_sshd.entry)
    assert recorded is not None
    assert recorded["ssh-ed25519"] == fresh_sshd.public_key
    second = SshHost(spec, identity_file=str(client_key), known_hosts=str(known))
    try:
        assert second.run("echo again").stdout == "again\n"
    finally:
        second.close()
    assert len(known.read_text().splitlines()) == 1


@pytest.mark.root
@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_host_key_always_refused(
    fresh_sshd: Sshd, client_key: Path, tmp_path: Path, policy: str
) -> None:
    known = trusting(fresh_sshd, tmp_path / "known_hosts")
    fresh_sshd.restart_with_new_host_key()
    before = known.read_text()
    h = SshHost(
        f"root@{FRESH_ADDRESS}:{fresh_sshd.port}", identity_file=str(client_key),
        known_hosts=str(known), host_key_policy=policy,  # type: ignore[arg-type]
    )
    with pytest.raises(HostKeyError, match="HAS CHANGED") as info:
        h.run("true")
    assert fingerprint(fresh_sshd.public_key) in info.value.detail
    assert "ssh-keygen -R" in info.value.hint
    assert isinstance(info.value.__cause__, paramiko.BadHostKeyException)
    assert known.read_text() == before


@pytest.mark.root
def test_refused_connection_is_host_error(client_key: Path, tmp_path: Path) -> None:
    require_root()
    port = free_port(SSH_ADDRESS, 20061)
    h = SshHost(f"root@{SSH_ADDRESS}:{port}", identity_file=str(client_key),
                known_hosts=str(tmp_path / "kh"))
    with pytest.raises(HostError, match=f"{SSH_ADDRESS}:{port}: cannot connect") as info:
        h.run("true")
    assert not isinstance(info.value, HostKeyError)
    assert info.value.__cause__ is not None


@pytest.mark.root
def test_silent_server_times_out(client_key: Path, tmp_path: Path) -> None:
    require_root()
    with socket.socket() as listener:  # accepts TCP, never says a word of SSH
        listener.bind((SSH_ADDRESS, free_port(SSH_ADDRESS, 20561)))
        listener.listen()
        port = listener.getsockname()[1]
        h = SshHost(f"{SSH_ADDRESS}:{port}", identity_file=str(client_key),
                    known_hosts=str(tmp_path / "kh"), connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(HostError, match="cannot connect"):
            h.read("/etc/hostname")
        assert time.monotonic() - started < 6


@pytest.mark.root
def test_authentication_failure_is_host_error(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    known = trusting(sshd, tmp_path / "known_hosts")
    h = SshHost(f"root@{sshd.address}:{sshd.port}", identity_file=str(stranger),
                known_hosts=str(known))
    with pytest.raises(HostError, match="authentication failed"):
        h.run("true")
