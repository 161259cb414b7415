"""HTTP load through nginx: new-connection, keep-alive and POST clients, every request counted.

The one load client of the project: ``bg rehearse``, ``bg demo``, the short load test and the
benchmark (bench/loadgen.py runs :func:`client_loop` in forked processes) all use it.

Raw sockets rather than an HTTP library (:mod:`bluegreen.rawhttp`), so a failure keeps its kind:
refused, reset, a stale keep-alive connection, a timeout, a wrong status or a wrong answer.
Three kinds of client:

* ``close``: ``GET /`` with ``Connection: close``, a new TCP connection per request;
* ``keepalive``: ``GET /`` on a persistent connection. Before reusing it the client checks, as
  urllib3 and httpcore do, whether the server closed it meanwhile (then it reconnects: a
  ``stale_reconnect``, not a failure). With ``retry_stale``, a GET that was sent on a reused
  connection just as the server closed it and got no byte back is retried once on a new
  connection, as those libraries and browsers do; the retry is counted, not hidden;
* ``post``: ``POST /`` with a 4 KiB body on a new connection; the answer must echo the size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bluegreen.rawhttp import (
    BAD_ANSWER,
    EOF,
    ERROR_NAMES,
    OTHER,
    PROTOCOL,
    REFUSED,
    RESET,
    STALE,
    TIMEOUT,
    Connection,
    HttpFailure,
    classify,
    ok,
    outcome_name,
)

# The outcomes and the connection are imported from here by the rehearsal, bench and tests.
__all__ = [
    "BAD_ANSWER", "EOF", "ERROR_NAMES", "HARD_LIMIT", "MIXES", "MIX_BY_NAME", "MIX_TITLES",
    "OTHER", "PROTOCOL", "REFUSED", "RESET", "STALE", "TIMEOUT", "ClientStats", "Connection",
    "HttpFailure", "Load", "Mix", "Record", "Window", "buckets", "classify", "client_loop",
    "ok", "outcome_name", "window",
]

HARD_LIMIT = 1800.0  # no client loop runs longer than this, whatever the arguments


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
    client = _Client(mix, host, port, timeout, stats, retry_stale)
    interval = 1.0 / rate if rate > 0 else 0.0
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
            code = client.request()
            out.append((t0, time.monotonic() - t0, code))
    finally:
        client.close()


class _Client:
    """One client's connection from request to request: a new one per request, or one kept
    alive and replaced when the server closed it."""

    def __init__(self, mix: Mix, host: str, port: int, timeout: float, stats: ClientStats,
                 retry_stale: bool) -> None:
        self.mix = mix
        self.host = host
        self.port = port
        self.timeout = timeout
        self.stats = stats
        self.retry_stale = retry_stale
        self.request_bytes = mix.request(host, port)
        self.expect = f"{mix.body}".encode() if mix.body else b""
        self.conn: Connection | None = None

    def request(self) -> int:
        """One request's outcome; with ``retry_stale``, a GET lost to a stale keep-alive
        connection is sent once more."""
        code = self._send()
        # Only an idempotent request that never reached the app is sent again.
        if code == STALE and self.retry_stale and self.mix.method == "GET":
            self.stats.stale_retries += 1
            code = self._send()
        return code

    def _send(self) -> int:
        """Send the request once, on the kept connection if the server has not closed it."""
        if self.conn is not None and self.conn.closed_by_peer():
            self.stats.stale_reconnects += 1
            self.close()
        reused = self.conn is not None
        try:
            if self.conn is None:
                self.conn = Connection(self.host, self.port, self.timeout)
                self.stats.connections += 1
            status, body, close = self.conn.exchange(self.request_bytes, self.mix.method)
            code = status
            if 200 <= status < 300 and self.expect and self.expect not in body:
                code = BAD_ANSWER
            if version := self.conn.headers.get(b"x-app-version"):
                self.stats.versions.add(version.decode(errors="replace"))
            if close or not self.mix.keepalive:
                self.close()
        except (OSError, HttpFailure, ValueError) as exc:
            code = classify(exc, reused, self.conn.received if self.conn is not None else 0)
            self.close()
        return code

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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
