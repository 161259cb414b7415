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
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.sandbox.sample import build_sample
from bluegreen.wsclient import HandshakeError, WebSocket
from tests.helpers import Workspace, make_workspace, stop_workspace


def _greeting(ws: WebSocket) -> str:
    frame = ws.recv()
    assert frame.opcode == 1, frame
    return frame.text


class Held:
    """``n`` sockets through nginx, each read by a thread until its close frame (or reset,
    or EOF), then reconnected once: what each close was and where the reconnect landed."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.socks = [WebSocket.connect("127.0.0.1", port) for _ in range(n)]
        self.first = [_greeting(ws) for ws in self.socks]
        self.ends: list[str] = []
        self.reconnects: list[tuple[float, str]] = []  # (seconds after the close, greeting)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._hold, args=(ws,), daemon=True)
                        for ws in self.socks]
        for t in self.threads:
            t.start()

    def _hold(self, ws: WebSocket) -> None:
        ws.sock.settimeout(120)
        try:
            frame = ws.recv()
            end = f"close {frame.close_code}" if frame.opcode == 8 else f"frame {frame.opcode}"
            ws.close(frame.close_code or 1000)
        except ConnectionResetError:
            end = "reset"
        except EOFError:
            end = "eof"
        except OSError as exc:
            end = f"error {exc}"
        closed = time.monotonic()
        try:
            again = WebSocket.connect("127.0.0.1", self.port)
            greeting = _greeting(again)
            again.close()
        except (OSError, EOFError, HandshakeError) as exc:
            greeting = f"failed: {exc}"
        with self.lock:
            self.ends.append(end)
            self.reconnects.append((time.monotonic() - closed, greeting))

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Workspace]:
    ws = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 20, "socket_grace": 1}})
    ws.bg("setup")
    ws.nginx.start()
    try:
        yield ws
    finally:
        stop_workspace(ws)


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


def test_deploy_with_open_sockets_does_not_wait_drain_timeout(site: Workspace,
                                                              tmp_path: Path) -> None:
    arts = tmp_path / "a"
    site.bg("deploy", str(build_sample(arts, "1.0.0")))
    held = Held(site.listen_port, 20)
    assert set(held.first) == {"hello 1.0.0 slot=blue"}
    started = time.monotonic()
    proc = site.bg("-v", "deploy", str(build_sample(arts, "2.0.0")), timeout=60)
    wall = time.monotonic() - started
    held.join(10)
    out = proc.stdout + proc.stderr
    assert wall < 5, (wall, out)  # drain_timeout is 20 s
    assert held.ends == ["close 1001"] * 20, held.ends
    assert all(g == "hello 2.0.0 slot=green" for _, g in held.reconnects), held.reconnects
    assert max(s for s, _ in held.reconnects) < 1.0, held.reconnects
    assert "20 connections still open on blue" in out, out
    assert "drain timed out" not in out


def test_stream_and_slow_post_in_flight_finish(site: Workspace, tmp_path: Path) -> None:
    arts = tmp_path / "a"
    site.bg("deploy", str(build_sample(arts, "1.0.0")))
    held = Held(site.listen_port, 3)
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
        [sys.executable, "-m", "bluegreen", "-c", str(site.config), "-v", "deploy",
         str(build_sample(arts, "2.0.0"))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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
    held.join(10)
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:300]
    assert b"got=4096" in answer, answer
    print("ANSWER", answer[-80:])
    assert stream and stream[0].startswith(b"200 "), stream
    assert stream[0].count(b"data: 1.0.0") >= 6, stream
    assert deploy.returncode == 0, out
    assert held.ends == ["close 1001"] * 3, held.ends
    assert "4 connections still open on blue" in out, out  # 3 sockets, the stream


def test_app_ignoring_sigterm_is_killed_and_said(tmp_path: Path) -> None:
    site = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 20,
                                                      "socket_grace": 0.5}},
                          app_section={"command": "bin/server", "stop_timeout": 2})
    site.bg("setup")
    site.nginx.start()
    try:
        arts = tmp_path / "a"
        site.bg("deploy", str(build_sample(arts, "1.0.0", ignore_term=True)))
        held = Held(site.listen_port, 2)
        started = time.monotonic()
        proc = site.bg("deploy", str(build_sample(arts, "2.0.0")), timeout=60)
        wall = time.monotonic() - started
        held.join(10)
        out = proc.stdout + proc.stderr
        assert wall < 8, (wall, out)
        assert "blue did not exit on SIGTERM: killed after 2s ([app] stop_timeout)" in out, out
        assert sorted(held.ends) in (["eof", "eof"], ["reset", "reset"], ["eof", "reset"]), \
            held.ends
        assert all(g == "hello 2.0.0 slot=green" for _, g in held.reconnects), held.reconnects
    finally:
        stop_workspace(site)


def test_ctrl_c_during_the_wait_and_the_next_deploy(tmp_path: Path) -> None:
    site = make_workspace(tmp_path, extra={"switch": {"drain_timeout": 30,
                                                      "socket_grace": 0.5}},
                          app_section={"command": "bin/server", "stop_timeout": 20})
    site.bg("setup")
    site.nginx.start()
    try:
        arts = tmp_path / "a"
        site.bg("deploy", str(build_sample(arts, "1.0.0", ignore_term=True)))
        held = Held(site.listen_port, 2)
        deploy = subprocess.Popen(
            [sys.executable, "-m", "bluegreen", "-c", str(site.config), "deploy",
             str(build_sample(arts, "2.0.0"))], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        time.sleep(4)  # switched, blue ignored its SIGTERM: bg waits for it
        deploy.send_signal(signal.SIGINT)
        out, _ = deploy.communicate(timeout=60)
        assert "blue (1.0.0) on local is left running" in out, out
        assert "the next deploy" in out, out
        assert os.path.exists(site.root / "run" / "blue.pid")
        started = time.monotonic()
        proc = site.bg("deploy", str(build_sample(arts, "3.0.0")), timeout=90)
        wall = time.monotonic() - started
        again = proc.stdout + proc.stderr
        assert ("blue (1.0.0) still runs from an earlier operation: finishing its retire"
                in again), again
        assert wall < 30, wall
        held.join(10)
    finally:
        stop_workspace(site)
