"""One-shot HTTP probes: a GET whose status line and headers are read, its body ignored.

``bg status``, the warm-slot check, the check right after a switch and the switch's
confirmation through nginx each ask one question of one URL. They are the whole of
``bg status`` and most of ``bg switch``, where importing httpx (~70 ms) and building a
client would be most of the command's time. The health gate that waits for a booting
slot polls with httpx + tenacity (:mod:`bluegreen.health`).

The connection starts on the host itself (:meth:`bluegreen.host.Host.probe`): a socket
here, a direct-tcpip channel of the SSH connection there. Plain ``http://`` only; an
``https://`` URL goes through the host's httpx transport (:func:`via_httpx`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

_MAX_HEAD = 64 * 1024  # a status line and headers larger than this are not a probe answer


class ProbeError(Exception):
    """No HTTP answer: refused, timed out, reset, or not HTTP."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names lower-cased; a repeated header keeps its last value

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Stream(Protocol):
    """What a socket and a paramiko channel both are."""

    def sendall(self, data: bytes, /) -> object: ...

    def recv(self, size: int, /) -> bytes: ...

    def settimeout(self, value: float | None, /) -> object: ...

    def close(self) -> object: ...


Connect = Callable[[str, int, float], Stream]  # (address, port, timeout) -> stream


class Prober(Protocol):
    """What asks: a :class:`~bluegreen.host.Host`, or :class:`ViaHttpx`."""

    def http_probe(self, url: str, *, timeout: float,
                   headers: Mapping[str, str] | None = None) -> Answer: ...


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    path: str
    host_header: str


def target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain http:// URL: {url}")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    return Target(parts.hostname, port, path, host)


def http_get(connect: Connect, url: str, *, timeout: float,
             headers: Mapping[str, str] | None = None) -> Answer:
    """GET ``url`` over a stream ``connect`` opens; ``timeout`` bounds each step."""
    t = target(url)
    lines = [f"GET {t.path} HTTP/1.1", f"Host: {t.host_header}", "User-Agent: bluegreen",
             "Accept: */*", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() != "connection"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        stream = connect(t.address, t.port, timeout)
    except ProbeError:
        raise
    except (OSError, EOFError) as exc:
        raise ProbeError(f"cannot connect to {t.address}:{t.port}: {_why(exc)}") from exc
    try:
        stream.settimeout(timeout)
        stream.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = stream.recv(4096)
            if not chunk:
                if head:
                    break  # closed right after the headers: still an answer
                raise ProbeError(f"{t.address}:{t.port} closed the connection without answering")
            head += chunk
            if len(head) > _MAX_HEAD:
                raise ProbeError(f"{t.address}:{t.port}: answer headers over {_MAX_HEAD} bytes")
    except (OSError, EOFError) as exc:
        raise ProbeError(f"{t.address}:{t.port}: {_why(exc)}") from exc
    finally:
        with contextlib.suppress(OSError, EOFError):
            stream.close()
    return parse_head(head.partition(b"\r\n\r\n")[0], f"{t.address}:{t.port}")


def parse_head(head: bytes, where: str) -> Answer:
    status_line, *rest = head.decode("latin-1").split("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ProbeError(f"{where} did not answer HTTP: {status_line[:80]!r}")
    found: dict[str, str] = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return Answer(int(code), found)


def ask(url: str, *, connect: Connect, transport: Callable[[], httpx.BaseTransport],
        timeout: float, headers: Mapping[str, str] | None = None) -> Answer:
    """What a host's ``http_probe`` does: ``http://`` over ``connect``, ``https://``
    through the host's httpx ``transport`` (TLS is httpx's job)."""
    if url.startswith("https:"):
        return via_httpx(transport(), url, timeout=timeout, headers=headers)
    return http_get(connect, url, timeout=timeout, headers=headers)


def via_httpx(transport: httpx.BaseTransport, url: str, *, timeout: float,
              headers: Mapping[str, str] | None = None) -> Answer:
    """The same question through an httpx transport (https, and test doubles)."""
    import httpx

    try:
        with httpx.Client(transport=transport, timeout=timeout) as client:
            r = client.get(url, headers={"Connection": "close", **(headers or {})})
    except httpx.HTTPError as exc:
        raise ProbeError(f"{type(exc).__name__}: {exc}" if str(exc)
                         else type(exc).__name__) from exc
    return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()})


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class ViaHttpx:
    """A :class:`Prober` over an httpx transport (a mock one in tests)."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    def http_probe(self, url: str, *, timeout: float,
                   headers: Mapping[str, str] | None = None) -> Answer:
        return via_httpx(self.transport, url, timeout=timeout, headers=headers)
