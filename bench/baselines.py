"""The two baselines bg is measured against, under the same load, on the same stand.

1. **bare reload**: ``nginx -s reload`` of the unchanged upstream, as many times as bg
   reloaded nginx (once per successful operation): nginx's own floor.
2. **stop/start**, the traditional deploy: one release serves on one fixed port behind the
   same nginx; SIGTERM it, wait until it is gone, start the next release on the same port,
   poll its /health directly until it answers. Its spawn-to-first-200 time is the app's
   boot time under load, subtracted from ``bg deploy``'s wall time in the report.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

from loadgen import HOST, wait_http
from stand import APP, Log, Stand
from windows import Timeline, pace


def bare_reloads(stand: Stand, timeline: Timeline, count: int, *, spacing: float,
                 settle: float, log: Log) -> None:
    """``count`` reloads of nginx with nothing changed, one window of ``spacing`` s each."""
    argv = stand.nginx.argv("-s", "reload")
    for i in range(count):
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=30)
        ended = time.monotonic()
        timeline.mark("nginx -s reload", "reload", "reload", started, ended, proc.returncode)
        if (i + 1) % 10 == 0 or i + 1 == count:
            log(f"  {i + 1:3}/{count} nginx -s reload")
        pace(started, spacing, settle)


# The site logs in bg's format (`access_log ... hello_bg`): the upstream file defines it.
_LOG_FIELDS = "\\t".join(("$msec", "$status", "$upstream_addr", "$upstream_status",
                         "$remote_addr", "$request"))


def point_nginx_at(stand: Stand, port: int, label: str) -> None:
    """The traditional setup: nginx's upstream is one fixed port (bg is out of the way)."""
    Path(stand.nginx.upstream_file).write_text(textwrap.dedent(f"""\
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
        log_format {APP}_bg '{_LOG_FIELDS}';
        """))
    subprocess.run(stand.nginx.argv("-q", "-t"), check=True, capture_output=True)
    subprocess.run(stand.nginx.argv("-s", "reload"), check=True, capture_output=True)


def stop_starts(stand: Stand, timeline: Timeline, count: int, *, spacing: float,
                settle: float, log: Log) -> list[float]:
    """Stop the old release, start the new one on the same port, wait until it answers.

    Returns the boot times under load. The last release started keeps serving (through
    the cool-down) until ``stand.cleanup``.
    """
    app, port = stand.app, stand.single
    trad = stand.workdir / "traditional"
    trad.mkdir(exist_ok=True)
    log_file = stand.workdir / "traditional.log"
    versions = [stand.extract(v, trad) for v in ("1.0.0", "2.0.0")]
    start = time.monotonic()
    timeline.mark("start single release, point nginx at it", "idle", "idle", start, start)
    proc = app.spawn(versions[0], port, log_file)
    current = versions[0]
    stand.single_release = (proc, current)
    if wait_http(port, app.health_deadline) is None:
        raise SystemExit("the stop/start baseline's first release never answered")
    point_nginx_at(stand, port, "single")
    time.sleep(max(1.0, spacing))
    boots: list[float] = []
    for i in range(count):
        nxt = versions[(i + 1) % 2]
        started = time.monotonic()
        app.stop(proc, current)
        stopped = time.monotonic()
        proc = app.spawn(nxt, port, log_file)
        current = nxt
        stand.single_release = (proc, current)
        up = wait_http(port, app.health_deadline)
        ended = time.monotonic()
        boot = (up - stopped) if up is not None else None
        if boot is not None:
            boots.append(boot)
        timeline.mark(f"stop/start {nxt.name}", "stop/start", "traditional", started, ended,
                      0 if up is not None else 1, stop_s=round(stopped - started, 3),
                      boot_s=round(boot, 3) if boot is not None else None)
        log(f"  {i + 1:3}/{count} stop/start -> {nxt.name}  {ended - started:6.2f}s"
            f" (stop {stopped - started:.2f}s, boot {boot if boot else float('nan'):.2f}s)")
        pace(started, spacing, settle)
    return boots
