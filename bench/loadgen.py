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

import json
import multiprocessing as mp
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # `python bench/load.py` from a checkout
    sys.path.insert(0, ROOT)

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
HARD_LIMIT = 1800.0  # no load loop runs longer than this, whatever the arguments


# The client itself (raw HTTP/1.1, outcomes, the three mixes, one client's loop) is the
# project's one load client, shared with `bg rehearse`, `bg demo` and the tests.
from bluegreen.loadclient import (  # noqa: E402
    BAD_ANSWER,
    EOF,
    ERROR_NAMES,
    MIX_TITLES,
    MIXES,
    OTHER,
    PROTOCOL,
    REFUSED,
    RESET,
    STALE,
    TIMEOUT,
    ClientStats,
    Connection,
    HttpFailure,
    Mix,
    classify,
    client_loop,
    outcome_name,
)

__all__ = [
    "BAD_ANSWER", "EOF", "ERROR_NAMES", "HARD_LIMIT", "HOST", "MIXES", "MIX_TITLES", "OTHER",
    "PROTOCOL", "REFUSED", "RESET", "STALE", "TIMEOUT", "ClientStats", "Connection",
    "HttpFailure", "LoadGenerator", "Mix", "classify", "client_loop", "http_status",
    "outcome_name", "wait_http",
]


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
            args=(mix, HOST, port),
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
        conn = Connection(HOST, port, timeout)
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

