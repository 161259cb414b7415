"""Sandbox features for the fleet and fault tests: a shared network between the hosts (for a
load-balancer tier) and a small tmpfs in one host's mount namespace (for a full disk)."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bluegreen.accesslog import format_directive
from bluegreen.sandbox.hosts import Sandbox, SandboxHost
from bluegreen.sandbox.network import switch_ports
from tests import sandbox_fixtures
from tests.sandbox_fixtures import MakeSandbox, mountinfo_sources

make_sandbox = sandbox_fixtures.make_sandbox


# Listens on argv[1]:argv[2], says "ready", then answers each connection with its hostname.
_LISTENER = """\
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(socket.gethostname().encode() + b"\\n")
"""
# Connects to argv[1]:argv[2] and prints what it is told, or the error.
_CLIENT = """\
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:
        print(conn.recv(100).decode().strip())
except OSError as exc:
    print(type(exc).__name__)
"""


def netns_names() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def connect_from(host: SandboxHost, address: str, port: int) -> str:
    argv = host.exec_argv([sys.executable, "-I", "-c", _CLIENT, address, str(port)])
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()


def ssh(sandbox: Sandbox, host: SandboxHost, script: str) -> str:
    argv = sandbox.ssh_argv(host, script)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shared_network_joins_the_hosts_and_teardown_removes_the_switch(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = make_sandbox(3, shared_network=True)
    a, b, c = sandbox.hosts
    assert [h.shared_address for h in sandbox.hosts] == [
        f"10.232.0.{h.index}" for h in sandbox.hosts
    ]
    switch = sandbox.switch
    assert switch is not None and switch in netns_names()
    assert sorted(switch_ports(switch)) == sorted(h.shared_veth for h in sandbox.hosts)
    # Shared addresses live only inside the hosts, never on this machine.
    here = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    assert "10.232." not in here.stdout
    assert sandbox.describe()["switch"] == switch

    assert b.shared_address is not None
    listener = subprocess.Popen(
        b.exec_argv([sys.executable, "-I", "-c", _LISTENER, b.shared_address, "4001"]),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
        assert connect_from(a, b.shared_address, 4001) == b.netns
        assert connect_from(c, b.shared_address, 4001) == b.netns
        # The own (10.231) networks stay private: a has no route to b's own address.
        assert connect_from(a, b.address, 22) == "OSError"
    finally:
        listener.kill()
        listener.wait(timeout=10)

    sandbox.teardown()
    assert switch not in netns_names()  # and with it the bridge and its ports
    for host in (a, b, c):
        assert not Path("/sys/class/net", host.veth).exists()


def test_lb_hosts_nginx_proxies_to_an_app_host_over_the_shared_network(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = make_sandbox(2, shared_network=True)
    lb, app = sandbox.hosts
    assert app.shared_address is not None
    www = app.srv("/srv/www")
    www.mkdir()
    (www / "who").write_text(f"{app.netns}\n")
    serve = ["-m", "http.server", "4001", "--bind", app.shared_address, "--directory", "/srv/www"]
    server = subprocess.Popen(
        app.exec_argv([sys.executable, "-I", *serve]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # What bg would write on an LB: the upstream names the app host's shared address,
        # and defines the log format the site's access_log names.
        lb.srv(lb.nginx.upstream_file).write_text(
            f"upstream hello_live {{ server {app.shared_address}:4001; }}\n"
            'map "" $hello_slot { default "blue"; }\n'
            + format_directive(lb.nginx.app)
        )
        subprocess.run(lb.exec_argv(lb.nginx.argv("-s", "reload")), check=True)
        deadline = time.monotonic() + 15
        while True:
            conn = http.client.HTTPConnection(lb.address, 80, timeout=5)
            try:
                conn.request("GET", "/who")
                reply = conn.getresponse()
                answer = (reply.status, reply.getheader("X-BG-Slot"), reply.read().strip())
            finally:
                conn.close()
            if answer[0] == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer == (200, "blue", app.netns.encode())
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_without_shared_network_there_is_no_bridge(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(1)
    assert sandbox.switch is None
    assert sandbox.hosts[0].shared_address is None
    links = subprocess.run(sandbox.hosts[0].exec_argv(["ip", "-o", "link"]), capture_output=True,
                           text=True, check=True).stdout
    assert sandbox.hosts[0].shared_veth[:-1] not in links


def test_tmpfs_fills_on_one_host_only_and_goes_with_teardown(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(2)
    full, other = sandbox.hosts
    full.mount_tmpfs("/srv/hello/releases", size="1m")
    source = full.tmpfs_source
    seen = ssh(sandbox, full, f"grep -c ' - tmpfs {source} ' /proc/self/mountinfo; "
                              "dd if=/dev/zero of=/srv/hello/releases/big bs=64k count=64 "
                              "2>&1; echo rc=$?; df -k /srv/hello/releases | tail -n 1")
    count, *rest = seen.splitlines()
    assert count == "1", seen
    assert "No space left on device" in seen and "rc=1" in seen, seen
    assert rest[-1].split()[1] == "1024", seen  # 1 MiB in 1K blocks
    # The other host, and this machine, see the plain directory beneath.
    elsewhere = ssh(sandbox, other, f"grep -c ' - tmpfs {source} ' /proc/self/mountinfo; true")
    assert elsewhere.strip() == "0"
    assert f" - tmpfs {source} " not in Path("/proc/self/mountinfo").read_text()
    assert not full.srv("/srv/hello/releases/big").exists()
    assert source in mountinfo_sources()

    sandbox.teardown()
    assert source not in mountinfo_sources()


@pytest.mark.unit
def test_tmpfs_refuses_bad_size_and_paths_outside_srv(tmp_path: Path) -> None:
    host = Sandbox(tmp_path, 1)._host(7)
    for size in ("", "0", "8m,exec", "8 m", "-1", "8t"):
        with pytest.raises(ValueError, match="tmpfs size"):
            host.mount_tmpfs("/srv/hello/releases", size=size)
    for path in ("/tmp", "/srv/../etc", "srv/x"):
        with pytest.raises(ValueError, match="not a path under /srv"):
            host.mount_tmpfs(path)
    assert not (tmp_path / "host7").exists()
