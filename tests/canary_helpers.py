"""Clients for the canary tests: which release answers, per request and per client address."""

from __future__ import annotations

import collections
import socket


def version_from(address: str, port: int, *, source: str | None = None) -> str:
    """One GET / on a new connection (from ``source``, a 127.0.0.0/8 address): the release
    that answered ("HTTP <status>" when it was not a 200)."""
    with socket.create_connection((address, port), timeout=5,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    status = int(head.split()[1])
    return body.split()[1] if status == 200 else f"HTTP {status}"


def shares(address: str, port: int, requests: int) -> collections.Counter[str]:
    return collections.Counter(version_from(address, port) for _ in range(requests))


def per_client(address: str, port: int, clients: int, each: int) -> dict[str, set[str]]:
    """client address (127.0.1.N) -> the releases that answered its ``each`` requests."""
    seen: dict[str, set[str]] = {}
    for n in range(1, clients + 1):
        source = f"127.0.1.{n}"
        seen[source] = {version_from(address, port, source=source) for _ in range(each)}
    return seen
