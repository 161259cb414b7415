"""Raw HTTP/1.1 over a socket, and the outcome of one request: a status or a kind of failure.

Raw sockets rather than an HTTP library, so a failure keeps its kind: refused, reset, a stale
keep-alive connection, a timeout, a wrong status or a wrong answer. The load client
(:mod:`bluegreen.loadclient`) counts requests by these outcomes.
"""

from __future__ import annotations

import contextlib
import select
import socket

# A request's outcome: an HTTP status (>= 100), BAD_ANSWER (a 2xx with the wrong body) or a
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
    """How a report names an outcome: ``HTTP 502``, ``reset``, ``stale keep-alive``..."""
    return ERROR_NAMES.get(code, f"HTTP {code}")


def ok(code: int) -> bool:
    """Did the request succeed (a 2xx with the right answer)?"""
    return 200 <= code < 300


class HttpFailure(Exception):
    """The answer ended early or was not HTTP; ``code`` is its outcome (EOF, PROTOCOL)."""

    def __init__(self, code: int) -> None:
        super().__init__(outcome_name(code))
        self.code = code


class Connection:
    """One raw HTTP/1.1 connection: enough protocol for nginx's answers, nothing more."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.received = 0  # bytes of the current answer so far
        self.headers: dict[bytes, bytes] = {}

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
        self.headers = headers
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
    """The outcome of a request that raised ``exc``; a reused connection closed before any
    byte came back is STALE."""
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
