"""The load generator: three client mixes through nginx, every request one record.

Python, not wrk. wrk is faster, but it only counts socket errors in totals
(connect/read/write/timeout) and its Lua ``response()`` hook never sees a failed request, so
it cannot say *which* operation a reset belongs to, nor tell a stale keep-alive connection
from a refused one. Here every request is a record ``(start time, latency, outcome)``,
outcome an HTTP status or an error class. Each mix runs in its own forked process (so the
three do not share one GIL, and none shares the process that runs bg), with a few threads
each, one connection per thread, paced at ``rate`` requests per second per connection
(``0`` = as fast as possible). Unpaced, the generator reached ~6500 requests/s through nginx
on this 2-core machine, at 96% CPU; the default (4 connections x 3 mixes x 100/s = 1200
requests/s, ~55% CPU) leaves room for nginx, the app and bg itself, so the latency figures
do not just measure the clients and the app fighting over two cores.

The three mixes run at the same time, through every phase, so each operation is measured
against all three at once and the baselines see exactly the same load:

* ``close``: ``GET /`` with ``Connection: close``, a new TCP connection per request;
* ``keepalive``: ``GET /`` on persistent connections. Before reusing a connection the client
  checks, as urllib3 and httpcore do, whether the server already closed it (then it
  reconnects, counted as ``stale_reconnects``, not a failure); a request sent on a connection
  the server closes at that very moment fails (``stale`` when no byte of an answer came);
* ``post``: ``POST /`` with a 4 KiB body and ``Connection: close``; the answer must echo the
  body's length (else ``bad answer``, counted with the non-2xx).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
HARD_LIMIT = 1800.0  # no load loop runs longer than this, whatever the arguments


# ----------------------------------------------------------------------------- outcomes
# A record's outcome: an HTTP status (>= 100), BAD_ANSWER (a 2xx with the wrong body) or a
# connection error class (< 0).
BAD_ANSWER = 1
REFUSED, RESET, EOF, TIMEOUT, STALE, PROTOCOL, OTHER = -1, -2, -3, -4, -5, -6, -7
ERROR_NAMES = {
    REFUSED: "refused",
    RESET: "reset",
    EOF: "closed before answer",
    TIMEOUT: "timeout",
    STALE: "stale keep-alive",
    PROTOCOL: "bad HTTP",
    OTHER: "other socket error",
    BAD_ANSWER: "bad answer",
}


def outcome_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"HTTP {code}")


@dataclass(frozen=True)
class Mix:
    name: str
    keepalive: bool
    method: str
    body: int  # bytes of request body

    def request(self, port: int) -> bytes:
        head = [f"{self.method} / HTTP/1.1", f"Host: {HOST}:{port}", "User-Agent: bg-bench"]
        if not self.keepalive:
            head.append("Connection: close")
        payload = b""
        if self.body:
            payload = (b"0123456789abcdef" * (self.body // 16 + 1))[: self.body]
            head += ["Content-Type: application/octet-stream", f"Content-Length: {self.body}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


MIXES = (
    Mix("close", keepalive=False, method="GET", body=0),
    Mix("keepalive", keepalive=True, method="GET", body=0),
    Mix("post", keepalive=False, method="POST", body=4096),
)
MIX_TITLES = {
    "close": "new connection per request",
    "keepalive": "keep-alive connections",
    "post": "POST 4 KiB, new connection",
}


# ----------------------------------------------------------------------------- HTTP client
class HttpFailure(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(outcome_name(code))
        self.code = code


class Connection:
    """One raw HTTP/1.1 connection: enough protocol for nginx's answers, nothing more."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.received = 0  # bytes of the current answer so far

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def closed_by_peer(self) -> bool:
        """Readable while idle means EOF or a reset is waiting: the server closed it."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HttpFailure(EOF)
        self.received += len(chunk)
        self.buf += chunk

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 65536:
                raise HttpFailure(PROTOCOL)
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def exchange(self, request: bytes, method: str) -> tuple[int, bytes, bool]:
        """Send one request; return (status, body, server will close)."""
        self.received = 0
        self.buf.clear()
        self.sock.sendall(request)
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpFailure(PROTOCOL)
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        while line := self._line():
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip()
        close = headers.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0"
        if method == "HEAD" or status in (204, 304) or status < 200:
            return status, b"", close
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                self._line()
            return status, bytes(body), close
        if b"content-length" in headers:
            return status, self._exact(int(headers[b"content-length"])), close
        while True:  # until EOF
            try:
                self._fill()
            except HttpFailure:
                return status, bytes(self.buf), True


def classify(exc: BaseException, reused: bool, received: int) -> int:
    if isinstance(exc, HttpFailure):
        code = exc.code
    elif isinstance(exc, ConnectionRefusedError):
        code = REFUSED
    elif isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        code = RESET
    elif isinstance(exc, TimeoutError | socket.timeout):
        code = TIMEOUT
    elif isinstance(exc, ValueError):
        code = PROTOCOL
    else:
        code = OTHER
    if reused and received == 0 and code in (RESET, EOF):
        return STALE
    return code


@dataclass
class ClientStats:
    stale_reconnects: int = 0  # keep-alive connections found closed before reuse
    connections: int = 0


def client_loop(
    mix: Mix,
    port: int,
    *,
    rate: float,
    stop: Callable[[], bool],
    deadline: float,
    max_requests: int,
    timeout: float,
    out: list[tuple[float, float, int]],
    stats: ClientStats,
) -> None:
    """One client: requests paced at ``rate``/s (0: unpaced) until stopped; bounded."""
    request = mix.request(port)
    expect = f"{mix.body}".encode() if mix.body else b""
    interval = 1.0 / rate if rate > 0 else 0.0
    conn: Connection | None = None
    next_at = time.monotonic()
    try:
        for _ in range(max_requests):
            now = time.monotonic()
            if stop() or now >= deadline:
                break
            if interval:
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(next_at + interval, time.monotonic() - interval)
            reused = False
            if conn is not None and conn.closed_by_peer():
                stats.stale_reconnects += 1
                conn.close()
                conn = None
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = Connection(port, timeout)
                    stats.connections += 1
                else:
                    reused = True
                status, body, close = conn.exchange(request, mix.method)
                code = status
                if 200 <= status < 300 and expect and expect not in body:
                    code = BAD_ANSWER
                if close or not mix.keepalive:
                    conn.close()
                    conn = None
            except (OSError, HttpFailure, ValueError) as exc:
                code = classify(exc, reused, conn.received if conn is not None else 0)
                if conn is not None:
                    conn.close()
                    conn = None
            out.append((t0, time.monotonic() - t0, code))
    finally:
        if conn is not None:
            conn.close()


def _generator_main(mix: Mix, port: int, conns: int, rate: float, limit: float,
                    max_requests: int, stop_event: Any, out_path: str) -> None:
    """Body of one forked load process: ``conns`` client threads; records saved as .npy."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    deadline = time.monotonic() + min(limit, HARD_LIMIT)
    outs: list[list[tuple[float, float, int]]] = [[] for _ in range(conns)]
    stats = [ClientStats() for _ in range(conns)]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(mix, port),
            kwargs={
                "rate": rate,
                "stop": stop_event.is_set,
                "deadline": deadline,
                "max_requests": max_requests,
                "timeout": 5.0,
                "out": outs[i],
                "stats": stats[i],
            },
            daemon=True,
        )
        for i in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 10)
    rows = [r for o in outs for r in o]
    arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
    np.save(out_path, arr)
    Path(out_path + ".stats.json").write_text(json.dumps({
        "stale_reconnects": sum(s.stale_reconnects for s in stats),
        "connections": sum(s.connections for s in stats),
    }))


@dataclass
class LoadGenerator:
    """The three mixes, each in its own process, until stopped (or ``limit`` seconds)."""

    port: int
    workdir: Path
    conns: int = 4
    rate: float = 100.0
    limit: float = 900.0
    mixes: Sequence[Mix] = MIXES
    records: dict[str, np.ndarray] = field(default_factory=dict)
    client_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    _procs: list[Any] = field(default_factory=list)
    _stop: Any = None

    def start(self) -> None:
        ctx = mp.get_context("fork")
        self._stop = ctx.Event()
        per_client = int(min(self.limit, HARD_LIMIT) * (self.rate or 5000)) + 1
        for mix in self.mixes:
            p = ctx.Process(
                target=_generator_main,
                args=(mix, self.port, self.conns, self.rate, self.limit, per_client,
                      self._stop, str(self.workdir / f"records-{mix.name}.npy")),
                daemon=True,
            )
            p.start()
            self._procs.append(p)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for mix in self.mixes:
            path = self.workdir / f"records-{mix.name}.npy"
            self.records[mix.name] = (
                np.load(path) if path.exists() else np.zeros((0, 3), dtype=np.float64)
            )
            st = Path(str(path) + ".stats.json")
            self.client_stats[mix.name] = json.loads(st.read_text()) if st.exists() else {}

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- probes
def http_status(port: int, path: str = "/health", timeout: float = 1.0) -> int | None:
    try:
        conn = Connection(port, timeout)
    except OSError:
        return None
    try:
        return conn.exchange(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode(), "GET"
        )[0]
    except (OSError, HttpFailure, ValueError):
        return None
    finally:
        conn.close()


def wait_http(port: int, deadline: float, *, every: float = 0.01, path: str = "/health"
              ) -> float | None:
    """Poll until ``path`` answers 200; return when it did (monotonic) or None on timeout."""
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        if http_status(port, path) == 200:
            return time.monotonic()
        time.sleep(every)
    return None

