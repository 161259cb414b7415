"""The WebSocket client kind of the load (``bg rehearse``, bench/load_sockets.py, tests):
sockets held through nginx for as long as the load runs, as LiveView clients hold theirs.

Each client connects to ``/ws``, reads the greeting (the sample app names its version and
slot), and holds the socket. When the socket ends, how is counted (a close frame and its
code, a reset, an EOF without a close frame) and the client reconnects at once, as
Phoenix's JavaScript client does; each reconnect records how long after the close it was
up and which release answered, so a caller can check it reached the live one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bluegreen.wsclient import END_EOF, END_RESET, OP_CLOSE, HandshakeError, WebSocket

RECONNECT_TRIES = 50  # 20 ms apart: a reconnect that needs longer is a failure


@dataclass(frozen=True)
class Reconnect:
    closed_at: float  # time.monotonic() of the close
    delay: float  # seconds from the close to the new socket's greeting
    greeting: str  # "" when every try failed

    @property
    def version(self) -> str:
        """The release in a sample app's greeting ("hello 2.0.0 slot=green")."""
        words = self.greeting.split()
        return words[1] if len(words) >= 2 else ""


def end_name(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return END_EOF
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return END_RESET
    return type(exc).__name__


@dataclass
class SocketClients:
    """``count`` sockets spread over ``endpoints``, held until :meth:`stop`."""

    endpoints: Sequence[tuple[str, int]]
    count: int = 4
    path: str = "/ws"
    timeout: float = 5.0
    ends: Counter[str] = field(default_factory=Counter)  # "close 1001", "reset", ...
    reconnects: list[Reconnect] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # connects that failed, by kind
    greetings: list[str] = field(default_factory=list)  # of the first connects
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _open: set[WebSocket] = field(default_factory=set)

    def start(self) -> None:
        """Connect every socket (raises when one cannot), then hold them in threads."""
        for i in range(self.count):
            host, port = self.endpoints[i % len(self.endpoints)]
            ws, greeting = self._connect(host, port)
            self.greetings.append(greeting)
            t = threading.Thread(target=self._hold, args=(ws, host, port), daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def _connect(self, host: str, port: int) -> tuple[WebSocket, str]:
        ws = WebSocket.connect(host, port, self.path, timeout=self.timeout)
        try:
            frame = ws.recv()
        except BaseException:
            ws.sock.close()
            raise
        with self._lock:
            self._open.add(ws)
        return ws, frame.text

    def _hold(self, ws: WebSocket, host: str, port: int) -> None:
        ws.sock.settimeout(0.2)  # to notice stop()
        while not self._stop.is_set():
            try:
                frame = ws.recv()
            except TimeoutError:
                continue
            except (OSError, EOFError) as exc:
                end = end_name(exc)
            else:
                if frame.opcode != OP_CLOSE:
                    continue
                end = f"close {frame.close_code}"
                ws.close(frame.close_code or 1000)
            if self._stop.is_set():
                break
            closed = time.monotonic()
            with self._lock:
                self._open.discard(ws)
                self.ends[end] += 1
            ws.sock.close()
            again = self._reconnect(host, port, closed)
            if again is None:
                return
            ws = again
            ws.sock.settimeout(0.2)

    def _reconnect(self, host: str, port: int, closed: float) -> WebSocket | None:
        for _ in range(RECONNECT_TRIES):
            try:
                ws, greeting = self._connect(host, port)
            except (OSError, EOFError, HandshakeError) as exc:
                with self._lock:
                    self.failures[end_name(exc) if not isinstance(exc, HandshakeError)
                                  else str(exc)] += 1
                time.sleep(0.02)
                continue
            with self._lock:
                self.reconnects.append(Reconnect(closed, time.monotonic() - closed, greeting))
            return ws
        with self._lock:
            self.reconnects.append(Reconnect(closed, time.monotonic() - closed, ""))
        return None

    def stop(self) -> None:
        """Close every socket normally (1000) and join the threads."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 1)
        with self._lock:
            for ws in self._open:
                with contextlib.suppress(OSError):
                    ws.close()
            self._open.clear()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def problems(self, allowed: Callable[[float], set[str]]) -> list[str]:
        """What went wrong: ends without a close frame, failed connects, reconnects that
        failed or reached a release ``allowed(closed_at)`` does not list."""
        out = [f"{n} socket(s) ended with {end}" for end, n in sorted(self.ends.items())
               if not end.startswith("close ")]
        out += [f"{n} WebSocket connect(s) failed: {kind}"
                for kind, n in sorted(self.failures.items())]
        for r in self.reconnects:
            if not r.greeting:
                out.append(f"a socket did not reconnect within {r.delay:.1f}s")
            elif r.version not in allowed(r.closed_at):
                out.append(f"a socket reconnected to {r.version}, not to"
                           f" {'/'.join(sorted(allowed(r.closed_at)))}")
        return out

    def __enter__(self) -> SocketClients:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def versions_served(serving: str) -> set[str]:
    """The releases in a rehearsal's "serving" text ("hello 2.0.0 slot=green | ...")."""
    return {words[1] for part in serving.split(" | ") if len(words := part.split()) >= 2}


def allowed_by_steps(steps: Sequence[tuple[float, float, str]]
                     ) -> Callable[[float], set[str]]:
    """For :meth:`SocketClients.problems`: ``steps`` are (start, end, serving after) in
    order; a socket closed during a step may reach what served before it or after it."""
    def allowed(t: float) -> set[str]:
        prev: set[str] = set()
        for start, end, serving in steps:
            after = versions_served(serving)
            if t < start:
                return prev or after
            if t < end:
                return prev | after
            prev = after
        return prev

    return allowed
