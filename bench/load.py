"""Zero downtime, measured: HTTP load through nginx while bg deploys, switches and rolls back.

Run: ``python bench/load.py [--ops 30] [--out bench/out] [--app sample|elixir]
[--seconds-per-op 2.0]`` (as root or not; needs nginx, numpy and matplotlib).

What happens, in one run, under one sustained load:

1. A private nginx on 127.0.0.1 (``bluegreen.sandbox.nginx.NginxServer``) in front of a bg
   workspace (two slots, runner ``command`` for the sample app or ``elixir`` for a real
   ``mix release``); ``bg setup`` and ``bg deploy`` of v1 before the load starts.
2. **bg**: ``--ops`` operations cycling ``deploy vN`` / ``switch`` / ``rollback``. Cycles
   alternate between the default (the old slot is retired after nginx's old workers drained,
   so the next switch and rollback start that slot again: *cold*) and ``--keep-old`` (both
   slots stay up, so switch and rollback are a bare nginx switch: *warm*). Every operation
   is ``bg --json ...`` in a subprocess; its wall time and its JSON steps are kept.
3. **bare reload** baseline: ``nginx -s reload`` of the unchanged upstream, as many times as
   bg reloaded nginx (once per successful operation): nginx's own floor.
4. **stop/start** baseline, the traditional deploy: one release serves on one fixed port
   behind the same nginx; SIGTERM it, wait until it is gone, start the next release on the
   same port, poll its /health directly until it answers. Its spawn-to-first-200 time is the
   app's boot time under load, subtracted from ``bg deploy``'s wall time in the report.

The load generator is Python, not wrk. wrk is faster, but it only counts socket errors in
totals (connect/read/write/timeout) and its Lua ``response()`` hook never sees a failed
request, so it cannot say *which* operation a reset belongs to, nor tell a stale keep-alive
connection from a refused one. Here every request is a record ``(start time, latency,
outcome)``, outcome an HTTP status or an error class. Each mix runs in its own forked
process (so the three do not share one GIL, and none shares the process that runs bg), with
a few threads each, one connection per thread, paced at ``--rate`` requests per second per
connection (``0`` = as fast as possible). Unpaced, the generator reached ~6500 requests/s
through nginx on this 2-core machine, at 96% CPU; the default (4 connections x 3 mixes x
100/s = 1200 requests/s, ~55% CPU) leaves room for nginx, the app and bg itself, so the
latency figures do not just measure the clients and the app fighting over two cores.

The three mixes run at the same time, through every phase, so each operation is measured
against all three at once and the baselines see exactly the same load:

* ``close``: ``GET /`` with ``Connection: close``, a new TCP connection per request;
* ``keepalive``: ``GET /`` on persistent connections. Before reusing a connection the client
  checks, as urllib3 and httpcore do, whether the server already closed it (then it
  reconnects, counted as ``stale_reconnects``, not a failure); a request sent on a connection
  the server closes at that very moment fails (``stale`` when no byte of an answer came);
* ``post``: ``POST /`` with a 4 KiB body and ``Connection: close``; the answer must echo the
  body's length (else ``bad answer``, counted with the non-2xx).

Attribution: the run is cut into consecutive windows that tile it without gaps: an
operation's window runs from its start to the next operation's start (its wall time plus
the pause before the next one; ``--seconds-per-op`` is the minimum window). A request
belongs to the window in which it *started*; warm-up, pauses between phases and cool-down
are windows too, so every request of the run is attributed to exactly one window.

Keep-alive failures are rare (nginx < 1.27.4 resets a keep-alive connection only when a
request races its old worker's shutdown), so the report also says whether bg's count could
be above the baseline's by chance (``excess_p_value``), and ``--keepalive-ab N`` compares the
two head to head, alternating, with keep-alive clients only.

Outputs (``--out``): ``load.json`` (everything, per operation and per phase),
``load.md`` (the tables, also printed), ``load.png`` (2xx answers/s, failures and p99
latency over time with every operation shaded), ``load-records.npz`` (every request;
``--replot`` renders the .md and .png again from it). Only 127.0.0.1 is ever contacted;
nginx and the slots listen on ports in [10000, 20000): below the ephemeral range (32768+),
and away from the ports the test suite picks (20000-30000). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/load.py` from a checkout
    sys.path.insert(0, str(REPO))

from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer  # noqa: E402
from bluegreen.sandbox.sample import build_sample  # noqa: E402

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
APP = "hello"
LOW_PORT, HIGH_PORT = 10000, 20000  # below the ephemeral range; not the tests' 20000-30000
HARD_LIMIT = 1800.0  # no load loop runs longer than this, whatever the arguments
AB_CONNS, AB_RATE = 8, 200.0  # keep-alive A/B: more requests, hence more reload races

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


# ----------------------------------------------------------------------------- statistics
def window_stats(rec: np.ndarray, start: float, until: float) -> dict[str, Any]:
    """Requests that started in [start, until): counts, failure classes, latency (ms)."""
    sel = rec[(rec[:, 0] >= start) & (rec[:, 0] < until)]
    codes = sel[:, 2].astype(np.int64)
    ok = (codes >= 200) & (codes < 300)
    conn = codes < 0
    non2xx = ~ok & ~conn
    answered = sel[codes >= 100, 1] * 1000.0
    classes: dict[str, int] = {}
    for code in np.unique(codes[~ok]):
        classes[outcome_name(int(code))] = int(np.count_nonzero(codes == code))

    def pct(q: float) -> float | None:
        return round(float(np.percentile(answered, q)), 2) if answered.size else None

    return {
        "requests": int(sel.shape[0]),
        "ok": int(np.count_nonzero(ok)),
        "non_2xx": int(np.count_nonzero(non2xx)),
        "conn_errors": int(np.count_nonzero(conn)),
        "failed": int(np.count_nonzero(~ok)),
        "failures": classes,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(float(answered.max()), 2) if answered.size else None,
    }


def merge_stats(recs: dict[str, np.ndarray], spans: Sequence[tuple[float, float]]
                ) -> dict[str, dict[str, Any]]:
    """Per mix, the stats of every request started in any of ``spans``."""
    out: dict[str, dict[str, Any]] = {}
    for name, rec in recs.items():
        mask = np.zeros(rec.shape[0], dtype=bool)
        for a, b in spans:
            mask |= (rec[:, 0] >= a) & (rec[:, 0] < b)
        sub = rec[mask]
        out[name] = window_stats(sub, -math.inf, math.inf)
    return out


# ----------------------------------------------------------------------------- operations
@dataclass
class Window:
    """A stretch of the run: an operation (or a pause) and the requests that started in it."""

    label: str
    kind: str  # deploy, switch, rollback, reload, stop/start, idle
    phase: str  # bg, reload, traditional, idle
    start: float
    end: float  # the operation's own end
    until: float = 0.0  # start of the next window
    exit_code: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return self.end - self.start


def free_port(taken: set[int]) -> int:
    """A free TCP port on 127.0.0.1 in [LOW_PORT, HIGH_PORT): below the ephemeral range."""
    import random

    for _ in range(500):
        port = random.randint(LOW_PORT, HIGH_PORT - 1)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in [{LOW_PORT}, {HIGH_PORT})")


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


@dataclass
class AppKind:
    """How to build a release of the app and run one by hand (for the stop/start baseline)."""

    name: str
    build: Callable[[Path, str], Path]
    config: Callable[[Path], str]  # the [app] section's runner lines, given the workdir
    spawn: Callable[[Path, int, Path], subprocess.Popen[bytes]]  # release dir, port, log
    stop: Callable[[subprocess.Popen[bytes], Path], None]
    health_deadline: float = 15.0


def _sample_spawn(rel: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [str(rel / "bin" / "server")],
            cwd=rel,
            env={**os.environ, "PORT": str(port), "BG_SLOT": "single"},
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _sigterm_and_wait(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# Two settings of the sample app's server (bluegreen/sandbox/sample.py) that are the toy
# server's costs, not bg's, and that hide what this benchmark looks for:
# * Nagle: the handler writes an answer's headers and body in two sends; the second waits
#   for nginx's delayed ACK, so every request through nginx took ~44 ms here (p50 44 ms
#   with Nagle, 0.3-0.6 ms without, at 100 requests/s per connection).
# * listen backlog 5 (socketserver's default): after every reload nginx's new workers open
#   fresh upstream connections in a burst; SYNs beyond the backlog are dropped and retried
#   by the kernel after 1 s, so a few requests per switch took ~1.0 s.
# Both are one line each in the sample app; until it has them the bench builds it with them
# (`--sample-as-is` builds it unchanged). A release server (Cowboy, inets, gunicorn...) sets
# TCP_NODELAY and a backlog of 128-1024 already.
SAMPLE_FIXES = (
    ('    protocol_version = "HTTP/1.1"\n', "    disable_nagle_algorithm = True\n",
     "disable_nagle_algorithm"),
    ("    server = ThreadingHTTPServer(", "    ThreadingHTTPServer.request_queue_size = 1024\n",
     "request_queue_size"),
)


def sample_app(*, as_is: bool = False) -> AppKind:
    """The sample app (bluegreen/sandbox/sample.py); see SAMPLE_FIXES unless ``as_is``."""
    if not as_is:
        from bluegreen.sandbox import sample

        for anchor, line, present in SAMPLE_FIXES:
            if present not in sample.SERVER and anchor in sample.SERVER:
                where = "after" if anchor.endswith("\n") else "before"
                sample.SERVER = sample.SERVER.replace(
                    anchor, anchor + line if where == "after" else line + anchor)
    return AppKind(
        name="sample",
        build=lambda out, version: build_sample(out, version, app=APP),
        config=lambda _wd: 'runner = "command"\ncommand = "bin/server"',
        spawn=_sample_spawn,
        stop=lambda proc, _rel: _sigterm_and_wait(proc),
    )


def elixir_app() -> AppKind:
    """A real ``mix release`` (tests/elixir_release.py builds it, offline and cached)."""
    try:
        from tests.elixir_release import build_release, elixir_available
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise SystemExit(f"--app elixir needs tests/elixir_release.py: {exc}") from exc
    if not elixir_available():
        raise SystemExit("--app elixir needs elixir and mix (apt-get install elixir)")
    cookie = "benchcookie" + os.urandom(8).hex()

    def env(rel: Path, port: int) -> dict[str, str]:
        return {**os.environ, "PORT": str(port), "RELEASE_NODE": "hello_single",
                "RELEASE_DISTRIBUTION": "sname", "RELEASE_COOKIE": cookie,
                "RELEASE_TMP": str(rel.parent / "tmp-single")}

    def spawn(rel: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            return subprocess.Popen(
                [str(rel / "bin" / APP), "start"], cwd=rel, env=env(rel, port),
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return AppKind(
        name="elixir",
        build=lambda out, version: build_release(version, out_dir=out),
        config=lambda _wd: 'runner = "elixir"\nrelease_name = "hello"',
        spawn=spawn,
        stop=lambda proc, _rel: _sigterm_and_wait(proc, 30.0),
        health_deadline=60.0,
    )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.app = (elixir_app() if args.app == "elixir"
                    else sample_app(as_is=args.sample_as_is))
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bg-load-")).resolve()
        self.out = Path(args.out).resolve()
        taken: set[int] = set()
        self.listen = free_port(taken)
        self.blue, self.green, self.single = free_port(taken), free_port(taken), free_port(taken)
        self.nginx = NginxServer(prefix=self.workdir / "nginx", listen=f"{HOST}:{self.listen}",
                                 app=APP)
        self.config = self.workdir / "bluegreen.toml"
        self.root = self.workdir / "srv" / APP
        self.artifacts = self.workdir / "artifacts"
        self.windows: list[Window] = []
        self.boot_idle: list[float] = []
        self.origin = 0.0
        self._built: dict[str, Path] = {}
        self._single: tuple[subprocess.Popen[bytes], Path] | None = None

    # -------------------------------------------------------------- setup
    def write_config(self) -> None:
        self.config.write_text(textwrap.dedent(f"""\
            [app]
            name = "{APP}"
            root = "{self.root}"
            keep_releases = 4
            stop_timeout = 15
            """) + self.app.config(self.workdir) + textwrap.dedent(f"""

            [slots]
            blue = {self.blue}
            green = {self.green}

            [health]
            interval = 0.05
            timeout = 1.0
            deadline = {self.app.health_deadline}

            [nginx]
            upstream_file = "{self.nginx.upstream_file}"
            test_command = "{self.nginx.test_command}"
            reload_command = "{self.nginx.reload_command}"
            probe_url = "http://{HOST}:{self.listen}/"
            pid_file = "{self.nginx.pid_file}"

            [switch]
            drain_timeout = 10
            """))

    def artifact(self, version: str) -> Path:
        if version not in self._built:
            self._built[version] = self.app.build(self.artifacts, version)
        return self._built[version]

    def extract(self, version: str, into: Path) -> Path:
        rel = into / version
        if not rel.exists():
            with tarfile.open(self.artifact(version)) as tar:
                tar.extractall(rel, filter="data")
        return rel

    def bg(self, *args: str, timeout: float = 180.0) -> tuple[int, dict[str, Any], float, float]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bluegreen", "-c", str(self.config), "--json", *args],
                capture_output=True, text=True, timeout=timeout, cwd=self.workdir, env=env,
                check=False,
            )
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = 124, "", f"timed out: {exc}"
        ended = time.monotonic()
        try:
            data: dict[str, Any] = json.loads(stdout) if stdout.strip() else {}
        except json.JSONDecodeError:
            data = {"raw": stdout[-2000:]}
        if code != 0:
            data.setdefault("stderr", stderr[-2000:])
        return code, data, started, ended

    def measure_boot(self, runs: int = 5) -> list[float]:
        """The app's boot time with no load: spawn to first 200 on /health (seconds)."""
        rel = self.extract("0.0.1", self.workdir / "boot")
        port = free_port({self.listen, self.blue, self.green, self.single})
        times = []
        for _ in range(runs):
            started = time.monotonic()
            proc = self.app.spawn(rel, port, self.workdir / "boot.log")
            try:
                up = wait_http(port, self.app.health_deadline, every=0.005)
            finally:
                self.app.stop(proc, rel)
            if up is None:
                raise SystemExit(f"the {self.app.name} app never answered on :{port}")
            times.append(up - started)
        return times

    # -------------------------------------------------------------- phases
    def mark(self, label: str, kind: str, phase: str, start: float, end: float,
             exit_code: int = 0, **detail: Any) -> Window:
        if self.windows and self.windows[-1].until == 0.0:
            self.windows[-1].until = start
        w = Window(label, kind, phase, start, end, exit_code=exit_code, detail=detail)
        self.windows.append(w)
        return w

    def idle(self, label: str, seconds: float) -> None:
        now = time.monotonic()
        self.mark(label, "idle", "idle", now, now)
        time.sleep(seconds)

    def pace(self, started: float) -> None:
        """Keep at least ``--seconds-per-op`` per window and a short settle after the op."""
        settle = max(self.args.settle, started + self.args.seconds_per_op - time.monotonic())
        time.sleep(settle)

    def bg_phase(self, log: Callable[[str], None]) -> int:
        version = 1
        reloads = 0
        for i in range(self.args.ops):
            cycle, step = divmod(i, 3)
            warm = cycle % 2 == 1
            extra = ["--keep-old"] if warm else []
            how = "warm" if warm else "cold"
            if step == 0:
                version += 1
                ver = f"{version}.0.0"
                args = ["deploy", str(self.artifact(ver)), *extra]
                label, kind = f"deploy {ver}" + (" (keep old)" if warm else ""), "deploy"
            elif step == 1:
                args, label, kind = ["switch", *extra], f"switch ({how})", f"switch {how}"
            else:
                args, label, kind = ["rollback", *extra], f"rollback ({how})", f"rollback {how}"
            code, data, started, ended = self.bg(*args)
            self.mark(label, kind, "bg", started, ended, code, bg=data)
            if code == 0:
                reloads += 1
            log(f"  {i + 1:3}/{self.args.ops} bg {label:<26} exit {code}"
                f"  {ended - started:6.2f}s")
            self.pace(started)
        return reloads

    def reload_phase(self, count: int, spacing: float, log: Callable[[str], None]) -> None:
        argv = self.nginx.argv("-s", "reload")
        for i in range(count):
            started = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, check=False, timeout=30)
            ended = time.monotonic()
            self.mark("nginx -s reload", "reload", "reload", started, ended, proc.returncode)
            if (i + 1) % 10 == 0 or i + 1 == count:
                log(f"  {i + 1:3}/{count} nginx -s reload")
            time.sleep(max(self.args.settle, started + spacing - time.monotonic()))

    def point_nginx_at(self, port: int, label: str) -> None:
        """The traditional setup: nginx's upstream is one fixed port (bg is out of the way)."""
        Path(self.nginx.upstream_file).write_text(textwrap.dedent(f"""\
            # stop/start baseline: one release on one port
            upstream {APP}_live {{
                server {HOST}:{port};
                keepalive 16;
            }}
            map "" ${APP}_slot {{
                default "{label}";
            }}
            map "" ${APP}_version {{
                default "single";
            }}
            """))
        subprocess.run(self.nginx.argv("-q", "-t"), check=True, capture_output=True)
        subprocess.run(self.nginx.argv("-s", "reload"), check=True, capture_output=True)

    def traditional_phase(self, count: int, spacing: float, log: Callable[[str], None]
                          ) -> list[float]:
        """Stop the old release, start the new one on the same port, wait until it answers.

        The last release started keeps serving (through the cool-down) until ``cleanup``.
        """
        trad = self.workdir / "traditional"
        trad.mkdir(exist_ok=True)
        log_file = self.workdir / "traditional.log"
        versions = [self.extract(v, trad) for v in ("1.0.0", "2.0.0")]
        start = time.monotonic()
        self.mark("start single release, point nginx at it", "idle", "idle", start, start)
        proc = self.app.spawn(versions[0], self.single, log_file)
        current = versions[0]
        self._single = (proc, current)
        if wait_http(self.single, self.app.health_deadline) is None:
            raise SystemExit("the stop/start baseline's first release never answered")
        self.point_nginx_at(self.single, "single")
        time.sleep(max(1.0, spacing))
        boots: list[float] = []
        for i in range(count):
            nxt = versions[(i + 1) % 2]
            started = time.monotonic()
            self.app.stop(proc, current)
            stopped = time.monotonic()
            proc = self.app.spawn(nxt, self.single, log_file)
            current = nxt
            self._single = (proc, current)
            up = wait_http(self.single, self.app.health_deadline)
            ended = time.monotonic()
            boot = (up - stopped) if up is not None else None
            if boot is not None:
                boots.append(boot)
            self.mark(f"stop/start {nxt.name}", "stop/start", "traditional", started, ended,
                      0 if up is not None else 1, stop_s=round(stopped - started, 3),
                      boot_s=round(boot, 3) if boot is not None else None)
            log(f"  {i + 1:3}/{count} stop/start -> {nxt.name}  {ended - started:6.2f}s"
                f" (stop {stopped - started:.2f}s, boot {boot if boot else float('nan'):.2f}s)")
            time.sleep(max(self.args.settle, started + spacing - time.monotonic()))
        return boots

    def cleanup(self) -> None:
        """Stop both slots with bg's own runner scripts (any runner), then nginx."""
        from bluegreen import config as configuration
        from bluegreen.runners import runner_for

        if self._single is not None:
            self.app.stop(*self._single)
            self._single = None
        try:
            runner = runner_for(configuration.load(self.config))
            for slot in ("blue", "green"):
                subprocess.run(["sh", "-c", runner.stop_script(slot)], capture_output=True,
                               timeout=60, check=False)
        finally:
            self.nginx.stop()

    # -------------------------------------------------------------- the run
    def prepare(self, log: Callable[[str], None]) -> int:
        """nginx, config, artifacts, the app's idle boot time, `bg setup`; 0 when ready."""
        if not Path(NGINX_BIN).exists():
            print(f"needs nginx ({NGINX_BIN}): apt-get install nginx-light", file=sys.stderr)
            return 2
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.nginx.render()
        self.write_config()
        log(f"bench in {self.workdir}: nginx {HOST}:{self.listen}, slots :{self.blue}"
            f" :{self.green}, stop/start port :{self.single}, app {self.app.name}")
        for v in ("0.0.1", "1.0.0", "2.0.0"):
            self.artifact(v)
        self.boot_idle = self.measure_boot()
        log(f"app boot time without load (spawn -> first 200 on /health):"
            f" median {statistics.median(self.boot_idle) * 1000:.0f} ms")
        code, data, _, _ = self.bg("setup")
        if code:
            print(f"bg setup failed: {data}", file=sys.stderr)
            return 1
        return 0

    def first_deploys(self, *extra: tuple[str, ...]) -> bool:
        """`bg deploy` 1.0.0 (then each of ``extra``), before any load: nothing is live yet."""
        for args in (("deploy", str(self.artifact("1.0.0"))), *extra):
            code, data, _, _ = self.bg(*args)
            if code:
                print(f"bg {' '.join(args)} failed: {data}", file=sys.stderr)
                return False
        return True

    def run(self) -> int:
        def log(text: str) -> None:
            print(text, flush=True)

        code = self.prepare(log)
        if code:
            return code
        self.nginx.start()
        load: LoadGenerator | None = None
        boots: list[float] = []
        try:
            if not self.first_deploys():
                return 1
            for v in range(2, 2 + self.args.ops // 3 + 1):  # build before the clock runs
                self.artifact(f"{v}.0.0")
            budget = (self.args.ops * 2 + self.args.traditional + 30) * max(
                self.args.seconds_per_op, 3.0) + 120
            load = LoadGenerator(self.listen, self.workdir, conns=self.args.conns,
                                 rate=self.args.rate, limit=min(budget, HARD_LIMIT))
            load.start()
            self.origin = time.monotonic()
            log(f"load: 3 mixes x {self.args.conns} connections"
                f" x {self.args.rate:g}/s each (0 = unpaced)")
            self.idle("warm-up", 2.0)
            log(f"bg: {self.args.ops} operations")
            reloads = self.bg_phase(log)
            bg_windows = [w for w in self.windows if w.phase == "bg"]
            spacing = min(max(statistics.median(w.wall for w in bg_windows) + self.args.settle,
                              self.args.seconds_per_op), 5.0) if bg_windows else 2.0
            self.idle("pause", 1.0)
            log(f"baseline 1: {reloads} bare nginx reloads, one every {spacing:.2f}s")
            self.reload_phase(reloads, spacing, log)
            log(f"baseline 2: {self.args.traditional} traditional stop/start deploys on"
                f" :{self.single}")
            boots = self.traditional_phase(self.args.traditional, spacing, log)
            self.idle("cool-down", 1.0)
            self.windows[-1].until = time.monotonic()
            load.stop()
        finally:
            if load is not None and not load.records:
                load.stop()
            self.cleanup()
        return self.report(load, boots)

    def keepalive_ab(self, pairs: int) -> int:
        """Keep-alive clients only, at a higher rate: a bare reload and a warm `bg switch`,
        alternately, ``pairs`` times each, so both see the same machine at the same time.

        In the main run keep-alive failures are rare (a few per 30 reloads), too few to
        compare bg with the baseline; this gives each side tens of them.
        """
        def log(text: str) -> None:
            print(text, flush=True)

        code = self.prepare(log)
        if code:
            return code
        self.nginx.start()
        load: LoadGenerator | None = None
        spans: dict[str, list[tuple[float, float]]] = {"bare reload": [], "bg switch": []}
        walls: dict[str, list[float]] = {"bare reload": [], "bg switch": []}
        exits: list[int] = []
        try:
            if not self.first_deploys(("deploy", str(self.artifact("2.0.0")), "--keep-old")):
                return 1
            mix = [m for m in MIXES if m.name == "keepalive"]
            load = LoadGenerator(self.listen, self.workdir, conns=AB_CONNS, rate=AB_RATE,
                                 limit=min(pairs * 2 * 5.0 + 60, HARD_LIMIT), mixes=mix)
            load.start()
            log(f"keep-alive A/B: {pairs} x (bare reload, bg switch --keep-old),"
                f" {AB_CONNS} keep-alive connections x {AB_RATE:g}/s")
            time.sleep(1.5)
            reload_argv = self.nginx.argv("-s", "reload")
            for i in range(pairs):
                for kind in ("bare reload", "bg switch"):
                    started = time.monotonic()
                    if kind == "bare reload":
                        subprocess.run(reload_argv, capture_output=True, check=False,
                                       timeout=30)
                        ended = time.monotonic()
                    else:
                        code, _, started, ended = self.bg("switch", "--keep-old")
                        exits.append(code)
                    walls[kind].append(ended - started)
                    time.sleep(max(self.args.settle,
                                   started + self.args.seconds_per_op - time.monotonic()))
                    spans[kind].append((started, time.monotonic()))
                if (i + 1) % 10 == 0 or i + 1 == pairs:
                    log(f"  {i + 1:3}/{pairs}")
            load.stop()
        finally:
            if load is not None and not load.records:
                load.stop()
            self.cleanup()
        rec = load.records["keepalive"]
        result: dict[str, Any] = {
            "pairs": pairs, "connections": AB_CONNS, "rate_per_connection": AB_RATE,
            "nginx": nginx_version(), "cpus": os.cpu_count(),
            "bg_exit_codes": sorted(set(exits)),
            "client_stats": load.client_stats,
        }
        for kind, sp in spans.items():
            st = merge_stats({"keepalive": rec}, sp)["keepalive"]
            result[kind] = {**st, "operations": len(sp),
                            "wall_median_s": round(statistics.median(walls[kind]), 3),
                            "failed_per_reload": round(st["failed"] / max(1, len(sp)), 3)}
        k_bg, k_bare = result["bg switch"]["failed"], result["bare reload"]["failed"]
        result["p_bg_more"] = round(excess_p_value(k_bg, k_bare, pairs, pairs), 4)
        result["p_bg_fewer"] = round(excess_p_value(k_bare, k_bg, pairs, pairs), 4)
        (self.out / "keepalive-ab.json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            f"| keep-alive A/B ({pairs} each, alternating) | reloads | requests | failed |"
            " per reload | p50 | p99 | max | failures |",
            "|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for kind in spans:
            r = result[kind]
            lines.append(f"| {kind} | {r['operations']} | {r['requests']} | {r['failed']} |"
                         f" {r['failed_per_reload']:.2f} | {_ms(r['p50_ms'])} |"
                         f" {_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | {_fails(r)} |")
        lines.append(f"\nIf both had the same rate per reload: P(bg this many or more) ="
                     f" {result['p_bg_more']}, P(bg this few or fewer) = {result['p_bg_fewer']}")
        print("\n".join(lines))
        print(f"written: {self.out / 'keepalive-ab.json'}")
        return 1 if result["p_bg_more"] < 0.05 or any(exits) else 0

    # -------------------------------------------------------------- report
    def report(self, load: LoadGenerator, boots: list[float]) -> int:
        recs = load.records
        # The raw records first: whatever goes wrong below, the run can be analysed again.
        arrays: dict[str, Any] = {"origin": np.array([self.origin]), **recs}
        np.savez_compressed(self.out / "load-records.npz", **arrays)
        (self.out / "load-windows.json").write_text(json.dumps([
            {"label": w.label, "kind": w.kind, "phase": w.phase, "start_s": w.start - self.origin,
             "wall_s": w.wall, "window_s": w.until - w.start, "exit": w.exit_code}
            for w in self.windows], indent=1) + "\n")
        for w in self.windows:
            w.stats = {name: window_stats(rec, w.start, w.until) for name, rec in recs.items()}
        phases: dict[str, list[Window]] = {}
        for w in self.windows:
            phases.setdefault(w.phase, []).append(w)
        totals = {p: merge_stats(recs, [(w.start, w.until) for w in ws])
                  for p, ws in phases.items()}
        kinds: dict[str, list[Window]] = {}
        for w in self.windows:
            if w.phase != "idle":
                kinds.setdefault(w.kind, []).append(w)
        by_kind = {
            k: {
                "count": len(ws),
                "wall_median_s": round(statistics.median(w.wall for w in ws), 3),
                "wall_max_s": round(max(w.wall for w in ws), 3),
                "mixes": merge_stats(recs, [(w.start, w.until) for w in ws]),
            }
            for k, ws in kinds.items()
        }
        headline = self.headline(boots)
        targets = self.targets(totals)
        failures = failure_list(recs, self.windows, phases=("bg", "reload"))
        doc = {
            "meta": {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "nginx": nginx_version(),
                "app": self.app.name,
                "ops": self.args.ops,
                "traditional": self.args.traditional,
                "seconds_per_op": self.args.seconds_per_op,
                "load": {"connections_per_mix": self.args.conns,
                         "rate_per_connection": self.args.rate,
                         "mixes": {m.name: MIX_TITLES[m.name] for m in MIXES}},
                "client_stats": load.client_stats,
                "duration_s": round(self.windows[-1].until - self.origin, 2),
                "attribution": "a request belongs to the window in which it started; windows"
                               " tile the run (an operation's window ends where the next"
                               " one starts)",
            },
            "headline": headline,
            "targets": targets,
            "phases": totals,
            "by_kind": by_kind,
            "failures_in_bg_and_reload": failures,
            "windows": [
                {
                    "label": w.label, "kind": w.kind, "phase": w.phase,
                    "start_s": round(w.start - self.origin, 3),
                    "wall_s": round(w.wall, 3),
                    "window_s": round(w.until - w.start, 3),
                    "exit": w.exit_code, "stats": w.stats, "detail": w.detail,
                }
                for w in self.windows
            ],
        }
        (self.out / "load.json").write_text(json.dumps(doc, indent=2) + "\n")
        md = markdown(doc)
        (self.out / "load.md").write_text(md)
        try:
            plot(recs, self.windows, self.origin, self.out / "load.png")
        except Exception as exc:  # the numbers matter more than the picture
            print(f"plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print()
        print(md)
        print(f"written: {self.out / 'load.json'}, {self.out / 'load.md'},"
              f" {self.out / 'load.png'}")
        return 1 if any(t["status"] == "FAIL" for t in targets.values()) else 0

    def headline(self, boots: list[float]) -> dict[str, Any]:
        def med(values: Sequence[float]) -> float | None:
            return round(statistics.median(values), 3) if values else None

        def of(kind_prefix: str, *, bg_seconds: bool = False) -> list[float]:
            out = []
            for w in self.windows:
                if w.phase == "bg" and w.kind.startswith(kind_prefix) and w.exit_code == 0:
                    out.append(float(w.detail["bg"].get("seconds", 0.0)) if bg_seconds
                               else w.wall)
            return out

        deploys = of("deploy")
        boot_load = med(boots)
        steps: dict[str, list[float]] = {}
        for w in self.windows:
            if w.kind == "deploy" and w.exit_code == 0:
                for s in w.detail["bg"].get("steps", []):
                    steps.setdefault(step_group(s["title"]), []).append(float(s["seconds"]))
        return {
            "switch_warm_wall_median_s": med(of("switch warm")),
            "switch_warm_in_bg_median_s": med(of("switch warm", bg_seconds=True)),
            "switch_cold_wall_median_s": med(of("switch cold")),
            "rollback_warm_wall_median_s": med(of("rollback warm")),
            "rollback_cold_wall_median_s": med(of("rollback cold")),
            "deploy_wall_median_s": med(deploys),
            "deploy_in_bg_median_s": med(of("deploy", bg_seconds=True)),
            "boot_idle_median_s": med(self.boot_idle),
            "boot_under_load_median_s": boot_load,
            "deploy_minus_boot_s": (round(statistics.median(deploys) - boot_load, 3)
                                    if deploys and boot_load is not None else None),
            "deploy_step_medians_s": {k: round(statistics.median(v), 3)
                                      for k, v in steps.items()},
            "bg_process_start_s": bg_startup_seconds(),
        }

    def targets(self, totals: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        bg = totals.get("bg", {})
        rl = totals.get("reload", {})
        tr = totals.get("traditional", {})
        ops_ok = all(w.exit_code == 0 for w in self.windows if w.phase in ("bg", "reload"))

        def failed(t: dict[str, dict[str, Any]], mix: str) -> int:
            return int(t.get(mix, {}).get("failed", 0))

        def verdict(ok: bool) -> dict[str, Any]:
            return {"pass": ok, "status": "PASS" if ok else "FAIL"}

        k_bg, k_rl = failed(bg, "keepalive"), failed(rl, "keepalive")
        n_bg = sum(1 for w in self.windows if w.phase == "bg" and w.exit_code == 0)
        n_rl = sum(1 for w in self.windows if w.phase == "reload" and w.exit_code == 0)
        p = excess_p_value(k_bg, k_rl, n_bg, n_rl)
        keepalive = {
            "pass": k_bg <= k_rl,
            # a count above the baseline's is a failure only when chance cannot explain it
            "status": "PASS" if k_bg <= k_rl else ("FAIL" if p < 0.05 else "WITHIN NOISE"),
            "bg": k_bg, "bare_reload": k_rl, "bg_reloads": n_bg, "bare_reloads": n_rl,
            "p_value": round(p, 4),
        }
        return {
            "every bg operation succeeded": verdict(ops_ok),
            "zero failed close requests in bg operations": {
                **verdict(failed(bg, "close") == 0), "bg": failed(bg, "close")},
            "zero failed POST requests in bg operations": {
                **verdict(failed(bg, "post") == 0), "bg": failed(bg, "post")},
            "keep-alive failures <= bare reload baseline": keepalive,
            "stop/start baseline failures (reported)": {
                "pass": True, "status": "REPORTED",
                "traditional": {m: failed(tr, m) for m in ("close", "keepalive", "post")},
                "bg": {m: failed(bg, m) for m in ("close", "keepalive", "post")}},
        }


def excess_p_value(k_bg: int, k_base: int, n_bg: int, n_base: int) -> float:
    """How likely bg gets ``k_bg`` or more of the ``k_bg + k_base`` failures by chance alone.

    If failures per reload had the same rate for bg (``n_bg`` reloads) and the bare-reload
    baseline (``n_base`` reloads), bg's share of them would be Binomial(k_bg + k_base,
    n_bg / (n_bg + n_base)); this is the one-sided tail P(X >= k_bg).
    """
    n = k_bg + k_base
    if n == 0 or n_bg + n_base == 0 or k_bg == 0:
        return 1.0
    q = n_bg / (n_bg + n_base)
    if q <= 0.0 or q >= 1.0:
        return 1.0 if q >= 1.0 else 0.0

    def log_pmf(i: int) -> float:
        return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                + i * math.log(q) + (n - i) * math.log1p(-q))

    return min(1.0, math.fsum(math.exp(log_pmf(i)) for i in range(k_bg, n + 1)))


def failure_list(recs: dict[str, np.ndarray], windows: Sequence[Window],
                 phases: Sequence[str], limit: int = 500) -> list[dict[str, Any]]:
    """Every failed request of these phases: when (after its window's start) and how."""
    out: list[dict[str, Any]] = []
    for i, w in enumerate(windows, 1):
        if w.phase not in phases:
            continue
        for mix, rec in recs.items():
            sel = rec[(rec[:, 0] >= w.start) & (rec[:, 0] < w.until)]
            codes = sel[:, 2]
            for t0, lat, code in sel[(codes < 200) | (codes >= 300)]:
                out.append({"window": i, "label": w.label, "mix": mix,
                            "after_start_s": round(float(t0 - w.start), 4),
                            "latency_ms": round(float(lat) * 1000, 2),
                            "outcome": outcome_name(int(code))})
    return out[:limit]


def step_group(title: str) -> str:
    """A step title without its particulars (versions, slots, ports, URLs, notes)."""
    import re

    title = re.sub(r"\s*\([^)]*\)", "", title)
    title = re.sub(r"https?://\S+", "URL", title)
    title = re.sub(r"\b\d+(\.\d+)*\b", "N", title)
    return re.sub(r"\b(blue|green)\b", "SLOT", title).strip()


def bg_startup_seconds(runs: int = 3) -> float:
    """How long ``python -m bluegreen --version`` takes: bg's fixed cost per command."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bluegreen", "--version"], capture_output=True,
                       check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.monotonic() - started)
    return round(statistics.median(times), 3)


def nginx_version() -> str:
    proc = subprocess.run([NGINX_BIN, "-v"], capture_output=True, text=True, check=False)
    return (proc.stderr or proc.stdout).strip().rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- markdown
def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _fails(s: dict[str, Any]) -> str:
    if not s["failed"]:
        return ""
    return ", ".join(f"{k} x{n}" for k, n in sorted(s["failures"].items()))


def markdown(doc: dict[str, Any]) -> str:
    meta, head = doc["meta"], doc["headline"]
    load = meta["load"]
    lines = [
        f"# bg under load: {meta['app']} app, nginx {meta['nginx']}, {meta['cpus']} CPUs,"
        f" {meta['date']}",
        "",
        f"Load: 3 mixes at once, {load['connections_per_mix']} connections each, "
        f"{load['rate_per_connection']:g} requests/s per connection; run of "
        f"{meta['duration_s']:.0f} s. A request counts in the window where it started; an"
        " operation's window lasts until the next one starts. Latencies are of answered"
        " requests, in ms.",
        "",
        "## Totals: bg vs the baselines",
        "",
        "| phase | mix | operations | requests | non-2xx | conn errors | p50 | p90 | p99 |"
        " max | failures |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    names = {"bg": "bg deploy/switch/rollback", "reload": "baseline: bare nginx reload",
             "traditional": "baseline: stop/start on one port", "idle": "pauses (no operation)"}
    counts: dict[str, int] = {}
    for w in doc["windows"]:
        counts[w["phase"]] = counts.get(w["phase"], 0) + (0 if w["phase"] == "idle" else 1)
    for phase in ("bg", "reload", "traditional", "idle"):
        for mix, st in doc["phases"].get(phase, {}).items():
            lines.append(
                f"| {names[phase]} | {mix} | {counts.get(phase, 0)} | {st['requests']} |"
                f" {st['non_2xx']} | {st['conn_errors']} | {_ms(st['p50_ms'])} |"
                f" {_ms(st['p90_ms'])} | {_ms(st['p99_ms'])} | {_ms(st['max_ms'])} |"
                f" {_fails(st)} |")
    lines += ["", "## Targets", ""]
    for name, t in doc["targets"].items():
        rest = ", ".join(f"{k}: {v}" for k, v in t.items() if k not in ("pass", "status"))
        status = t.get("status", "PASS" if t["pass"] else "FAIL")
        lines.append(f"- {status}: {name}" + (f" ({rest})" if rest else ""))
    if any(t.get("status") == "WITHIN NOISE" for t in doc["targets"].values()):
        lines += [
            "",
            "WITHIN NOISE: bg's keep-alive count is above the baseline's, but if both had the"
            " same rate per reload bg would get that many or more with probability p_value"
            " (>= 0.05). bg reloads nginx exactly once per operation, as the baseline does.",
        ]

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    lines += [
        "",
        "## Times",
        "",
        f"- `bg switch` (warm, the idle slot still runs): median wall {s(head['switch_warm_wall_median_s'])}"  # noqa: E501
        f" ({s(head['switch_warm_in_bg_median_s'])} inside bg; starting the `bg` process"
        f" itself takes {s(head['bg_process_start_s'])})",
        f"- `bg switch` (cold, the idle slot was retired and starts again): median"
        f" {s(head['switch_cold_wall_median_s'])}; `bg rollback` warm"
        f" {s(head['rollback_warm_wall_median_s'])}, cold {s(head['rollback_cold_wall_median_s'])}",
        f"- `bg deploy`: median wall {s(head['deploy_wall_median_s'])}; app boot time"
        f" (spawn to first 200 on /health) {s(head['boot_under_load_median_s'])} under this load"
        f" ({s(head['boot_idle_median_s'])} idle); **deploy minus boot:"
        f" {s(head['deploy_minus_boot_s'])}**",
        "- `bg deploy` step medians: " + ", ".join(
            f"{k} {v:.3f} s" for k, v in head["deploy_step_medians_s"].items()),
        "",
        "## By kind of operation",
        "",
        "| operation | n | wall median | wall max | requests | failed close | failed keep-alive |"
        " failed POST | p99 (close/keep-alive/POST) | max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for kind, k in doc["by_kind"].items():
        m = k["mixes"]
        req = sum(x["requests"] for x in m.values())
        mx = max((x["max_ms"] or 0.0) for x in m.values())
        lines.append(
            f"| {kind} | {k['count']} | {k['wall_median_s']:.2f} s | {k['wall_max_s']:.2f} s |"
            f" {req} | {m['close']['failed']} | {m['keepalive']['failed']} |"
            f" {m['post']['failed']} | {_ms(m['close']['p99_ms'])} /"
            f" {_ms(m['keepalive']['p99_ms'])} / {_ms(m['post']['p99_ms'])} | {_ms(mx)} |")
    lines += [
        "",
        "## Every operation",
        "",
        "Failed = non-2xx + connection errors, per mix (close / keep-alive / POST).",
        "",
        "| # | t (s) | operation | exit | wall | window | requests | failed c/k/p |"
        " p50 | p99 | max | failures |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for i, w in enumerate(doc["windows"], 1):
        st = w["stats"]
        req = sum(x["requests"] for x in st.values())
        fails = "/".join(str(st[m]["failed"]) for m in ("close", "keepalive", "post"))
        p50 = max((x["p50_ms"] or 0.0) for x in st.values())
        p99 = max((x["p99_ms"] or 0.0) for x in st.values())
        mx = max((x["max_ms"] or 0.0) for x in st.values())
        what = "; ".join(f"{m}: {_fails(x)}" for m, x in st.items() if x["failed"])
        lines.append(
            f"| {i} | {w['start_s']:.1f} | {w['label']} | {w['exit']} | {w['wall_s']:.2f} |"
            f" {w['window_s']:.2f} | {req} | {fails} | {_ms(p50)} | {_ms(p99)} | {_ms(mx)} |"
            f" {what} |")
    lines.append("")
    lines.append("p50/p99 per operation: the highest of the three mixes.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plot
KIND_COLORS = {
    "deploy": "#4c72b0", "switch warm": "#55a868", "switch cold": "#8fd19e",
    "rollback warm": "#c44e52", "rollback cold": "#e8a0a2", "reload": "#8172b2",
    "stop/start": "#ccb974", "idle": "#ffffff",
}
MIX_COLORS = {"close": "#1f77b4", "keepalive": "#ff7f0e", "post": "#2ca02c"}


def plot(recs: dict[str, np.ndarray], windows: Sequence[Window], origin: float, path: Path,
         bin_s: float = 0.25) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    end = max(w.until for w in windows) - origin
    edges = np.arange(0.0, math.floor(end / bin_s) * bin_s + bin_s / 2, bin_s)  # whole bins
    width = max(14.0, min(40.0, end / 12.0))
    fig, (ax_rps, ax_err, ax_lat) = plt.subplots(3, 1, figsize=(width, 10), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 2, 2]})
    centers = edges[:-1] + bin_s / 2
    stacked = np.zeros(len(centers))
    for name, rec in recs.items():
        t = rec[:, 0] - origin
        codes = rec[:, 2]
        ok = (codes >= 200) & (codes < 300)
        good, _ = np.histogram(t[ok], edges)  # a 502 is answered fast: count only 2xx here
        bad, _ = np.histogram(t[~ok], edges)
        ax_rps.plot(centers, good / bin_s, lw=0.8, color=MIX_COLORS[name],
                    label=f"{name}: {MIX_TITLES[name]}")
        nz = bad > 0
        ax_err.bar(centers[nz], bad[nz], width=bin_s, bottom=stacked[nz],
                   color=MIX_COLORS[name], alpha=0.9, label=f"{name} failed")
        stacked += bad
        idx = np.digitize(t[codes >= 100], edges) - 1
        lat = rec[codes >= 100, 1] * 1000
        p99 = np.full(len(centers), np.nan)
        order = np.argsort(idx, kind="stable")
        idx_s, lat_s = idx[order], lat[order]
        bounds = np.searchsorted(idx_s, np.arange(len(centers) + 1))
        for b in range(len(centers)):
            chunk = lat_s[bounds[b]:bounds[b + 1]]
            if chunk.size:
                p99[b] = np.percentile(chunk, 99)
        ax_lat.plot(centers, p99, lw=0.8, color=MIX_COLORS[name], label=f"{name} p99")
    for ax in (ax_rps, ax_err, ax_lat):
        for w in windows:
            if w.kind == "idle":
                continue
            ax.axvspan(w.start - origin, w.end - origin if w.end > w.start + 0.05 else
                       w.start - origin + 0.05, color=KIND_COLORS.get(w.kind, "#dddddd"),
                       alpha=0.35, lw=0)
    top = ax_rps.get_ylim()[1]
    ax_rps.set_ylim(0, top * 1.35)
    ax_err.set_yscale("symlog", linthresh=1.0)  # one failure is as visible as a hundred
    ax_err.set_ylim(0, max(10.0, float(stacked.max()) * 2))
    short = {"deploy": "D", "switch warm": "S", "switch cold": "S*", "rollback warm": "R",
             "rollback cold": "R*", "reload": "", "stop/start": "stop/start"}
    for w in windows:
        if w.kind != "idle" and short.get(w.kind):
            ax_rps.text(w.start - origin, top * 1.12, short[w.kind], fontsize=7, va="top",
                        rotation=90 if w.kind == "stop/start" else 0)
    phase_names = {"bg": "bg operations", "reload": "baseline: bare nginx -s reload",
                   "traditional": "baseline: stop/start"}
    for phase, title in phase_names.items():
        ws = [w for w in windows if w.phase == phase]
        if ws:
            ax_rps.text((ws[0].start + ws[-1].until) / 2 - origin, top * 1.3, title,
                        ha="center", va="top", fontsize=10, weight="bold")
    ax_rps.set_ylabel("2xx answers/s (per mix)")
    ax_err.set_ylabel(f"failed requests per {bin_s:g} s")
    ax_lat.set_ylabel(f"p99 latency, ms ({bin_s:g}s bins)")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("seconds since the load started")
    ax_rps.legend(loc="lower left", fontsize=8, ncol=3)
    handles = [Patch(color=c, alpha=0.35, label=k) for k, c in KIND_COLORS.items()
               if k != "idle" and any(w.kind == k for w in windows)]
    ax_err.legend(handles=[*ax_err.get_legend_handles_labels()[0], *handles], fontsize=8,
                  loc="upper left", ncol=2)
    ax_lat.legend(loc="upper left", fontsize=8, ncol=3)
    ax_rps.set_title("Successful requests/s, failures and p99 latency through nginx; shaded:"
                     " operations"
                     " (D deploy, S switch, R rollback; * cold = the slot starts again)",
                     fontsize=11)
    ax_lat.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--ops", type=int, default=30, help="bg operations (default 30)")
    p.add_argument("--out", default=str(REPO / "bench" / "out"), help="output directory")
    p.add_argument("--app", choices=("sample", "elixir"), default="sample")
    p.add_argument("--seconds-per-op", type=float, default=2.0,
                   help="minimum window per operation, seconds (default 2)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="pause after each operation, seconds (default 0.5)")
    p.add_argument("--traditional", type=int, default=5,
                   help="stop/start deploys in the traditional baseline (default 5)")
    p.add_argument("--conns", type=int, default=4, help="connections per mix (default 4)")
    p.add_argument("--rate", type=float, default=100.0,
                   help="requests/s per connection, 0 = unpaced (default 100)")
    p.add_argument("--sample-as-is", action="store_true",
                   help="build the sample app unchanged (see SAMPLE_FIXES)")
    p.add_argument("--workdir", default=None, help="working directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--keepalive-ab", type=int, default=0, metavar="N",
                   help="instead of the run: N bare reloads and N warm `bg switch`,"
                        " alternating, under keep-alive load only")
    p.add_argument("--replot", action="store_true",
                   help="only render load.md and load.png again from the files in --out")
    args = p.parse_args(argv)
    if args.ops < 1 or args.ops > 300:
        p.error("--ops must be between 1 and 300")
    if not 0 < args.conns <= 64:
        p.error("--conns must be between 1 and 64")
    return args


def replot(out: Path) -> int:
    """Render load.md and load.png again from a run's load.json and load-records.npz."""
    doc = json.loads((out / "load.json").read_text())
    data = np.load(out / "load-records.npz")
    recs = {m.name: data[m.name] for m in MIXES if m.name in data}
    origin = float(data["origin"][0])
    windows = [
        Window(w["label"], w["kind"], w["phase"], origin + w["start_s"],
               origin + w["start_s"] + w["wall_s"], origin + w["start_s"] + w["window_s"],
               w["exit"])
        for w in doc["windows"]
    ]
    (out / "load.md").write_text(markdown(doc))
    plot(recs, windows, origin, out / "load.png")
    print(f"written: {out / 'load.md'}, {out / 'load.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(Path(args.out))
    bench = Bench(args)
    try:
        return bench.keepalive_ab(args.keepalive_ab) if args.keepalive_ab else bench.run()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(bench.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
