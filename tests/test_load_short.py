"""Zero failed requests through nginx while bg deploys twice and rolls back (a few seconds).

The short, bounded sibling of ``bench/load.py``: client threads send ``GET /`` and ``POST /``
with a body through nginx, each on a new connection (``Connection: close``), for as long as
bg works; every answer must be a 200 with the expected body. Keep-alive clients are left to
the benchmark: nginx < 1.27.4 resets an idle keep-alive connection at any reload, bg or not.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace

POST_BODY = b"x" * 4096
HARD_LIMIT = 60.0  # no client loop runs longer than this, whatever happens
MAX_REQUESTS = 20_000  # per client


@dataclass
class Clients:
    """New-connection GET and POST clients through nginx; bounded in time and count."""

    port: int
    gets: int = 4
    posts: int = 2
    ok: dict[str, int] = field(default_factory=lambda: {"GET": 0, "POST": 0})
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _started: float = 0.0

    def _one(self, method: str) -> tuple[bool, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            body = POST_BODY if method == "POST" else None
            conn.request(method, "/", body=body, headers={"Connection": "close"})
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}", ""
        finally:
            conn.close()
        if resp.status != 200:
            return False, f"HTTP {resp.status}", ""
        if method == "POST" and f"got={len(POST_BODY)}" not in text:
            return False, f"POST answered {text.strip()!r}", ""
        return True, "", resp.getheader("X-App-Version") or ""

    def _run(self, method: str) -> None:
        deadline = time.monotonic() + HARD_LIMIT
        for _ in range(MAX_REQUESTS):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            good, why, version = self._one(method)
            with self._lock:
                if good:
                    self.ok[method] += 1
                    self.versions.add(version)
                else:
                    at = time.monotonic() - self._started
                    self.failures.append(f"{method} at {at:.2f}s: {why}")

    def __enter__(self) -> Clients:
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=("GET",), daemon=True)
                         for _ in range(self.gets)]
        self._threads += [threading.Thread(target=self._run, args=("POST",), daemon=True)
                          for _ in range(self.posts)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


def test_no_failed_request_through_two_deploys_and_a_rollback(
    workspace: Workspace, tmp_path: Path
) -> None:
    arts = tmp_path / "artifacts"
    v1, v2, v3 = (build_sample(arts, v) for v in ("1.0.0", "2.0.0", "3.0.0"))
    workspace.bg("deploy", str(v1))

    ops: list[tuple[str, float]] = []
    with Clients(workspace.listen_port) as clients:
        time.sleep(0.3)
        for args in (("deploy", str(v2)), ("deploy", str(v3)), ("rollback",)):
            started = time.monotonic()
            workspace.bg(*args, timeout=60)
            ops.append((args[0], time.monotonic() - started))
        time.sleep(0.3)

    assert not any(t.is_alive() for t in clients._threads), "a client thread did not stop"
    assert clients.failures == [], (
        f"{len(clients.failures)} failed requests during {ops}:\n"
        + "\n".join(clients.failures[:20])
    )
    # Enough traffic that "no failure" means something, and it really went through the
    # deploys: all three releases answered.
    assert clients.ok["GET"] >= 50, clients.ok
    assert clients.ok["POST"] >= 20, clients.ok
    assert {"1.0.0", "2.0.0", "3.0.0"} <= clients.versions, clients.versions
    assert "2.0.0" in workspace.get().text  # the rollback went back to 2.0.0
