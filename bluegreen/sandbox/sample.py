"""A small sample web app packaged as a release tarball (runner ``command``).

Used by the local demo, the rehearsal and the tests: ``bin/server`` answers ``/`` with
its version and slot, ``/health`` with a configurable status (or 503 on a host that has
``<root>/shared/unhealthy-<version>``; no answer at all with ``SAMPLE_HANG=1`` or
``=<version>`` in its environment), answers 500 to ``fail_share`` of its ``GET /``
(a release that passes its health gate and fails real requests), POSTs with the size of
their body, ``/ws`` as a WebSocket (a greeting naming version and slot, then an echo) and
``/stream?seconds=N`` as server-sent events. On SIGTERM it shuts down gracefully: no new
connections, sockets closed with 1001 (going away), requests in flight finished
(``ignore_term``: a release that ignores SIGTERM).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

SERVER = r'''#!/usr/bin/env python3
"""bluegreen sample app"""
import base64, hashlib, json, os, signal, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(HERE, "release.json")) as fh:
    RELEASE = json.load(fh)
VERSION = RELEASE["version"]
SLOT = os.environ.get("BG_SLOT", "?")
GREETING = os.environ.get("GREETING", "hello")
HANG = os.environ.get("SAMPLE_HANG", "")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
CONNS = set()  # open connections' handlers, for the graceful stop
LOCK = threading.Lock()
STOPPING = threading.Event()


def ws_frame(opcode, payload):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload
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
    busy = False  # answering a request (a graceful stop waits for it)
    ws = False
    ws_closed = False

    def setup(self):
        super().setup()
        self.wlock = threading.Lock()
        with LOCK:
            CONNS.add(self)

    def finish(self):
        with LOCK:
            CONNS.discard(self)
        super().finish()

    def handle_one_request(self):
        super().handle_one_request()
        self.busy = False
        if STOPPING.is_set():
            self.close_connection = True

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.busy = True
        if self.path == "/health" and HANG in ("1", VERSION):
            # Fault injection: SAMPLE_HANG=1 (or =<version>) accepts /health and never
            # answers, as a wedged app does (no request a graceful stop waits for).
            self.busy = False
            time.sleep(3600)
            return
        if self.path == "/health":
            status = RELEASE.get("health_status", 200)
            # Fault injection for rehearsals: <root>/shared/unhealthy-<version> on a host
            # makes this release unhealthy there only.
            if os.path.exists(os.path.join(HERE, "..", "..", "shared", "unhealthy-" + VERSION)):
                status = 503
            self._send(status, "ok\n" if status == 200 else "unhealthy\n")
        elif self.path.startswith("/ws"):
            self._websocket()
        elif self.path.startswith("/stream"):
            self._stream()
        elif failing():
            self._send(500, f"{GREETING} {VERSION} slot={SLOT} failed on purpose\n")
        else:
            self._send(200, f"{GREETING} {VERSION} slot={SLOT}\n")

    def do_POST(self):
        self.busy = True
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._send(200, f"{GREETING} {VERSION} slot={SLOT} got={len(body)}\n")

    def _stream(self):
        # /stream?seconds=N: server-sent events, one a second; a graceful stop finishes it
        query = dict(p.partition("=")[::2] for p in self.path.partition("?")[2].split("&") if p)
        seconds = float(query.get("seconds") or 5)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        end, i = time.monotonic() + seconds, 0
        while True:
            chunk = f"data: {VERSION} slot={SLOT} {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            i += 1
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(1.0, left))
        self.wfile.write(b"0\r\n\r\n")

    def _websocket(self):
        # RFC 6455, as much as a sample needs: a greeting naming the release, then an echo
        key = self.headers.get("Sec-WebSocket-Key", "")
        if "websocket" not in self.headers.get("Upgrade", "").lower() or not key:
            self._send(400, "websocket upgrade expected\n")
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.ws, self.busy, self.close_connection = True, False, True
        self.ws_send(1, f"{GREETING} {VERSION} slot={SLOT}".encode())
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if opcode == 8:  # close: answer it (unless ours came first), then end
                self.ws_send(8, data[:2])
                return
            if opcode == 9:
                self.ws_send(10, data)
            elif opcode == 1:
                self.ws_send(1, f"{VERSION} slot={SLOT}: ".encode() + data)

    def ws_send(self, opcode, payload):
        with self.wlock:
            if self.ws_closed:
                return
            self.ws_closed = opcode == 8
            try:
                self.wfile.write(ws_frame(opcode, payload))
                self.wfile.flush()
            except OSError:
                pass

    def log_message(self, *args):
        pass


def drain(server):
    """No new connections; sockets closed with 1001 (going away) and idle keep-alive
    connections closed; requests in flight (a stream, a POST) finish."""
    server.socket.close()
    with LOCK:
        conns = list(CONNS)
    for h in conns:
        if h.ws:
            h.ws_send(8, struct.pack("!H", 1001) + b"going away")
    deadline = time.monotonic() + 2  # for the clients' close frames back
    while True:
        with LOCK:
            left = [h for h in CONNS if h.ws or not h.busy]
        if not left or time.monotonic() > deadline:
            break
        for h in left:
            if not h.ws:  # idle keep-alive: its read ends, an answer being written does not
                try:
                    h.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        time.sleep(0.02)
    for h in left:
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    while True:  # requests in flight; [app] stop_timeout bounds this from outside
        with LOCK:
            if not any(h.busy for h in CONNS):
                return
        time.sleep(0.02)


def main():
    time.sleep(RELEASE.get("boot_delay", 0))
    port = int(os.environ["PORT"])
    # A backlog of 5 (the default) makes connections wait ~1 s after nginx reloads.
    ThreadingHTTPServer.request_queue_size = 1024
    bind = os.environ.get("BG_BIND", "127.0.0.1")  # behind load balancers: 0.0.0.0
    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    server.timeout = 0.02  # handle_request's poll: a retired slot stops within ~20 ms
    # The handler only notes the signal. A second SIGTERM can arrive while the first one's
    # handler runs (bg's stop once signalled the group and the pid back to back), and
    # Python then runs the handler again inside the first: a handler that takes a lock
    # (Event.set, print, starting a thread) deadlocks there, the app never closes its
    # sockets, and stop_timeout's SIGKILL ends them without a close frame.
    terms = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
    print(f"sample {VERSION} listening on {bind}:{port} as {SLOT}", flush=True)
    while True:
        server.handle_request()
        if not terms:
            continue
        if not RELEASE.get("ignore_term"):
            break
        del terms[:]  # fault injection: an app that ignores SIGTERM
        print("ignoring SIGTERM", flush=True)
    STOPPING.set()
    drain(server)
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
    ignore_term: bool = False,
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
        "ignore_term": ignore_term,
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
