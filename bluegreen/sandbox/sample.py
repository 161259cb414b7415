"""A small sample web app packaged as a release tarball (runner ``command``).

Used by the local demo, the rehearsal and the tests: ``bin/server`` answers ``/`` with
its version and slot, ``/health`` with a configurable status (or 503 on a host that has
``<root>/shared/unhealthy-<version>``; no answer at all with ``SAMPLE_HANG=1`` or
``=<version>`` in its environment), answers 500 to ``fail_share`` of its ``GET /``
(a release that passes its health gate and fails real requests), and POSTs with the
size of their body; it shuts down gracefully on SIGTERM.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

SERVER = r'''#!/usr/bin/env python3
"""bluegreen sample app"""
import json, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(HERE, "release.json")) as fh:
    RELEASE = json.load(fh)
VERSION = RELEASE["version"]
SLOT = os.environ.get("BG_SLOT", "?")
GREETING = os.environ.get("GREETING", "hello")
HANG = os.environ.get("SAMPLE_HANG", "")
# Fault injection for the verification window: this share of GET / answers 500, spread
# evenly (request n fails when floor(n * share) moves), while /health stays 200.
FAIL_SHARE = float(RELEASE.get("fail_share", 0))
_served = [0]
_served_lock = threading.Lock()


def failing():
    if not FAIL_SHARE:
        return False
    with _served_lock:
        n = _served[0] = _served[0] + 1
    return int(n * FAIL_SHARE) != int((n - 1) * FAIL_SHARE)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without these, keep-alive answers wait ~40 ms for Nagle's algorithm.
    disable_nagle_algorithm = True

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health" and HANG in ("1", VERSION):
            # Fault injection: SAMPLE_HANG=1 (or =<version>) accepts /health and never
            # answers, as a wedged app does.
            time.sleep(3600)
            return
        if self.path == "/health":
            status = RELEASE.get("health_status", 200)
            # Fault injection for rehearsals: <root>/shared/unhealthy-<version> on a host
            # makes this release unhealthy there only.
            if os.path.exists(os.path.join(HERE, "..", "..", "shared", "unhealthy-" + VERSION)):
                status = 503
            self._send(status, "ok\n" if status == 200 else "unhealthy\n")
        elif failing():
            self._send(500, f"{GREETING} {VERSION} slot={SLOT} failed on purpose\n")
        else:
            self._send(200, f"{GREETING} {VERSION} slot={SLOT}\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._send(200, f"{GREETING} {VERSION} slot={SLOT} got={len(body)}\n")

    def log_message(self, *args):
        pass


def main():
    time.sleep(RELEASE.get("boot_delay", 0))
    port = int(os.environ["PORT"])
    # A backlog of 5 (the default) makes connections wait ~1 s after nginx reloads.
    ThreadingHTTPServer.request_queue_size = 1024
    bind = os.environ.get("BG_BIND", "127.0.0.1")  # behind load balancers: 0.0.0.0
    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    print(f"sample {VERSION} listening on {bind}:{port} as {SLOT}", flush=True)
    # SIGTERM is noticed within one poll: a retired slot stops within ~20 ms
    server.serve_forever(poll_interval=0.02)
    server.server_close()
    print("stopped", flush=True)


if __name__ == "__main__":
    if RELEASE.get("crash"):
        print("crashing on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    main()
'''


def build_sample(
    out_dir: Path,
    version: str,
    *,
    app: str = "hello",
    health_status: int = 200,
    boot_delay: float = 0.0,
    crash: bool = False,
    fail_share: float = 0.0,
) -> Path:
    """Write ``<app>-<version>.tar.gz`` into ``out_dir`` and return its path."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{app}-{version}.tar.gz"
    release = {
        "version": version,
        "health_status": health_status,
        "boot_delay": boot_delay,
        "crash": crash,
        "fail_share": fail_share,
    }
    files = {
        "bin/server": (SERVER.encode(), 0o755),
        "release.json": (json.dumps(release).encode(), 0o644),
    }
    # Reproducible bytes (fixed gzip and member mtimes): the same build, the same sha256.
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("bin")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return path
