"""The :class:`~bluegreen.host.Host` protocol over SSH, with Fabric.

:class:`SshHost` wraps one ``fabric.Connection`` (so the user's ``~/.ssh/config``, keys and
agent work as they do for Fabric) and hardens the places where Fabric's defaults do not
suit a deploy tool:

* Host keys are verified against one known_hosts file (:mod:`bluegreen.hostkeys`), not
  trusted on first sight as Fabric does.
* HTTP to a port on the host goes through SSH ``direct-tcpip`` channels opened by an
  httpcore network backend: no local listening port, and ``127.0.0.1`` means the host's
  own loopback.
* Commands run on session channels of their own (:meth:`SshHost.run`), not through
  invoke's runner, which polls every 10 ms: a round trip costs what the network does.

Low-level failures (socket, paramiko) become :class:`HostError` at this boundary;
inside the HTTP transport they become the httpx exceptions health polling expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
import shlex
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import paramiko
from fabric import Connection

from bluegreen.errors import ConfigError, HostError
from bluegreen.host import CommandResult
from bluegreen.hostkeys import (
    HostKeyPolicy,
    UnknownHostKey,
    changed_key_error,
    fingerprint,
    install_policy,
    unknown_key_error,
)
from bluegreen.hostspec import SshTarget, parse_host_spec
from bluegreen.probe import Answer, ProbeError, Stream, ask
from bluegreen.ssh_exec import (
    ChannelOpenError,
    TimedOut,
    describe_error,
    drain,
    feed,
    open_direct_tcpip,
    transport_factory,
    tune_socket,
)
from bluegreen.sshshared import fabric_config, identity_key

if TYPE_CHECKING:  # imported where used: probes (status, switch) go without httpx
    import httpx

# Importers of the names that moved to hostspec/hostkeys keep working.
__all__ = ["HostKeyPolicy", "SshHost", "SshTarget", "fingerprint", "parse_host_spec"]

# paramiko logs refused forwarding channels (a slot not listening yet, polled by the health
# gate) as warnings; bg reports what matters itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

_CHUNK = 32768
_KEEPALIVE_SECONDS = 15


class SshHost:
    """A machine reached over SSH; see :class:`bluegreen.host.Host` for the contract."""

    def __init__(
        self,
        spec: str,
        *,
        identity_file: str | None = None,
        known_hosts: str | None = None,
        host_key_policy: HostKeyPolicy = "strict",
        connect_timeout: float = 10,
    ) -> None:
        if host_key_policy not in ("strict", "accept-new"):
            raise ConfigError(
                f"host_key_policy must be 'strict' or 'accept-new', not {host_key_policy!r}"
            )
        self.target = parse_host_spec(spec)
        self._name = spec
        self._host_key_policy = host_key_policy
        self._count = 0
        self._count_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None
        connect_kwargs: dict[str, Any] = {
            "timeout": connect_timeout,
            "banner_timeout": connect_timeout,
        }
        if identity_file is not None:
            path = os.path.expanduser(identity_file)
            key = identity_key(path)  # read once for the fleet, not at every connect
            if key is not None:
                connect_kwargs["pkey"] = key  # tried first, where key_filename was
            else:
                connect_kwargs["key_filename"] = [path]
        connect_kwargs["transport_factory"] = transport_factory
        self._conn: Any = Connection(
            self.target.hostname,
            user=self.target.user,
            port=self.target.port,
            config=fabric_config(),  # shared: a Connection only reads it
            connect_kwargs=connect_kwargs,
        )
        # Fabric casts its own connect timeout to int; ours travels in connect_kwargs instead.
        self._conn.connect_timeout = None
        configured = self._conn.ssh_config.get("userknownhostsfile", "").split()
        default = configured[0] if configured else "~/.ssh/known_hosts"
        self.known_hosts = Path(os.path.expanduser(known_hosts or default))
        self._hashed = self._conn.ssh_config.get("hashknownhosts", "no").lower() == "yes"

    # -- Host protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def commands_run(self) -> int:
        return self._count

    def run(self, script: str, *, timeout: float | None = None,
            stdin: Path | None = None) -> CommandResult:
        self._tick()
        if stdin is None:
            return self._exec(script, None, timeout)
        try:
            source = stdin.open("rb")
        except OSError as exc:
            raise HostError(f"{self.name}: cannot read {stdin}: {exc.strerror}") from exc
        with source:
            return self._exec(script, source, timeout)

    def _exec(self, script: str, source: IO[bytes] | None,
              timeout: float | None) -> CommandResult:
        """Run ``script`` with ``/bin/sh -c`` on a session channel of its own, ``source``
        (a local file) on its stdin, else /dev/null. invoke's runner polls every 10 ms and
        starts two reader threads per command, and its ``in_stream`` decodes text a byte at
        a time, unfit for a release. The login shell only sees one quoted word, so its
        flavour (bash, zsh, fish...) is moot."""
        transport = self._ensure_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        command = f"/bin/sh -c {shlex.quote(script)}" + ("" if source else " < /dev/null")
        try:
            chan = transport.open_session(timeout=timeout)
            chan.exec_command(command)
            feeder = None
            if source is None:
                chan.shutdown_write()
            else:
                feeder = threading.Thread(target=feed, args=(chan, source),
                                          name=f"bg-feed-{self.name}", daemon=True)
                feeder.start()
            try:
                out, err = drain(chan, deadline)
            except TimedOut:
                chan.close()
                raise HostError(f"{self.name}: command timed out after {timeout}s",
                                detail=script) from None
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
            if feeder is not None:
                feeder.join(timeout=5)
            chan.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostError(f"{self.name}: command failed over SSH: {exc}",
                            detail=script) from exc
        if code == -1:
            raise HostError(f"{self.name}: SSH connection lost while running a command",
                            detail=script)
        return CommandResult(command=script, exit_code=code,
                             stdout=out.decode("utf-8", "replace"),
                             stderr=err.decode("utf-8", "replace"))

    def put(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        self._tick()
        try:
            with Path(local).open("rb") as src:
                self._upload(src, remote, mode)
        except OSError as exc:  # opening the local file; remote errors are HostErrors already
            raise HostError(f"{self.name}: cannot read {local}: {exc.strerror}") from exc

    def read(self, path: str) -> bytes | None:
        self._tick()
        with self._sftp_session(f"read {path}") as sftp:
            try:
                with sftp.open(path, "rb") as fh:
                    fh.prefetch()
                    return fh.read()
            except FileNotFoundError:
                return None

    def write_atomic(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        self._tick()
        self._upload(_BytesReader(data), path, mode)

    def http_transport(self) -> httpx.BaseTransport:
        from bluegreen.ssh_http import ChannelBackend, SshHttpTransport

        return SshHttpTransport(ChannelBackend(self.name, self._ensure_open))

    def http_probe(self, url: str, *, timeout: float,
              headers: Mapping[str, str] | None = None) -> Answer:
        return ask(url, connect=self._channel, transport=self.http_transport,
                   timeout=timeout, headers=headers)

    def _channel(self, address: str, port: int, timeout: float) -> Stream:
        """A direct-tcpip channel: a TCP connection the host's sshd opens."""
        try:
            channel: Stream = open_direct_tcpip(self._ensure_open(), self.name, address, port,
                                                timeout)
        except ChannelOpenError as exc:
            raise ProbeError(str(exc)) from exc
        return channel

    def close(self) -> None:
        with self._open_lock, self._sftp_lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):
                    self._sftp.close()
                self._sftp = None
            self._conn.close()

    # -- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect now (otherwise the first operation does), raising HostError on failure."""
        self._ensure_open()

    def _tick(self) -> None:
        with self._count_lock:
            self._count += 1

    def _ensure_open(self) -> paramiko.Transport:
        with self._open_lock:
            if self._conn.is_connected:
                transport: paramiko.Transport = self._conn.transport
                return transport
            self._sftp = None  # belonged to a connection that is gone
            install_policy(
                self._conn, self.name, self.known_hosts, self._host_key_policy,
                hashed=self._hashed,
            )
            try:
                self._conn.open()
            except UnknownHostKey as exc:
                self._conn.client.close()
                raise unknown_key_error(self.name, self.known_hosts, exc) from exc
            except paramiko.BadHostKeyException as exc:
                self._conn.client.close()
                raise changed_key_error(self.name, self.known_hosts, self._endpoint(), exc) from exc
            except paramiko.AuthenticationException as exc:
                self._conn.client.close()
                raise HostError(
                    f"{self.name}: SSH authentication failed as {self._conn.user}: {exc}",
                    hint="check the user, identity_file, ssh-agent and the host's authorized_keys",
                ) from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._conn.client.close()
                why = describe_error(exc)
                raise HostError(f"{self.name}: cannot connect over SSH: {why}") from exc
            transport = self._conn.transport
            transport.set_keepalive(_KEEPALIVE_SECONDS)
            tune_socket(transport)
            return transport

    def _endpoint(self) -> tuple[str, int]:
        return str(self._conn.host), int(self._conn.port)

    # -- SFTP ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sftp_session(self, what: str) -> Iterator[paramiko.SFTPClient]:
        self._ensure_open()
        with self._sftp_lock:
            try:
                if self._sftp is None:
                    self._sftp = self._conn.client.open_sftp()
                yield self._sftp
            except OSError as exc:
                raise HostError(f"{self.name}: cannot {what}: {describe_error(exc)}") from exc
            except (paramiko.SSHException, EOFError) as exc:
                raise HostError(f"{self.name}: cannot {what}: SFTP failed: {exc}") from exc

    def _upload(self, src: IO[bytes] | _BytesReader, path: str, mode: int) -> None:
        directory, base = posixpath.split(path)
        tmp = posixpath.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        with self._sftp_session(f"write {path}") as sftp:
            try:
                try:
                    with sftp.open(tmp, "wx") as dst:
                        dst.chmod(mode)  # before any byte lands: secrets never world-readable
                        dst.set_pipelined(True)
                        while chunk := src.read(_CHUNK):
                            dst.write(chunk)
                    sftp.posix_rename(tmp, path)
                except BaseException:
                    with contextlib.suppress(Exception):
                        sftp.remove(tmp)
                    raise
            except FileNotFoundError as exc:
                raise HostError(f"{self.name}: cannot write {path}: {describe_error(exc)}") from exc


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int) -> bytes:
        chunk = self._view[self._pos : self._pos + size]
        self._pos += len(chunk)
        return bytes(chunk)
