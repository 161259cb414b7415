"""Long-lived connections through a deploy, measured (issue 19's targets).

Run: ``python bench/load_sockets.py [--runs 3] [--sockets 50] [--no-baseline]``
(needs nginx; as root or not). A private nginx with the site bg ships
(nginx/site.conf.j2) in front of the sample app, ``[switch]`` at its defaults
(drain_timeout 30 s, socket_grace 0.5 s, stop_timeout 30 s). Two scenarios, each printed as figures:

1. **sockets**: ``--sockets`` WebSockets held (``bluegreen.wsload``), no plain request in
   flight, ``bg deploy`` of the next release. Target: wall <= app boot + 3 s (app boot:
   bg's own start and health-gate steps), every socket closed with a close frame, every
   reconnect on the new release within 1 s of its close. The baseline (the same with
   ``socket_grace`` = drain_timeout: what bg did before) shows what it replaces.
2. **in flight**: a 20 s server-sent-events stream and a slow POST (its body arriving
   over 3 s) in flight at the switch, while new-connection and POST clients run (the
   load client, ``bluegreen.loadclient``): both must complete with 200, no request fail.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # `python bench/load_sockets.py` from a checkout
    sys.path.insert(0, ROOT)

from bluegreen.loadclient import Load, window  # noqa: E402
from bluegreen.wsload import SocketClients  # noqa: E402

from loadgen import HOST  # noqa: E402
from stand import Stand, sample_app  # noqa: E402

BOOT_STEPS = ("start", "health")  # bg's steps that are the app's boot


def log(text: str) -> None:
    print(text, flush=True)


def steps_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    result = data.get("result", data)
    steps = result.get("steps", []) if isinstance(result, dict) else []
    return [s for s in steps if isinstance(s, dict)]


def boot_seconds(data: dict[str, Any]) -> float:
    """The deploy's start + health-gate steps: the app's own boot as bg saw it."""
    return sum(float(s["seconds"]) for s in steps_of(data)
               if any(w in s["title"] for w in BOOT_STEPS))


def set_switch(stand: Stand, **values: float) -> None:
    text = stand.config.read_text()
    head, _, rest = text.partition("[switch]")
    lines = [ln for ln in rest.split("\n") if not any(ln.startswith(k) for k in values)]
    body = "\n".join(f"{k} = {v}" for k, v in values.items())
    stand.config.write_text(f"{head}[switch]\n{body}{chr(10).join(lines)}")


def sockets_run(stand: Stand, version: str, count: int) -> dict[str, Any]:
    clients = SocketClients([(HOST, stand.listen)], count=count)
    clients.start()
    try:
        code, data, started, ended = stand.bg("deploy", str(stand.artifact(version)))
        deadline = time.monotonic() + 10
        while len(clients.reconnects) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        clients.stop()
    delays = [r.delay for r in clients.reconnects]
    boot = boot_seconds(data)
    return {
        "exit": code, "wall": ended - started, "boot": boot, "over_boot": ended - started - boot,
        "ends": dict(clients.ends), "reconnected": len(delays),
        "on_new": sum(1 for r in clients.reconnects if r.version == version),
        "reconnect_max": max(delays, default=float("nan")),
        "reconnect_median": statistics.median(delays) if delays else float("nan"),
        "failures": dict(clients.failures),
        "problems": clients.problems(lambda _: {version}), "steps": steps_of(data),
    }


def stream(port: int, seconds: int, out: dict[str, Any]) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=seconds + 30)
    try:
        conn.request("GET", f"/stream?seconds={seconds}")
        r = conn.getresponse()
        body = r.read()
        out.update(status=r.status, events=body.count(b"data: "))
    except (OSError, http.client.HTTPException) as exc:
        out.update(status=type(exc).__name__, events=0)
    finally:
        conn.close()


def slow_post(port: int, spread: float, out: dict[str, Any]) -> None:
    body = b"x" * 4096
    s = socket.create_connection((HOST, port), timeout=60)
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                  b"Content-Length: 4096\r\n\r\n")
        for i in range(8):  # 512 bytes at a time, spread over the switch
            s.sendall(body[i * 512:(i + 1) * 512])
            time.sleep(spread / 8)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        status = answer.split(b"\r\n", 1)[0].split(b" ")[1:2]
        out.update(status=int(status[0]) if status else "none",
                   complete=b"got=4096" in answer)
    except OSError as exc:
        out.update(status=type(exc).__name__, complete=False)
    finally:
        s.close()


def in_flight_run(stand: Stand, version: str) -> dict[str, Any]:
    got_stream: dict[str, Any] = {}
    got_post: dict[str, Any] = {}
    with Load(endpoints=[(HOST, stand.listen)], clients={"close": 2, "post": 2},
              rate=40.0) as load:
        t1 = threading.Thread(target=stream, args=(stand.listen, 20, got_stream))
        t2 = threading.Thread(target=slow_post, args=(stand.listen, 3.0, got_post))
        t1.start()
        t2.start()
        time.sleep(0.5)
        code, _, started, ended = stand.bg("deploy", str(stand.artifact(version)))
        t1.join(60)
        t2.join(60)
    w = window(load.records, 0.0, float("inf"))
    return {"exit": code, "wall": ended - started, "stream": got_stream, "post": got_post,
            "requests": w.requests, "failed": w.failed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sockets", type=int, default=50)
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args(argv)
    stand = Stand(sample_app(), Path(tempfile.mkdtemp(prefix="bg-bench-sockets-")))
    # Stand.prepare without its idle-boot measurement: the boot here is bg's own steps.
    stand.workdir.mkdir(parents=True, exist_ok=True)
    stand.nginx.render()
    stand.write_config()
    # bg's defaults: a stream that reached the old slot is finished by its graceful stop,
    # which [app] stop_timeout bounds
    stand.config.write_text(stand.config.read_text().replace(
        "stop_timeout = 15", "stop_timeout = 30"))
    set_switch(stand, drain_timeout=30, socket_grace=0.5)
    code, data, _, _ = stand.bg("setup")
    if code:
        log(f"bg setup failed: {data}")
        return 2
    log(f"bench in {stand.workdir}: nginx {HOST}:{stand.listen}, slots :{stand.blue}"
        f" :{stand.green}, sample app")
    fails = 0
    with stand.serving():
        if not stand.first_deploys():
            return 1
        n = 2
        log(f"\n1. {args.sockets} WebSockets held, no plain request in flight, bg deploy"
            " (drain_timeout 30, socket_grace 0.5):")
        for _ in range(args.runs):
            version = f"{n}.0.0"
            n += 1
            r = sockets_run(stand, version, args.sockets)
            ok = (r["exit"] == 0 and r["over_boot"] <= 3.0 and not r["problems"]
                  and r["on_new"] == args.sockets and r["reconnect_max"] <= 1.0)
            fails += not ok
            log(f"   deploy {version}: exit {r['exit']}, wall {r['wall']:.2f}s = boot"
                f" {r['boot']:.2f}s + {r['over_boot']:.2f}s; ends {r['ends']};"
                f" reconnected {r['reconnected']}/{args.sockets}, on {version}:"
                f" {r['on_new']}; reconnect after close: median {r['reconnect_median']:.3f}s,"
                f" max {r['reconnect_max']:.3f}s; {'PASS' if ok else 'FAIL'}"
                + (f" {r['problems']}" if r["problems"] else ""))
            log("      steps: " + ", ".join(f"{s['title'][:28]} {float(s['seconds']):.2f}s"
                                          for s in r["steps"]))
        log("\n2. a 20 s stream and a slow POST in flight at the switch, under load:")
        for _ in range(args.runs):
            version = f"{n}.0.0"
            n += 1
            r = in_flight_run(stand, version)
            failed = sum(sum(k.values()) for k in r["failed"].values())
            ok = (r["exit"] == 0 and r["stream"].get("status") == 200
                  and r["stream"].get("events", 0) >= 20 and r["post"].get("status") == 200
                  and r["post"].get("complete") and failed == 0)
            fails += not ok
            log(f"   deploy {version}: exit {r['exit']}, wall {r['wall']:.2f}s; stream"
                f" {r['stream']}; slow POST {r['post']}; requests {r['requests']},"
                f" failed {r['failed'] or 0}; {'PASS' if ok else 'FAIL'}")
        if not args.no_baseline:
            set_switch(stand, drain_timeout=30, socket_grace=30)
            version = f"{n}.0.0"
            r = sockets_run(stand, version, args.sockets)
            log(f"\nbaseline (socket_grace = drain_timeout = 30: waiting as before):"
                f" wall {r['wall']:.2f}s = boot {r['boot']:.2f}s + {r['over_boot']:.2f}s;"
                f" ends {r['ends']}")
    log(f"\n{'all targets met' if not fails else f'{fails} run(s) missed a target'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
