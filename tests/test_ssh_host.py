"""SshHost against a real, throwaway sshd on a loopback address (no faked paramiko):
commands, files and HTTP through the host. Fixtures: ``tests/ssh_fixtures.py``.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from bluegreen.errors import HostError
from bluegreen.ssh import SshHost
from tests.ssh_fixtures import SSH_ADDRESS

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("ssh_home")]


# -- commands ------------------------------------------------------------------------------


def test_run_returns_output_and_exit_codes(ssh_host: SshHost) -> None:
    result = ssh_host.run("echo out; echo 'it''s' \"$0\" >&2; exit 3")
    assert result.exit_code == 3
    assert not result.ok
    assert result.stdout == "out\n"
    assert result.stderr == "its /bin/sh\n"
    assert result.command == "echo out; echo 'it''s' \"$0\" >&2; exit 3"
    assert ssh_host.run("true").ok
    assert ssh_host.commands_run == 2
    assert ssh_host.name == f"root@{SSH_ADDRESS}:{ssh_host.target.port}"


def test_run_gives_no_stdin(ssh_host: SshHost) -> None:
    started = time.monotonic()
    assert ssh_host.run("cat", timeout=10).exit_code == 0
    assert time.monotonic() - started < 5


def test_run_timeout_raises_host_error_and_host_stays_usable(ssh_host: SshHost) -> None:
    started = time.monotonic()
    with pytest.raises(HostError, match="timed out"):
        ssh_host.run("sleep 5", timeout=0.5)
    assert time.monotonic() - started < 4
    assert ssh_host.run("echo again").stdout == "again\n"


def test_interleaved_stdout_and_stderr_arrive_whole(ssh_host: SshHost) -> None:
    script = ("i=0; while [ $i -lt 300 ]; do head -c 997 /dev/zero | tr '\\0' o;"
              " head -c 1003 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done; exit 7")
    result = ssh_host.run(script, timeout=30)
    assert result.exit_code == 7
    assert result.stdout == "o" * 997 * 300
    assert result.stderr == "e" * 1003 * 300


def test_a_running_command_is_waited_for_not_polled(
        ssh_host: SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker sleeps until the command's output, EOF or exit status arrives: a host's
    second of ``sleep`` costs the controller no wakeups (a 50 ms poll was 20)."""
    import paramiko

    looks = 0
    real = paramiko.Channel.recv_stderr_ready

    def counting(self: paramiko.Channel) -> bool:
        nonlocal looks
        looks += 1
        return real(self)

    ssh_host.open()
    monkeypatch.setattr(paramiko.Channel, "recv_stderr_ready", counting)
    result = ssh_host.run("sleep 1; echo done")
    assert result.stdout == "done\n"
    assert looks <= 6, looks


KILL_MY_SSHD = """
p=$$
while [ "$p" -gt 1 ]; do
  case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; exit 0;; esac
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
exit 1
"""


def test_dropped_connection_is_host_error_then_reconnects(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    ssh_host.write_atomic(str(tmp_path / "f"), b"before")  # an SFTP session to lose as well
    with pytest.raises(HostError, match="connection lost"):
        ssh_host.run(KILL_MY_SSHD)
    assert ssh_host.run("echo back").stdout == "back\n"
    ssh_host.write_atomic(str(tmp_path / "f"), b"sftp is back too")
    assert ssh_host.read(str(tmp_path / "f")) == b"sftp is back too"


# -- files ---------------------------------------------------------------------------------


def test_write_atomic_read_roundtrip_with_mode(ssh_host: SshHost, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    target = remote / "state.json"
    ssh_host.write_atomic(str(target), b'{"live": "blue"}', mode=0o600)
    assert target.read_bytes() == b'{"live": "blue"}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    ssh_host.write_atomic(str(target), b'{"live": "green"}', mode=0o640)
    assert ssh_host.read(str(target)) == b'{"live": "green"}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in remote.iterdir()] == ["state.json"]  # no temporary left behind


def test_run_stdin_larger_than_the_window_to_a_slow_reader(ssh_host: SshHost,
                                                           tmp_path: Path) -> None:
    """The release rides stdin: the host may read it late (a busy disk), longer than the
    command loop's poll, while the channel's window (2 MiB) is full; every byte arrives."""
    local = tmp_path / "release.bin"
    local.write_bytes(os.urandom(6 * 1024 * 1024 + 5))
    result = ssh_host.run("sleep 0.5; wc -c", stdin=local, timeout=30)
    assert result.ok, result.output
    assert result.stdout.strip() == str(6 * 1024 * 1024 + 5)


def test_put_uploads_large_file_atomically(ssh_host: SshHost, tmp_path: Path) -> None:
    local = tmp_path / "release.tar.gz"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    target = tmp_path / "remote" / "release.tar.gz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    ssh_host.put(local, str(target), mode=0o600)
    assert target.read_bytes() == local.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert ssh_host.read(str(target)) == local.read_bytes()
    assert len(list(target.parent.iterdir())) == 1


def test_read_missing_is_none_and_bad_paths_are_host_errors(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    assert ssh_host.read(str(tmp_path / "nope")) is None
    with pytest.raises(HostError, match="cannot write"):
        ssh_host.write_atomic(str(tmp_path / "no-such-dir" / "f"), b"x")
    with pytest.raises(HostError, match="cannot read"):
        ssh_host.put(tmp_path / "no-such-local-file", str(tmp_path / "f"))
    assert ssh_host.commands_run == 3


# -- HTTP through the host -----------------------------------------------------------------


def test_http_transport_reaches_port_on_the_host(ssh_host: SshHost, web_port: int) -> None:
    with httpx.Client(transport=ssh_host.http_transport()) as client:
        for i in range(3):  # keep-alive reuse of one channel, then a fresh one
            response = client.get(f"http://127.0.0.1:{web_port}/health?{i}")
            assert response.status_code == 200
            assert response.text == f"hello {web_port} /health?{i}"


def test_http_transport_really_starts_inside_sshd(
    ssh_host: SshHost, unpermitted_web_port: int
) -> None:
    url = f"http://127.0.0.1:{unpermitted_web_port}/"
    assert httpx.get(url).status_code == 200  # reachable from here directly...
    with (
        httpx.Client(transport=ssh_host.http_transport()) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(url)  # ...but sshd is not allowed to open it, so we did not either


def test_http_closed_port_is_connect_error(ssh_host: SshHost, closed_port: int) -> None:
    with (
        httpx.Client(transport=ssh_host.http_transport()) as client,
        pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{closed_port}"),
    ):
        client.get(f"http://127.0.0.1:{closed_port}/")
    assert ssh_host.run("echo still fine").ok


def test_http_read_timeout_is_honoured(ssh_host: SshHost, web_port: int) -> None:
    started = time.monotonic()
    with (
        httpx.Client(transport=ssh_host.http_transport(), timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get(f"http://127.0.0.1:{web_port}/slow")
    assert time.monotonic() - started < 1.8


def test_http_concurrent_with_run(ssh_host: SshHost, web_port: int) -> None:
    results: list[str] = []
    worker = threading.Thread(
        target=lambda: results.append(ssh_host.run("sleep 1; echo done").stdout)
    )
    worker.start()
    with httpx.Client(transport=ssh_host.http_transport()) as client:
        statuses = [client.get(f"http://127.0.0.1:{web_port}/").status_code for _ in range(10)]
    worker.join(10)
    assert statuses == [200] * 10
    assert results == ["done\n"]
