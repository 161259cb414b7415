"""A minimal RFC 6455 WebSocket client (stdlib only), for the load client, the rehearsal
and the tests: the handshake is checked (101 and ``Sec-WebSocket-Accept``), frames are
read, and how a socket ended is told apart: a close frame (with its code), a reset, or an
EOF without a close frame.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 1, 8, 9, 10
END_RESET = "reset"
END_EOF = "eof without close"


class HandshakeError(Exception):
    """The server did not upgrade (its status line says why)."""


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class WebSocket:
    """One client socket: :meth:`connect`, then :meth:`recv` frames until a close."""

    def __init__(self, sock: socket.socket, headers: dict[str, str]) -> None:
        self.sock = sock
        self.headers = headers  # the 101 response's, lower-cased names
        self._buf = b""

    @classmethod
    def connect(cls, host: str, port: int, path: str = "/ws", *,
                timeout: float = 5.0) -> WebSocket:
        sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        try:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            ws = cls(sock, {})
            head = ws._read_until(b"\r\n\r\n").decode(errors="replace")
        except BaseException:
            sock.close()
            raise
        status, *rest = head.split("\r\n")
        ws.headers = {k.strip().lower(): v.strip()
                      for k, _, v in (line.partition(":") for line in rest if line)}
        if status.split(" ")[1:2] != ["101"] or ws.headers.get(
                "sec-websocket-accept") != accept_key(key):
            sock.close()
            raise HandshakeError(f"no upgrade: {status!r}")
        return ws

    def _read_until(self, mark: bytes) -> bytes:
        while mark not in self._buf:
            self._fill()
        head, _, self._buf = self._buf.partition(mark)
        return head

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(END_EOF)
        self._buf += data

    def _frame(self) -> Frame | None:
        """A whole frame from the buffer (consumed), or None while it is incomplete: a
        timeout between two reads loses nothing."""
        buf = self._buf
        if len(buf) < 2:
            return None
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        self._buf = buf[at + n:]
        return Frame(buf[0] & 0x0F, buf[at:at + n])

    def recv(self) -> Frame:
        """The next frame (pings are answered here). Raises EOFError on an EOF without a
        close frame, ConnectionResetError on a reset, TimeoutError on silence."""
        while True:
            frame = self._frame()
            if frame is None:
                self._fill()
                continue
            if frame.opcode == OP_PING:
                self.send(OP_PONG, frame.payload)
                continue
            return frame

    def send(self, opcode: int, payload: bytes) -> None:
        """A masked frame (clients must mask)."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError):
            self.send(OP_CLOSE, struct.pack("!H", code))
        self.sock.close()
