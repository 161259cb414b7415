"""The simulated hosts: each its own network, /srv, sshd and nginx, and nothing left behind."""

from __future__ import annotations

import functools
import http.client
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest

from bluegreen.sandbox.hosts import Sandbox, SandboxError, SandboxHost, netns_pids
from tests import sandbox_fixtures
from tests.sandbox_fixtures import MakeSandbox, fabric_connection, need_root

# The fixtures this module uses, bound here so pytest finds them by name.
make_sandbox = sandbox_fixtures.make_sandbox
sandbox_1 = sandbox_fixtures.sandbox_1
isolated_home = sandbox_fixtures.isolated_home

REPO = Path(__file__).resolve().parents[1]

# An HTTP GET from inside a host: "<status> <X-BG-Slot> <body>", or "refused".
_PROBE = """\
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
try:
    conn.request("GET", sys.argv[2])
except ConnectionRefusedError:
    print("refused")
else:
    reply = conn.getresponse()
    print(reply.status, reply.getheader("X-BG-Slot", "-"), reply.read().decode().strip()[:40])
"""


def probe(host: SandboxHost, port: int, path: str = "/") -> str:
    argv = host.exec_argv([sys.executable, "-I", "-c", _PROBE, str(port), path])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def netns_names() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def identity(pid: int) -> str | None:
    """pid plus start time: the same value later means the same process still exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return f"{pid}:{stat.rpartition(')')[2].split()[19]}"


def test_each_host_has_its_own_network(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(2)
    one, two = sandbox.hosts
    assert (one.address, two.address) == (f"10.231.{one.index}.2", f"10.231.{two.index}.2")
    www = one.srv("/srv/www")
    www.mkdir()
    (www / "whoami").write_text(f"{one.netns}\n")
    server_argv = ["-m", "http.server", "4001", "--bind", "127.0.0.1", "--directory", "/srv/www"]
    server = subprocess.Popen(
        one.exec_argv([sys.executable, "-I", *server_argv]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while probe(one, 4001, "/whoami") == "refused":
            assert time.monotonic() < deadline, "the server inside host 1 never listened"
            time.sleep(0.05)
        assert probe(one, 4001, "/whoami") == f"200 - {one.netns}"
        assert probe(two, 4001, "/whoami") == "refused"
        # Each host's nginx proxies to its own 127.0.0.1:4001.
        assert probe(one, 80, "/whoami") == f"200 none {one.netns}"
        assert probe(two, 80, "/whoami").startswith("502 none")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_fabric_runs_and_puts_with_strict_host_keys(
    sandbox_1: Sandbox, isolated_home: Path, tmp_path: Path
) -> None:
    host = sandbox_1.hosts[0]
    local = tmp_path / "x"
    local.write_bytes(b"payload\n")
    with fabric_connection(sandbox_1, host) as conn:
        hostname, *listing = conn.run("hostname; ls /srv", hide=True).stdout.split()
        conn.put(str(local), "/srv/x")
    assert hostname == host.netns
    assert "nginx" in listing
    assert host.srv("/srv/x").read_bytes() == b"payload\n"
    assert (host.hostdir / "x").read_bytes() == b"payload\n"
    assert not (isolated_home / ".ssh" / "known_hosts").exists()


def test_unknown_host_key_is_rejected(
    sandbox_1: Sandbox, isolated_home: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    conn = fabric_connection(sandbox_1, sandbox_1.hosts[0], known_hosts=empty)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        conn.open()
    conn.close()


def test_openssh_client_uses_the_written_ssh_config(sandbox_1: Sandbox) -> None:
    host = sandbox_1.hosts[0]
    argv = sandbox_1.ssh_argv(host, "hostname; cat /srv/nginx/conf.d/hello.bluegreen.conf")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == host.netns
    assert "upstream hello_live { server 127.0.0.1:4001; }" in result.stdout


def test_detached_process_returns_at_once_and_dies_with_the_sandbox(
    make_sandbox: MakeSandbox, isolated_home: Path
) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    detached = "{ setsid sleep 300 > /dev/null 2>&1 < /dev/null & }; echo $!"
    with fabric_connection(sandbox, host) as conn:
        began = time.monotonic()
        pid = int(conn.run(detached, hide=True, timeout=30).stdout.strip())
        assert time.monotonic() - began < 5
    # $! is the forked shell, which execs setsid and then sleep soon after.
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] != [b"sleep", b"300"]:
        assert time.monotonic() < deadline, "the detached process never became `sleep 300`"
        time.sleep(0.02)
    assert netns_pids([host.netns]).get(pid) == host.netns
    before = identity(pid)
    sandbox.teardown()
    assert identity(pid) != before


def test_nginx_answers_outside_and_inside(sandbox_1: Sandbox) -> None:
    host = sandbox_1.hosts[0]
    conn = http.client.HTTPConnection(host.address, 80, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert (reply.status, reply.getheader("X-BG-Slot")) == (502, "none")
    finally:
        conn.close()
    assert probe(host, 80).startswith("502 none")
    # bg validates with the inside paths over SSH; they hold inside the host.
    check = subprocess.run(host.exec_argv(host.nginx.argv("-q", "-t")), capture_output=True)
    assert check.returncode == 0, check.stderr
    assert host.nginx.master_pid() is not None


def test_teardown_leaves_nothing(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(2)
    hosts = list(sandbox.hosts)
    pids = netns_pids([host.netns for host in hosts])
    # per host: init, sshd, nginx master and two workers
    assert len(pids) >= 5 * len(hosts)
    # (sshd's short-lived children from the readiness probes may already be gone)
    identities = {pid: before for pid in pids if (before := identity(pid)) is not None}
    assert len(identities) >= 5 * len(hosts)
    sandbox.teardown()
    sandbox.teardown()
    remaining = netns_names()
    for host in hosts:
        assert host.netns not in remaining
        assert not Path("/sys/class/net", host.veth).exists()
    assert all(identity(pid) != before for pid, before in identities.items())
    assert not (sandbox.workdir / "sandbox.json").exists()


@pytest.mark.root
def test_failed_start_cleans_up_what_it_made(tmp_path: Path) -> None:
    need_root()
    # Stands in for sshd: notes nginx's pid (nginx is up by then), then fails.
    fake_sshd = tmp_path / "fake-sshd"
    fake_sshd.write_text(
        "#!/bin/sh\n"
        "for _ in $(seq 100); do [ -s /srv/nginx/run/nginx.pid ] && break; sleep 0.05; done\n"
        "cp /srv/nginx/run/nginx.pid /srv/seen-nginx.pid\n"
        "exit 1\n"
    )
    fake_sshd.chmod(0o755)
    sandbox = Sandbox(tmp_path / "sbx", 2, sshd_bin=str(fake_sshd))
    with pytest.raises(SandboxError, match="starting nginx and sshd failed"):
        sandbox.start()
    assert sandbox.hosts == []
    made = sorted((tmp_path / "sbx").glob("host*"))
    assert len(made) == 2
    for hostdir in made:
        nginx_pid = int((hostdir / "srv" / "seen-nginx.pid").read_text())
        assert identity(nginx_pid) is None
        init_pid = int((hostdir / "sshd" / "init.pid").read_text())
        assert identity(init_pid) is None
        index = hostdir.name.removeprefix("host")
        assert not Path("/sys/class/net", f"bgs{index}a").exists()


def test_concurrent_sandboxes_get_distinct_hosts(make_sandbox: MakeSandbox) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: make_sandbox(2), range(2))
    hosts = first.hosts + second.hosts
    assert len({host.netns for host in hosts}) == 4
    for host in hosts:
        hostname = subprocess.run(host.exec_argv(["hostname"]), capture_output=True, text=True)
        assert hostname.stdout.strip() == host.netns


@pytest.mark.unit
def test_srv_maps_inside_paths_only(tmp_path: Path) -> None:
    host = Sandbox(tmp_path, 1)._host(7)
    assert host.srv("/srv/hello/bg/state.json") == tmp_path / "host7/srv/hello/bg/state.json"
    assert host.srv("/srv") == tmp_path / "host7" / "srv"
    assert host.spec == "root@10.231.7.2"
    for outside in ("/etc/passwd", "/srv/../etc/passwd", "srv/x", "/srvx"):
        with pytest.raises(ValueError):
            host.srv(outside)


@pytest.mark.root
def test_command_line_up_and_down(tmp_path: Path) -> None:
    need_root()
    workdir = tmp_path / "cli"
    cli = [sys.executable, "-m", "bluegreen.sandbox.hosts"]
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=REPO)
    up = run([*cli, "up", "1", str(workdir), "--shared-network"])
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        attached = Sandbox.attach(workdir)
        host, switch = attached.hosts[0], attached.switch
        assert f"shared {host.shared_address}" in up.stdout
        assert switch is not None and switch in netns_names()
        assert host.netns in netns_names()
        assert probe(host, 80).startswith("502 none")
        hostname = subprocess.run(host.ssh_argv("hostname"), capture_output=True, text=True)
        assert hostname.stdout.strip() == host.netns, hostname.stderr
    finally:
        down = run([*cli, "down", str(workdir)])
    assert down.returncode == 0, down.stdout + down.stderr
    assert host.netns not in netns_names()
    assert switch not in netns_names()
    again = run([*cli, "down", str(workdir)])
    assert again.returncode == 1
    assert "no sandbox is described" in again.stdout
