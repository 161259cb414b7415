"""HTTP through an SSH connection: an httpx transport whose TCP connections are
direct-tcpip channels opened by the remote sshd, so ``http://127.0.0.1:4001/`` means port
4001 on the remote host and no slot port has to be reachable from outside."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx
import paramiko

# Where they were: importers of these names from here keep working.
from bluegreen.ssh_exec import ChannelOpenError, describe_error, open_direct_tcpip

__all__ = ["ChannelBackend", "ChannelOpenError", "SshHttpTransport", "describe_error",
           "open_direct_tcpip"]


class _ChannelStream(httpcore.NetworkStream):
    def __init__(self, channel: paramiko.Channel, address: tuple[str, int]) -> None:
        self._channel = channel
        self._address = address

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._channel.settimeout(timeout)
            return self._channel.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "timed out") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._channel.settimeout(timeout)
            self._channel.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._channel.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.close()
        raise httpcore.UnsupportedProtocol(
            "https:// through an SSH channel is not supported; probe the port with http://"
        )

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # httpcore asks before reusing a kept-alive connection
            ch = self._channel
            return ch.recv_ready() or ch.closed or ch.eof_received
        if info == "server_addr":
            return self._address
        return None


class ChannelBackend(httpcore.NetworkBackend):
    """Opens each TCP connection as a direct-tcpip channel of an SSH transport."""

    def __init__(self, name: str, open_transport: Callable[[], paramiko.Transport]) -> None:
        self._name = name
        self._open_transport = open_transport

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            channel = open_direct_tcpip(self._open_transport(), self._name, host, port, timeout)
        except ChannelOpenError as exc:
            error = httpcore.ConnectTimeout if exc.timed_out else httpcore.ConnectError
            raise error(str(exc)) from exc
        return _ChannelStream(channel, (host, port))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets through SSH are not supported")


# Most specific first: the first match wins.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class SshHttpTransport(httpx.BaseTransport):
    """httpx transport whose TCP connections are SSH channels opened from the host."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._pool = httpcore.ConnectionPool(
            network_backend=backend,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
