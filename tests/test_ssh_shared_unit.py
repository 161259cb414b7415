"""What a fleet's SSH connections share, read once: known_hosts (one read for all hosts, a
key decoded only for its own host), fabric's Config and the identity key; and the SSH
module's imports (no httpx for probes). No sshd: real files, paramiko and fabric objects."""

from __future__ import annotations

import builtins
import io
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fabric import Connection

from bluegreen import sshshared
from bluegreen.hostkeys import install_policy
from bluegreen.ssh import SshHost
from tests.helpers import need

pytestmark = pytest.mark.unit


def _key_line(names: str, key: paramiko.PKey) -> str:
    return f"{names} {key.get_name()} {key.get_base64()}\n"


def _public() -> paramiko.PKey:
    """A distinct host key (ECDSA: paramiko makes one without ssh-keygen)."""
    return paramiko.ECDSAKey.generate()


def _client_entries(conn: Any) -> list[Any]:
    entries: list[Any] = conn.client.get_host_keys()._entries
    return entries


def _conn(host: str, port: int = 22) -> Any:
    return Connection(host, user="root", port=port)


def test_only_the_hosts_own_lines_are_decoded(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    known = tmp_path / "known_hosts"
    others = [_public(), _public()]
    mine = _public()
    lines = [_key_line(f"10.9.{i}.2", others[i % 2]) for i in range(100)]
    lines.insert(57, _key_line("[10.1.1.1]:2222", mine))
    known.write_text("".join(lines))
    decoded: list[str] = []
    real = paramiko.hostkeys.HostKeyEntry.from_line.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, line: str, lineno: int | None = None) -> Any:
        decoded.append(line)
        return real(cls, line, lineno)

    monkeypatch.setattr(paramiko.hostkeys.HostKeyEntry, "from_line", classmethod(spy))
    conn = _conn("10.1.1.1", 2222)
    install_policy(conn, "h", known, "strict", hashed=False)
    assert len(decoded) == 1
    found = conn.client.get_host_keys().lookup("[10.1.1.1]:2222")
    assert found is not None and found["ecdsa-sha2-nistp256"] == mine
    assert conn.client.get_host_keys().lookup("10.9.3.2") is None  # not this client's


def test_a_fleet_connecting_at_once_reads_known_hosts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known = tmp_path / "known_hosts"
    key = _public()
    known.write_text("".join(_key_line(f"10.8.{i}.2", key) for i in range(16)))
    opened: list[str] = []
    lock = threading.Lock()

    def counting(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(file: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(file) == str(known):
                with lock:
                    opened.append(str(file))
            return real(file, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", counting(builtins.open))
    monkeypatch.setattr(io, "open", counting(io.open))
    conns = [_conn(f"10.8.{i}.2") for i in range(16)]
    start = threading.Barrier(16)

    def connect(conn: Any) -> None:
        start.wait()
        install_policy(conn, "h", known, "strict", hashed=False)

    threads = [threading.Thread(target=connect, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1
    for i, conn in enumerate(conns):
        found = conn.client.get_host_keys().lookup(f"10.8.{i}.2")
        assert found is not None and found["ecdsa-sha2-nistp256"] == key


def test_hashed_names_ports_and_bad_lines(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    mine, other, wrong_port = _public(), _public(), _public()
    known.write_text("".join([
        "# a comment\n", "\n",
        _key_line(paramiko.HostKeys.hash_host("app-1.example"), mine),
        _key_line(paramiko.HostKeys.hash_host("[app-1.example]:2200"), wrong_port),
        f"app-1.example {other.get_name()} !!!notbase64!!!\n",
        "app-1.example ssh-unknown-type AAAA\n",
        "@revoked app-1.example " + mine.get_name() + " " + mine.get_base64() + "\n",
        "app-1.example\n",
    ]))
    conn = _conn("app-1.example")
    install_policy(conn, "h", known, "strict", hashed=True)
    entries = _client_entries(conn)
    assert [e.key for e in entries] == [mine]  # the bad, unknown and marker lines count as absent


def test_known_hosts_read_again_when_it_changes(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    first, second = _public(), _public()
    known.write_text(_key_line("10.7.0.1", first))
    conn = _conn("10.7.0.2")
    install_policy(conn, "h", known, "strict", hashed=False)
    assert _client_entries(conn) == []
    with known.open("a") as fh:  # another host's accept-new, or ssh-keyscan >>
        fh.write(_key_line("10.7.0.2", second))
    install_policy(conn, "h", known, "strict", hashed=False)
    assert [e.key for e in _client_entries(conn)] == [second]


def test_each_client_gets_its_own_entries(tmp_path: Path) -> None:
    """accept-new and paramiko's HostKeys.add change a client's entries in place: never the
    ones another host's connect gets."""
    known = tmp_path / "known_hosts"
    key, replaced = _public(), _public()
    known.write_text(_key_line("10.6.0.1", key))
    a, b = _conn("10.6.0.1"), _conn("10.6.0.1")
    install_policy(a, "a", known, "strict", hashed=False)
    a.client.get_host_keys().add("10.6.0.1", key.get_name(), replaced)
    install_policy(b, "b", known, "strict", hashed=False)
    assert [e.key for e in _client_entries(b)] == [key]


def test_missing_known_hosts_is_empty_unreadable_is_an_error(tmp_path: Path) -> None:
    from bluegreen.errors import HostError

    conn = _conn("10.5.0.1")
    install_policy(conn, "h", tmp_path / "nope" / "known_hosts", "strict", hashed=False)
    assert _client_entries(conn) == []
    with pytest.raises(HostError, match="cannot read"):
        install_policy(conn, "h", tmp_path, "strict", hashed=False)  # a directory


def test_fabric_config_shared_until_ssh_config_or_home_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    first = sshshared.fabric_config()
    assert sshshared.fabric_config() is first
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host alias\n  HostName 10.4.0.1\n  Port 2022\n")
    second = sshshared.fabric_config()
    assert second is not first
    conn = Connection("alias", config=second)
    assert (conn.host, conn.port) == ("10.4.0.1", 2022)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    assert sshshared.fabric_config() is not second


def _keygen(path: Path, *extra: str) -> None:
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen (openssh-client) is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-f", str(path), "-C", "t", *extra],
                   check=True, capture_output=True)


def test_identity_key_read_once_with_its_certificate(tmp_path: Path) -> None:
    key_path = tmp_path / "id_ed25519"
    _keygen(key_path, "-N", "")
    key = sshshared.identity_key(str(key_path))
    assert key is not None
    assert key == paramiko.Ed25519Key.from_private_key_file(str(key_path))
    assert sshshared.identity_key(str(key_path)) is key
    assert key.public_blob is None
    ca = tmp_path / "ca"
    _keygen(ca, "-N", "")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "t", "-n", "root",
                    f"{key_path}.pub"], check=True, capture_output=True)
    with_cert = sshshared.identity_key(str(key_path))
    assert with_cert is not None and with_cert is not key  # the new file counts
    assert with_cert.public_blob is not None
    assert with_cert.public_blob.key_type.endswith("-cert-v01@openssh.com")


def test_identity_key_left_to_paramiko_when_it_needs_a_passphrase(tmp_path: Path) -> None:
    key_path = tmp_path / "id_ed25519"
    _keygen(key_path, "-N", "secret passphrase")
    assert sshshared.identity_key(str(key_path)) is None
    assert sshshared.identity_key(str(tmp_path / "missing")) is None
    host = SshHost("root@10.3.0.1", identity_file=str(key_path), known_hosts=str(tmp_path / "k"))
    assert host._conn.connect_kwargs["key_filename"] == [str(key_path)]
    assert "pkey" not in host._conn.connect_kwargs


def test_sshhost_offers_the_preloaded_key_first(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    key_path = tmp_path / "id_ed25519"
    _keygen(key_path, "-N", "")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host *\n  IdentityFile {tmp_path}/other\n")
    host = SshHost("root@10.3.0.1", identity_file=str(key_path), known_hosts=str(tmp_path / "k"))
    kwargs = host._conn.connect_kwargs
    assert kwargs["pkey"] == paramiko.Ed25519Key.from_private_key_file(str(key_path))
    assert kwargs["key_filename"] == [f"{tmp_path}/other"]  # ssh_config's, tried after


def test_importing_the_ssh_host_leaves_httpx_out() -> None:
    """Probes (status, switch) go through direct-tcpip channels: httpx (~50 ms) is
    imported only by the health gate's transport."""
    code = ("import sys, bluegreen.ssh; "
            "print(sorted(m for m in ('httpx', 'httpcore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
