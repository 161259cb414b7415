"""Zero failed requests through nginx while bg deploys twice and rolls back (a few seconds).

The short, bounded sibling of ``bench/load.py``, with the project's one load client
(``bluegreen.loadclient``): GET and POST clients through nginx, each request on a new
connection (``Connection: close``), for as long as bg works; every answer must be a 200 with
the expected body. Keep-alive clients are left to the rehearsal and the benchmark: nginx <
1.27.4 resets an idle keep-alive connection at any reload, bg or not.
"""

from __future__ import annotations

import time
from pathlib import Path

from bluegreen.loadclient import Load, ok, outcome_name, window
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace

HARD_LIMIT = 60.0  # no client loop runs longer than this, whatever happens


class Clients:
    """New-connection GET and POST clients through nginx on 127.0.0.1 (``bluegreen.loadclient``),
    with the counters other tests read while it runs: ``ok`` per method and ``failures`` as
    ``"METHOD at 1.23s: why"`` (seconds since the start, ``_started``)."""

    def __init__(self, port: int, gets: int = 4, posts: int = 2) -> None:
        self.load = Load(endpoints=[("127.0.0.1", port)], clients={"close": gets, "post": posts},
                         rate=0, limit=HARD_LIMIT, retry_stale=False)
        self._started = 0.0

    def _rows(self) -> list[tuple[str, float, int]]:
        method = {"close": "GET", "post": "POST"}
        return [(method[name], t0, code) for name, out in self.load._outs
                for t0, _, code in list(out)]

    @property
    def ok(self) -> dict[str, int]:
        counts = {"GET": 0, "POST": 0}
        for method, _, code in self._rows():
            counts[method] += ok(code)
        return counts

    @property
    def failures(self) -> list[str]:
        return [f"{method} at {t0 - self._started:.2f}s: {outcome_name(code)}"
                for method, t0, code in sorted(self._rows(), key=lambda r: r[1]) if not ok(code)]

    def __enter__(self) -> Clients:
        self.load.start()
        self._started = self.load.origin
        return self

    def __exit__(self, *exc: object) -> None:
        self.load.stop()


def test_no_failed_request_through_two_deploys_and_a_rollback(
    workspace: Workspace, tmp_path: Path
) -> None:
    arts = tmp_path / "artifacts"
    v1, v2, v3 = (build_sample(arts, v) for v in ("1.0.0", "2.0.0", "3.0.0"))
    workspace.bg("deploy", str(v1))

    ops: list[tuple[str, float]] = []
    load = Load(endpoints=[("127.0.0.1", workspace.listen_port)],
                clients={"close": 4, "post": 2}, rate=0, limit=HARD_LIMIT, retry_stale=False)
    with load:
        time.sleep(0.3)
        for args in (("deploy", str(v2)), ("deploy", str(v3)), ("rollback",)):
            started = time.monotonic()
            workspace.bg(*args, timeout=60)
            ops.append((args[0], time.monotonic() - started))
        time.sleep(0.3)

    assert not load.alive(), "a client thread did not stop"
    seen = window(load.records, 0.0, float("inf"))
    assert seen.total_failed == 0, f"failed requests during {ops}: {seen.failed}"
    # Enough traffic that "no failure" means something, and it really went through the
    # deploys: all three releases answered.
    assert seen.requests["close"] >= 50, seen.requests
    assert seen.requests["post"] >= 20, seen.requests
    assert {"1.0.0", "2.0.0", "3.0.0"} <= load.versions(), load.versions()
    assert "2.0.0" in workspace.get().text  # the rollback went back to 2.0.0
