"""Connecting with SshHost: ~/.ssh/config, the host-key policies (unknown refused, accept-new
records, changed always refused) and connection failures, against real throwaway sshds.
Fixtures: ``tests/ssh_fixtures.py``.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from bluegreen.errors import HostError, HostKeyError
from bluegreen.sandbox.sshd import Sshd, keygen
from bluegreen.ssh import SshHost, fingerprint
from tests.ssh_fixtures import (
    FRESH_ADDRESS,
    SSH_ADDRESS,
    free_port,
    host_public_key,
    require_root,
    trusting,
)

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("ssh_home")]


def test_ssh_config_in_home_is_honoured(
    sshd: Sshd, client_key: Path, ssh_home: Path, tmp_path: Path
) -> None:
    (ssh_home / ".ssh" / "config").write_text(
        f"Host bgtest\n  HostName {sshd.address}\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {client_key}\n"
    )
    trusting(sshd, ssh_home / ".ssh" / "known_hosts")  # the default known_hosts
    h = SshHost("bgtest")
    try:
        assert h.name == "bgtest"
        assert h.run("whoami").stdout == "root\n"
    finally:
        h.close()


def test_unknown_host_key_refused_by_default(
    fresh_sshd: Sshd, client_key: Path, ssh_home: Path, tmp_path: Path
) -> None:
    trusting(fresh_sshd, ssh_home / ".ssh" / "known_hosts")  # trusted there, but not where we look
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
    assert fingerprint(host_public_key(fresh_sshd)) == expected_fp
    assert f"ssh-keyscan -p {fresh_sshd.port} {FRESH_ADDRESS} >> {known}" in err.hint
    assert "accept-new" in err.hint
    assert not known.exists()
    assert isinstance(err.__cause__, paramiko.SSHException)


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
    assert recorded["ssh-ed25519"] == host_public_key(fresh_sshd)
    second = SshHost(spec, identity_file=str(client_key), known_hosts=str(known))
    try:
        assert second.run("echo again").stdout == "again\n"
    finally:
        second.close()
    assert len(known.read_text().splitlines()) == 1


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
    assert fingerprint(host_public_key(fresh_sshd)) in info.value.detail
    assert "ssh-keygen -R" in info.value.hint
    assert isinstance(info.value.__cause__, paramiko.BadHostKeyException)
    assert known.read_text() == before


def test_refused_connection_is_host_error(client_key: Path, tmp_path: Path) -> None:
    require_root()
    port = free_port(SSH_ADDRESS, 20061)
    h = SshHost(f"root@{SSH_ADDRESS}:{port}", identity_file=str(client_key),
                known_hosts=str(tmp_path / "kh"))
    with pytest.raises(HostError, match=f"{SSH_ADDRESS}:{port}: cannot connect") as info:
        h.run("true")
    assert not isinstance(info.value, HostKeyError)
    assert info.value.__cause__ is not None


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


def test_authentication_failure_is_host_error(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger, "stranger")
    known = trusting(sshd, tmp_path / "known_hosts")
    h = SshHost(f"root@{sshd.address}:{sshd.port}", identity_file=str(stranger),
                known_hosts=str(known))
    with pytest.raises(HostError, match="authentication failed"):
        h.run("true")
