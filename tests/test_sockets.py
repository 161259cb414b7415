"""Long-lived connections through a deploy, through a real nginx with the site bg ships
(nginx/site.conf.j2) and a real WebSocket client (bluegreen.wsclient: the handshake's
Sec-WebSocket-Accept checked, frames read): upgrades pass, a deploy with sockets open does
not wait drain_timeout, each socket gets its close frame (1001) and reconnects to the new
release; a stream and a slow POST in flight finish; an app that ignores SIGTERM is killed
after stop_timeout and bg says so; Ctrl-C during the wait says what is left running and the
next deploy finishes that retire first."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.sandbox.sample import build_sample
from bluegreen.wsclient import WebSocket
from bluegreen.wsload import SocketClients
from tests.helpers import Workspace, bg_argv, make_workspace, serving


def _greeting(ws: WebSocket) -> str:
    frame = ws.recv()
    assert frame.opcode == 1, frame
    return frame.text


def _settle(clients: SocketClients, n: int, timeout: float = 10) -> None:
    """Until ``n`` sockets have ended and reconnected (or ``timeout``), then stop them."""
    deadline = time.monotonic() + timeout
    while len(clients.reconnects) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    clients.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Workspace]:
    ws = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 20, "socket_grace": 1}})
    with serving(ws):
        yield ws


@pytest.mark.nginx
def test_upgrade_passes_and_plain_requests_keep_upstream_keepalive(site: Workspace,
                                                                   tmp_path: Path) -> None:
    site.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")))
    ws = WebSocket.connect("127.0.0.1", site.listen_port)
    assert _greeting(ws) == "hello 1.0.0 slot=blue"
    ws.send_text("ping")
    assert ws.recv().text == "1.0.0 slot=blue: ping"
    ws.close()
    # plain requests: one upstream connection serves them all (Connection "" upstream)
    for _ in range(5):
        site.get()
    port = site.ports["blue"]
    out = subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{port}"],
                         capture_output=True, text=True, check=True).stdout
    assert 1 <= len(out.splitlines()) <= 2, out


@pytest.mark.nginx
def test_stream_is_not_buffered(site: Workspace, tmp_path: Path) -> None:
    site.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")))
    conn = http.client.HTTPConnection("127.0.0.1", site.listen_port, timeout=10)
    conn.request("GET", "/stream?seconds=3")
    started = time.monotonic()
    r = conn.getresponse()
    r.fp.readline()  # the chunk's size
    first = r.fp.readline()  # the first event arrives before the stream ends
    assert time.monotonic() - started < 1.5, first
    assert b"data: 1.0.0" in first
    conn.close()


@pytest.mark.nginx
def test_deploy_with_open_sockets_does_not_wait_drain_timeout(site: Workspace,
                                                              tmp_path: Path) -> None:
    arts = tmp_path / "a"
    site.bg("deploy", str(build_sample(arts, "1.0.0")))
    clients = SocketClients([("127.0.0.1", site.listen_port)], count=20)
    clients.start()
    assert set(clients.greetings) == {"hello 1.0.0 slot=blue"}
    started = time.monotonic()
    proc = site.bg("-v", "deploy", str(build_sample(arts, "2.0.0")), timeout=60)
    wall = time.monotonic() - started
    _settle(clients, 20)
    out = proc.stdout + proc.stderr
    assert wall < 8, (wall, out)  # drain_timeout is 20 s (the machine may be busy)
    assert clients.ends == {"close 1001": 20}, clients.ends
    assert clients.problems(lambda _: {"2.0.0"}) == []
    assert len(clients.reconnects) == 20
    assert max(r.delay for r in clients.reconnects) < 1.0, clients.reconnects
    assert "20 connections still open on blue" in out, out
    assert "drain timed out" not in out


@pytest.mark.nginx
def test_stream_and_slow_post_in_flight_finish(site: Workspace, tmp_path: Path) -> None:
    arts = tmp_path / "a"
    site.bg("deploy", str(build_sample(arts, "1.0.0")))
    clients = SocketClients([("127.0.0.1", site.listen_port)], count=3)
    clients.start()
    stream: list[bytes] = []

    def read_stream() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", site.listen_port, timeout=30)
        conn.request("GET", "/stream?seconds=6")
        r = conn.getresponse()
        stream.append(f"{r.status} ".encode() + r.read())

    t = threading.Thread(target=read_stream)
    t.start()
    post = socket.create_connection(("127.0.0.1", site.listen_port), timeout=30)
    post.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                 b"Content-Length: 4096\r\n\r\n" + b"x" * 1000)
    time.sleep(0.3)
    deploy = subprocess.Popen(
        bg_argv("-v", "deploy", str(build_sample(arts, "2.0.0")), config=site.config),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    upstream = Path(site.nginx.upstream_file)
    deadline = time.monotonic() + 30
    while "live=green" not in upstream.read_text():
        assert time.monotonic() < deadline, "the switch never happened"
        time.sleep(0.05)
    time.sleep(2.5)  # past socket_grace: the POST has not reached blue, so blue still runs
    assert (site.root / "run" / "blue.pid").exists()
    post.sendall(b"x" * 3096)
    answer = b""
    while chunk := post.recv(65536):
        answer += chunk
    post.close()
    t.join(30)
    out, _ = deploy.communicate(timeout=60)
    _settle(clients, 3)
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:300]
    assert b"got=4096" in answer, answer
    print("ANSWER", answer[-80:])
    assert stream and stream[0].startswith(b"200 "), stream
    assert stream[0].count(b"data: 1.0.0") >= 6, stream
    assert deploy.returncode == 0, out
    assert clients.ends == {"close 1001": 3}, clients.ends
    assert clients.problems(lambda _: {"2.0.0"}) == []
    assert "4 connections still open on blue" in out, out  # 3 sockets, the stream


@pytest.mark.nginx
def test_app_ignoring_sigterm_is_killed_and_said(tmp_path: Path) -> None:
    site = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 20,
                                                      "socket_grace": 0.5}},
                          app_section={"command": "bin/server", "stop_timeout": 2})
    with serving(site):
        arts = tmp_path / "a"
        site.bg("deploy", str(build_sample(arts, "1.0.0", ignore_term=True)))
        blue = int((site.root / "run" / "blue.pid").read_text().split()[0])
        clients = SocketClients([("127.0.0.1", site.listen_port)], count=2)
        clients.start()
        started = time.monotonic()
        proc = site.bg("deploy", str(build_sample(arts, "2.0.0")), timeout=60)
        wall = time.monotonic() - started
        _settle(clients, 2)
        out = proc.stdout + proc.stderr
        assert wall < 8, (wall, out)
        # the runner's line names the session it killed (blue's start script leads it)
        assert re.search(r"blue did not exit on SIGTERM: killed after 2s \(SIGKILL to session"
                         rf" {blue}:[ 0-9]+\) \(\[app\] stop_timeout\)", out), out
        # SIGKILL: no close frame, and the load client says so
        assert sum(clients.ends.values()) == 2 and not any(
            e.startswith("close") for e in clients.ends), clients.ends
        assert all("ended with" in p for p in clients.problems(lambda _: {"2.0.0"}))
        assert {r.version for r in clients.reconnects} == {"2.0.0"}, clients.reconnects


@pytest.mark.nginx
def test_ctrl_c_during_the_wait_and_the_next_deploy(tmp_path: Path) -> None:
    site = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 60,
                                                      "socket_grace": 0.5}},
                          app_section={"command": "bin/server", "stop_timeout": 10})
    with serving(site):
        arts = tmp_path / "a"
        site.bg("deploy", str(build_sample(arts, "1.0.0", ignore_term=True)))
        clients = SocketClients([("127.0.0.1", site.listen_port)], count=2)
        clients.start()
        deploy = subprocess.Popen(
            bg_argv("deploy", str(build_sample(arts, "2.0.0")), config=site.config),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(4)  # switched, blue ignored its SIGTERM: bg waits for it
        deploy.send_signal(signal.SIGINT)
        out, _ = deploy.communicate(timeout=60)
        assert "blue (1.0.0) on local is left running" in out, out
        assert "the next deploy" in out, out
        assert os.path.exists(site.root / "run" / "blue.pid")
        started = time.monotonic()
        proc = site.bg("-v", "deploy", str(build_sample(arts, "3.0.0")), timeout=90)
        wall = time.monotonic() - started
        again = proc.stdout + proc.stderr
        assert ("blue (1.0.0) still runs from an earlier operation: finishing its retire"
                in again), again
        # bounded by stop_timeout (10 s: blue ignores SIGTERM), not by drain_timeout (60 s)
        assert wall < 25, (wall, again)
        _settle(clients, 2)
        assert {r.version for r in clients.reconnects} <= {"2.0.0", "3.0.0"}


@pytest.mark.nginx
def test_two_bg_sites_on_one_nginx_and_a_hyphenated_name(tmp_path: Path) -> None:
    """Each site defines the same $bg_connection_upgrade map (nginx lets a map variable be
    defined again; these are identical): two apps' sites load together, and the map's name
    does not depend on the app's (a hyphen is no nginx identifier)."""
    from bluegreen.accesslog import format_directive
    from bluegreen.sandbox.nginx import NginxServer

    server = NginxServer(prefix=tmp_path / "nginx", listen="127.0.0.1:18081", app="hello")
    server.render()
    other = (tmp_path / "nginx" / "sites" / "hello.conf").read_text().replace(
        "127.0.0.1:18081", "127.0.0.1:18082").replace("hello_", "shop_")
    (tmp_path / "nginx" / "sites" / "shop.conf").write_text(other)
    for app in ("hello", "shop"):
        (tmp_path / "nginx" / "conf.d" / f"{app}.conf").write_text(
            f"upstream {app}_live {{ server 127.0.0.1:4001; }}\n"
            f'map "" ${app}_slot {{ default "blue"; }}\n' + format_directive(app))
    site = (tmp_path / "nginx" / "sites" / "hello.conf").read_text()
    assert site.count("map $http_upgrade $bg_connection_upgrade") == 1
    r = subprocess.run(server.argv("-t"), capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.nginx
def test_the_site_bg_init_writes_passes_upgrades(tmp_path: Path) -> None:
    from bluegreen.scaffold import SITE_NAME, scaffold

    scaffold(tmp_path, app="my-shop", runner="command")
    site = (tmp_path / SITE_NAME).read_text()
    for line in ("map $http_upgrade $bg_connection_upgrade { default upgrade; '' \"\"; }",
                 "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $bg_connection_upgrade;",
                 "proxy_read_timeout 1h;", "proxy_buffering off;"):
        assert line in site, line
    assert 'Connection ""' not in site


@pytest.mark.unit
def test_read_retire() -> None:
    from bluegreen.facts.drain import Drain
    from bluegreen.facts.retire import Retire, read_retire

    assert read_retire("drained\n") == Retire(None, [], False, Drain(False), False)
    out = "open: 50 0 1130\nstop: killed after 2s\ndrained\n"
    assert read_retire(out) == Retire((50, "0", 1.13), ["killed after 2s"], False,
                                      Drain(False), True)


def _start_sample(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """The sample app's bin/server on ``port``, as the command runner starts it (its own
    session, under dash), once it accepts connections."""
    import tarfile

    with tarfile.open(build_sample(tmp_path / "art", "1.0.0")) as tar:
        tar.extractall(tmp_path / "rel")  # our own tarball
    proc = subprocess.Popen(["setsid", "dash", "-c", "exec bin/server"], cwd=tmp_path / "rel",
                            env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "the app did not start"
            time.sleep(0.02)


def _sigterms(pid: int, n: int) -> None:
    """SIGTERM ``n`` times back to back from dash, as bg's stop sends it (to the session's
    process group, then to each pid): a signal can arrive while the last one is handled."""
    subprocess.run(["dash", "-c", f'i=0; while [ $i -lt {n} ]; do kill -s TERM {pid};'
                    " i=$((i+1)); done"], check=True)


@pytest.mark.nginx
def test_sample_app_closes_its_sockets_on_a_second_sigterm_during_the_first(
        tmp_path: Path) -> None:
    """Seen in `bg rehearse` (~1 run in 7 on the sandbox): the sample app's SIGTERM handler
    took a lock (threading.Event.set); a second SIGTERM landing inside it re-entered the
    handler, which waited for that lock forever. The app never sent its close frames and
    stop_timeout's SIGKILL ended its sockets with a bare EOF. Exaggerated here (a burst of
    SIGTERMs) so that each try hits that window most of the time: 7 of 10 tries wedged."""
    from tests.helpers import free_port

    for attempt in range(4):
        port = free_port()
        proc = _start_sample(tmp_path / str(attempt), port)
        ws = WebSocket.connect("127.0.0.1", port, timeout=5)
        try:
            assert _greeting(ws) == "hello 1.0.0 slot=?"
            _sigterms(proc.pid, 500)
            frame = ws.recv()  # the socket's timeout (5 s) fails a wedged app
            assert frame.close_code == 1001, frame
            proc.wait(timeout=5)
        finally:
            ws.sock.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()



@pytest.mark.unit
def test_client_reads_a_close_frame_that_arrives_with_the_fin() -> None:
    """How a socket ended is told apart even when the server's close frame and its FIN
    arrive together (one read returns the frame, the next the EOF): a close, never an
    "eof without close"; a FIN alone, or in the middle of a frame, is one."""
    import struct

    from bluegreen.wsclient import END_EOF, OP_CLOSE

    close = bytes([0x80 | OP_CLOSE, 2]) + struct.pack("!H", 1001)
    for sent, expected in ((close, "close 1001"), (b"", END_EOF), (close[:3], END_EOF)):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.sendall(sent)
            theirs.shutdown(socket.SHUT_WR)
            ws = WebSocket(ours, {})
            try:
                frame = ws.recv()
                end = f"close {frame.close_code}" if frame.opcode == OP_CLOSE else "frame"
            except EOFError as exc:
                end = str(exc)
            assert end == expected, (sent, end)
