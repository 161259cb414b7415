"""HTTP load through nginx: new-connection, keep-alive and POST clients, every request counted.

The one load client of the project: ``bg rehearse``, ``bg demo``, the short load test and the
benchmark (bench/loadgen.py runs :func:`client_loop` in forked processes) all use it.

Raw sockets rather than an HTTP library, so a failure keeps its kind: refused, reset, a stale
keep-alive connection, a timeout, a wrong status or a wrong answer. Three kinds of client:

* ``close``: ``GET /`` with ``Connection: close``, a new TCP connection per request;
* ``keepalive``: ``GET /`` on a persistent connection. Before reusing it the client checks, as
  urllib3 and httpcore do, whether the server closed it meanwhile (then it reconnects: a
  ``stale_reconnect``, not a failure). With ``retry_stale``, a GET that was sent on a reused
  connection just as the server closed it and got no byte back is retried once on a new
  connection, as those libraries and browsers do; the retry is counted, not hidden;
* ``post``: ``POST /`` with a 4 KiB body on a new connection; the answer must echo the size.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HARD_LIMIT = 1800.0  # no client loop runs longer than this, whatever the arguments

# A request's outcome: an HTTP status (>= 100), BAD_ANSWER (a 2xx with the wrong body) or a
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
    """One kind of client: method, body size, and whether it keeps its connection."""

    name: str
    keepalive: bool
    method: str
    body: int  # bytes of request body

    def request(self, host: str, port: int, path: str = "/") -> bytes:
        head = [f"{self.method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: bg-load"]
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
MIX_BY_NAME = {m.name: m for m in MIXES}
MIX_TITLES = {
    "close": "new connection per request",
    "keepalive": "keep-alive connections",
    "post": "POST 4 KiB, new connection",
}


class HttpFailure(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(outcome_name(code))
        self.code = code


class Connection:
    """One raw HTTP/1.1 connection: enough protocol for nginx's answers, nothing more."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.received = 0  # bytes of the current answer so far
        self.headers: dict[bytes, bytes] = {}

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
        self.headers = headers
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
    stale_retries: int = 0  # GETs retried once after a reused connection closed under them
    connections: int = 0
    versions: set[str] = field(default_factory=set)  # X-App-Version headers seen


Record = tuple[float, float, int]  # (start, latency, outcome), times from time.monotonic()


def client_loop(
    mix: Mix,
    host: str,
    port: int,
    *,
    rate: float,
    stop: Callable[[], bool],
    deadline: float,
    max_requests: int,
    timeout: float,
    out: list[Record],
    stats: ClientStats,
    retry_stale: bool = False,
) -> None:
    """One client: requests paced at ``rate``/s (0: unpaced) until stopped; bounded."""
    request = mix.request(host, port)
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
            t0 = time.monotonic()
            for attempt in (0, 1):
                if conn is not None and conn.closed_by_peer():
                    stats.stale_reconnects += 1
                    conn.close()
                    conn = None
                reused = conn is not None
                try:
                    if conn is None:
                        conn = Connection(host, port, timeout)
                        stats.connections += 1
                    status, body, close = conn.exchange(request, mix.method)
                    code = status
                    if 200 <= status < 300 and expect and expect not in body:
                        code = BAD_ANSWER
                    if version := conn.headers.get(b"x-app-version"):
                        stats.versions.add(version.decode(errors="replace"))
                    if close or not mix.keepalive:
                        conn.close()
                        conn = None
                except (OSError, HttpFailure, ValueError) as exc:
                    code = classify(exc, reused, conn.received if conn is not None else 0)
                    if conn is not None:
                        conn.close()
                        conn = None
                # Only an idempotent request that never reached the app is sent again.
                if code == STALE and retry_stale and attempt == 0 and mix.method == "GET":
                    stats.stale_retries += 1
                    continue
                break
            out.append((t0, time.monotonic() - t0, code))
    finally:
        if conn is not None:
            conn.close()


def ok(code: int) -> bool:
    return 200 <= code < 300


@dataclass
class Load:
    """Client threads of the given mixes through one or more nginx endpoints, until stopped.

    A context manager; ``records`` holds every request per mix. ``endpoints`` are
    ``(host, port)`` pairs; clients are spread over them in turn.
    """

    endpoints: Sequence[tuple[str, int]]
    clients: dict[str, int] = field(
        default_factory=lambda: {"close": 2, "keepalive": 2, "post": 1})
    rate: float = 40.0  # requests/s per client; 0 = unpaced
    limit: float = 600.0
    timeout: float = 5.0
    retry_stale: bool = True
    records: dict[str, list[Record]] = field(default_factory=dict)
    stats: dict[str, list[ClientStats]] = field(default_factory=dict)
    origin: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _outs: list[tuple[str, list[Record]]] = field(default_factory=list)

    def start(self) -> None:
        self.origin = time.monotonic()
        deadline = self.origin + min(self.limit, HARD_LIMIT)
        max_requests = int(min(self.limit, HARD_LIMIT) * (self.rate or 5000)) + 1
        n = 0
        for name, count in self.clients.items():
            mix = MIX_BY_NAME[name]
            for _ in range(count):
                out: list[Record] = []
                stats = ClientStats()
                self.stats.setdefault(name, []).append(stats)
                self._outs.append((name, out))
                host, port = self.endpoints[n % len(self.endpoints)]
                n += 1
                self._threads.append(threading.Thread(
                    target=client_loop, args=(mix, host, port), daemon=True, kwargs={
                        "rate": self.rate, "stop": self._stop.is_set, "deadline": deadline,
                        "max_requests": max_requests, "timeout": self.timeout, "out": out,
                        "stats": stats, "retry_stale": self.retry_stale}))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self.records = {name: [] for name in self.clients}
        for name, out in self._outs:
            self.records[name].extend(out)
        for rows in self.records.values():
            rows.sort()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def counts(self) -> tuple[int, int]:
        """(requests, failed) so far, across all clients (safe while running)."""
        total = failed = 0
        for _, out in self._outs:
            rows = list(out)  # list.append is atomic; a copy is a consistent prefix
            total += len(rows)
            failed += sum(1 for r in rows if not ok(r[2]))
        return total, failed

    def versions(self) -> set[str]:
        return {v for stats in self.stats.values() for s in stats for v in s.versions}

    def total(self, what: str) -> int:
        return sum(getattr(s, what) for stats in self.stats.values() for s in stats)

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Window:
    """Requests started in [start, end) (monotonic), per mix: total and failures by kind."""

    requests: dict[str, int]
    failed: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def total_failed(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.failed.values())


def window(records: dict[str, list[Record]], start: float, end: float) -> Window:
    requests: dict[str, int] = {}
    failed: dict[str, dict[str, int]] = {}
    for name, rows in records.items():
        inside = [r for r in rows if start <= r[0] < end]
        requests[name] = len(inside)
        for r in inside:
            if not ok(r[2]):
                kinds = failed.setdefault(name, {})
                kinds[outcome_name(r[2])] = kinds.get(outcome_name(r[2]), 0) + 1
    return Window(requests, failed)


def buckets(records: dict[str, list[Record]], origin: float, end: float, width: float = 0.25
            ) -> tuple[list[float], list[int], list[int]]:
    """Per ``width``-second bucket from ``origin``: bucket start (s), requests, failures."""
    n = max(1, int((end - origin) / width) + 1)
    reqs, fails = [0] * n, [0] * n
    for rows in records.values():
        for t, _, code in rows:
            i = int((t - origin) / width)
            if 0 <= i < n:
                reqs[i] += 1
                if not ok(code):
                    fails[i] += 1
    return [i * width for i in range(n)], reqs, fails
