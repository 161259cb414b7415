"""The verification window and the canary, measured under load through a private nginx.

    python bench/verify.py [--runs 20] [--window 8] [--out bench/out]

Prints, and writes to ``<out>/verify.json``:

* undo: a release whose /health passes while 30% of its ``GET /`` answer 500 is deployed
  under load; bg must undo it within the window, no request may fail once bg returned,
  and bg's count of failed requests must be within 10% of the load generator's;
* no false alarm: ``--runs`` good releases deployed under load, each with a window; none
  may be undone;
* canary: ``--canary 20`` over 2,000 new-connection requests gives the new release
  20 +- 3%; with ``sticky`` each of 40 clients (own addresses 127.0.1.N) stays on one
  release; ``bg promote`` and ``bg abort`` under load lose no new-connection request.

Only 127.0.0.1 is contacted (nginx and the slots on ports below the ephemeral range).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.loadclient import Load, ok
from bluegreen.rehearse.envs import free_port
from bluegreen.sandbox.nginx import NginxServer
from bluegreen.sandbox.sample import build_sample
from bluegreen.tomlwriter import dumps

CLIENTS = {"close": 4, "keepalive": 2}
RATE = 50.0  # requests/s per client: ~300 req/s through nginx


@dataclass
class Stand:
    """A private nginx in front of a bg workspace running the sample app."""

    workdir: Path
    window: float

    def __post_init__(self) -> None:
        taken: set[int] = set()
        self.listen = free_port(taken)
        taken.add(self.listen)
        blue, green = free_port(taken), free_port(taken)
        self.root = self.workdir / "srv" / "hello"
        self.nginx = NginxServer(prefix=self.workdir / "nginx", listen=f"127.0.0.1:{self.listen}",
                                 app="hello")
        self.nginx.render()
        self.config = self.workdir / "bluegreen.toml"
        self.blue, self.green = blue, green
        self.write_config()
        self.bg("setup")
        self.nginx.start()

    def write_config(self, *, sticky: bool = False) -> None:
        blue, green = self.blue, self.green
        self.config.write_text(dumps({
            "app": {"name": "hello", "root": str(self.root), "command": "bin/server",
                    "keep_releases": 3, "stop_timeout": 10},
            "slots": {"blue": blue, "green": green},
            "health": {"interval": 0.1, "timeout": 1.0, "deadline": 15.0},
            "nginx": {"upstream_file": self.nginx.upstream_file,
                      "test_command": self.nginx.test_command,
                      "reload_command": self.nginx.reload_command,
                      "pid_file": self.nginx.pid_file},
            "switch": {"drain_timeout": 10},
            "verify": {"window": self.window, "min_requests": 50, "max_error_rate": 0.05,
                       "interval": 0.5, "sticky": sticky,
                       "access_log": self.nginx.access_log},
        }))

    def bg(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(self.config),
                               "--json", *args], capture_output=True, text=True, timeout=300,
                              check=False)
        try:
            data: dict[str, Any] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            data = {"raw": proc.stdout + proc.stderr}
        return proc.returncode, data

    def artifact(self, version: str, **kw: Any) -> str:
        return str(build_sample(self.workdir / "art", version, **kw))

    def load(self) -> Load:
        return Load([("127.0.0.1", self.listen)], clients=dict(CLIENTS), rate=RATE, limit=900)

    def stop(self) -> None:
        for pidfile in (self.root / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pidfile.read_text().strip()), signal.SIGKILL)
        self.nginx.stop()


def under_load(stand: Stand, action: Callable[[], tuple[int, dict[str, Any]]]
               ) -> tuple[int, dict[str, Any], Load, float, float]:
    """Run ``action`` under load: its result, the load, when it started and returned."""
    with stand.load() as load:
        time.sleep(1.0)
        started = time.monotonic()
        code, data = action()
        returned = time.monotonic()
        time.sleep(1.5)
    return code, data, load, started, returned


def failed_after(load: Load, moment: float) -> tuple[int, int]:
    rows = [r for rows in load.records.values() for r in rows if r[0] >= moment]
    return len(rows), sum(1 for r in rows if not ok(r[2]))


def bench_undo(stand: Stand) -> dict[str, Any]:
    stand.bg("deploy", stand.artifact("1.0.0"), "--no-verify")
    code, data, load, started, returned = under_load(
        stand, lambda: stand.bg("deploy", stand.artifact("2.0.0", fail_share=0.3)))
    figures = data.get("error", {}).get("figures", {})
    generator = sum(1 for rows in load.records.values() for r in rows if not ok(r[2]))
    after_total, after_failed = failed_after(load, returned)
    counted = int(figures.get("errors", 0))
    return {
        "exit": code,
        "undone": code == 10,
        "verdict_after_s": figures.get("seconds"),
        "window_s": stand.window,
        "bg_seconds": round(returned - started, 2),
        "bg_requests": figures.get("requests"),
        "bg_failed": counted,
        "generator_failed": generator,
        "difference": round(abs(counted - generator) / generator, 3) if generator else None,
        "requests_after_return": after_total,
        "failed_after_return": after_failed,
    }


def bench_false_alarms(stand: Stand, runs: int) -> dict[str, Any]:
    undone, failed, requests, seen = 0, 0, 0, []
    for i in range(runs):
        version = f"3.{i}.0"
        code, data, load, _, _ = under_load(stand, lambda v=version: stand.bg(  # type: ignore[misc]
            "deploy", stand.artifact(v)))
        total, bad = load.counts()
        requests += total
        failed += bad
        undone += code == 10
        note = next((w for w in data.get("result", {}).get("warnings", [])
                     if w.startswith("verified")), data.get("error", {}).get("message", ""))
        seen.append({"version": version, "exit": code, "note": note, "failed": bad})
        print(f"  run {i + 1:2}/{runs}: exit {code}, {note}", flush=True)
    return {"runs": runs, "passed": sum(1 for s in seen if s["exit"] == 0), "undone": undone,
            "load_requests": requests, "load_failed": failed, "each": seen}


def version_from(port: int, source: str | None = None) -> str:
    """The release answering one GET / on a new connection (from ``source``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return body.split()[1] if head.split()[1] == "200" else "failed"


def _new_connections(load: Load) -> dict[str, int]:
    rows = load.records.get("close", [])
    return {"requests": len(rows), "failed": sum(1 for r in rows if not ok(r[2])),
            "all_kinds_failed": load.counts()[1]}


def bench_canary(stand: Stand) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stand.bg("deploy", stand.artifact("4.0.0"), "--no-verify")
    code, _ = stand.bg("deploy", "--canary", "20", stand.artifact("5.0.0"))
    seen = collections.Counter(version_from(stand.listen) for _ in range(2000))
    out["share"] = {"exit": code, "requests": 2000, "canary": seen["5.0.0"],
                    "percent": round(100 * seen["5.0.0"] / 2000, 2), "counts": dict(seen)}
    code, _, load, _, _ = under_load(stand, lambda: stand.bg("promote"))
    out["promote"] = {"exit": code, **_new_connections(load)}
    stand.bg("deploy", "--canary", "50", stand.artifact("6.0.0"))
    code, _, load, _, _ = under_load(stand, lambda: stand.bg("abort"))
    out["abort"] = {"exit": code, **_new_connections(load)}
    stand.write_config(sticky=True)
    stand.bg("deploy", "--canary", "30", stand.artifact("7.0.0"))
    clients = {f"127.0.1.{n}": {version_from(stand.listen, f"127.0.1.{n}") for _ in range(10)}
               for n in range(1, 41)}
    stand.bg("abort")
    stand.write_config()
    out["sticky"] = {"clients": len(clients), "requests_each": 10,
                     "on_one_release": sum(1 for v in clients.values() if len(v) == 1),
                     "on_canary": sum(1 for v in clients.values() if v == {"7.0.0"})}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/verify.py")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bg-bench-verify-") as tmp:
        stand = Stand(Path(tmp), args.window)
        try:
            print("undo: 30% of GET / answer 500, /health passes", flush=True)
            out["undo"] = u = bench_undo(stand)
            print(f"  exit {u['exit']}; verdict {u['verdict_after_s']}s into a"
                  f" {u['window_s']:g}s window; bg returned after {u['bg_seconds']}s")
            print(f"  failed requests: bg counted {u['bg_failed']} of {u['bg_requests']},"
                  f" the load generator saw {u['generator_failed']}"
                  f" (difference {u['difference']:.1%})" if u["difference"] is not None else "")
            print(f"  after bg returned: {u['failed_after_return']} failed of"
                  f" {u['requests_after_return']}")
            print(f"no false alarm: {args.runs} good releases under load,"
                  f" {args.window:g}s windows", flush=True)
            out["false_alarms"] = f = bench_false_alarms(stand, args.runs)
            print(f"  passed {f['passed']} of {f['runs']}, undone {f['undone']};"
                  f" load {f['load_requests']} requests, {f['load_failed']} failed")
            print("canary", flush=True)
            out["canary"] = c = bench_canary(stand)
            print(f"  --canary 20: {c['share']['canary']} of 2000 new-connection requests on"
                  f" the canary ({c['share']['percent']}%)")
            print(f"  sticky: {c['sticky']['on_one_release']} of {c['sticky']['clients']}"
                  f" clients saw one release in {c['sticky']['requests_each']} requests each"
                  f" ({c['sticky']['on_canary']} on the canary)")
            for what in ("promote", "abort"):
                r = c[what]
                print(f"  {what}: exit {r['exit']}, {r['failed']} failed of {r['requests']}"
                      f" new-connection requests ({r['all_kinds_failed']} of all kinds,"
                      " keep-alive included)")
        finally:
            stand.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verify.json").write_text(json.dumps(out, indent=2) + "\n")
    ok_all = (out["undo"]["undone"] and out["undo"]["failed_after_return"] == 0
              and (out["undo"]["difference"] or 0) <= 0.10
              and out["false_alarms"]["undone"] == 0
              and abs(out["canary"]["share"]["percent"] - 20) <= 3
              and out["canary"]["sticky"]["on_one_release"] == out["canary"]["sticky"]["clients"]
              and out["canary"]["promote"]["failed"] == 0 == out["canary"]["abort"]["failed"])
    print("PASS" if ok_all else "FAIL")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
