"""The :class:`~bluegreen.host.Host` protocol over SSH, with Fabric.

:class:`SshHost` wraps one ``fabric.Connection`` (so the user's ``~/.ssh/config``, keys and
agent work as they do for Fabric) and hardens the two places where Fabric's defaults do
not suit a deploy tool:

* Host keys are verified against one known_hosts file. Fabric trusts any unknown key
  (``AutoAddPolicy``); here an unknown key is refused with a :class:`HostKeyError` that
  says how to trust it, unless ``host_key_policy="accept-new"``, which records it the way
  OpenSSH's ``StrictHostKeyChecking accept-new`` does. A *changed* key is always refused.
* HTTP to a port on the host goes through SSH ``direct-tcpip`` channels opened by an
  httpcore network backend: no local listening port, and ``127.0.0.1`` means the host's
  own loopback.

Low-level failures (socket, paramiko, invoke) become :class:`HostError` at this boundary;
inside the HTTP transport they become the httpx exceptions health polling expects.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import posixpath
import re
import secrets
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import httpx
import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, ThreadException

from bluegreen.errors import ConfigError, HostError, HostKeyError
from bluegreen.host import CommandResult
from bluegreen.ssh_http import ChannelBackend, SshHttpTransport, describe_error

log = logging.getLogger(__name__)
# paramiko logs refused forwarding channels (a slot not listening yet, polled by the health
# gate) as warnings; bg reports what matters itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

HostKeyPolicy = Literal["strict", "accept-new"]

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_CHUNK = 32768
_KEEPALIVE_SECONDS = 15
_append_lock = threading.Lock()  # several hosts may accept new keys into one file at once


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    hostname: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname and self.port else self.hostname
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"


def parse_host_spec(spec: str) -> SshTarget:
    """``[user@]host[:port]``, with IPv6 literals as ``[::1]`` or ``[::1]:22`` (or bare ``::1``)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"invalid host {spec!r}: {why}",
            hint="write hosts as host, user@host, host:port or user@[ipv6]:port",
        )

    if not spec or spec != spec.strip() or any(c.isspace() for c in spec):
        raise bad("empty or contains whitespace")
    user: str | None = None
    rest = spec
    if "@" in spec:
        user, rest = spec.rsplit("@", 1)
        if not _USER_RE.fullmatch(user):
            raise bad(f"{user!r} is not a valid user name")
    port_text: str | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise bad("missing ']' after an IPv6 address")
        hostname, after = rest[1:close], rest[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise bad(f"unexpected {after!r} after ']'")
            port_text = after[1:]
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise bad(f"{hostname!r} is not an IPv6 address") from None
    elif rest.count(":") > 1:  # a bare IPv6 literal cannot carry a port
        hostname = rest
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise bad("use [address]:port for IPv6 addresses with a port") from None
    else:
        hostname, _, port_text = rest.partition(":")
        if not _HOSTNAME_RE.fullmatch(hostname):
            raise bad(f"{hostname!r} is not a valid host name")
        if not _:
            port_text = None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshTarget(user=user, hostname=hostname, port=port)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, entry: str, key: paramiko.PKey) -> None:
        super().__init__(f"{entry} is not in known_hosts")
        self.entry = entry
        self.key = key


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust a host seen for the first time and record it (OpenSSH ``accept-new``)."""

    def __init__(self, known_hosts: Path, *, hashed: bool) -> None:
        self.known_hosts = known_hosts
        self.hashed = hashed

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        entry = paramiko.HostKeys.hash_host(hostname) if self.hashed else hostname
        line = f"{entry} {key.get_name()} {key.get_base64()}\n"
        path = self.known_hosts
        with _append_lock:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line
                os.write(fd, line.encode("ascii"))
            finally:
                os.close(fd)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "trusted new host key for %s (%s %s), recorded in %s",
            hostname, key.get_name(), fingerprint(key), path,
        )


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
            connect_kwargs["key_filename"] = [os.path.expanduser(identity_file)]
        self._conn: Any = Connection(
            self.target.hostname,
            user=self.target.user,
            port=self.target.port,
            config=Config(),
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

    def run(self, script: str, *, timeout: float | None = None) -> CommandResult:
        self._tick()
        self._ensure_open()
        # The login shell only sees one quoted word, so its flavour (bash, zsh, fish...) is moot.
        command = f"/bin/sh -c {shlex.quote(script)} < /dev/null"
        started = time.monotonic()
        try:
            result = self._conn.run(
                command, hide=True, warn=True, pty=False, echo=False, in_stream=False,
                encoding="utf-8", timeout=timeout, watchers=[],
            )
        except CommandTimedOut as exc:
            message = f"{self.name}: command timed out after {timeout}s"
            raise HostError(message, detail=script) from exc
        except (ThreadException, paramiko.SSHException, EOFError, OSError) as exc:
            message = f"{self.name}: command failed over SSH: {exc}"
            raise HostError(message, detail=script) from exc
        if result.exited == -1 and timeout is not None and time.monotonic() - started >= timeout:
            # invoke's own check races with its timer thread and can miss the timeout
            message = f"{self.name}: command timed out after {timeout}s"
            raise HostError(message, detail=script)
        if result.exited == -1 and not self._conn.is_connected:
            message = f"{self.name}: SSH connection lost while running a command"
            raise HostError(message, detail=script)
        return CommandResult(
            command=script, exit_code=result.exited, stdout=result.stdout, stderr=result.stderr
        )

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
        return SshHttpTransport(ChannelBackend(self.name, self._ensure_open))

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

    def _verify_host_keys(self) -> None:
        """Replace Fabric's trust-anything policy, on the host and on every ProxyJump hop.

        known_hosts is read at each connect, so keys trusted meanwhile (ssh-keyscan, another
        host's accept-new) count. Only this file: never keys from anywhere else.
        """
        if self._host_key_policy == "accept-new":
            policy: paramiko.MissingHostKeyPolicy = _AcceptNew(
                self.known_hosts, hashed=self._hashed
            )
        else:
            policy = _RefuseUnknown()
        hop: Any = self._conn
        while isinstance(hop, Connection):
            client: paramiko.SSHClient = hop.client
            keys = client.get_host_keys()
            keys.clear()
            try:
                if self.known_hosts.is_file():
                    keys.load(str(self.known_hosts))
            except OSError as exc:
                raise HostError(
                    f"{self.name}: cannot read {self.known_hosts}: {exc.strerror}"
                ) from exc
            client.set_missing_host_key_policy(policy)
            hop = hop.gateway

    def _ensure_open(self) -> paramiko.Transport:
        with self._open_lock:
            if self._conn.is_connected:
                transport: paramiko.Transport = self._conn.transport
                return transport
            self._sftp = None  # belonged to a connection that is gone
            self._verify_host_keys()
            try:
                self._conn.open()
            except _UnknownHostKey as exc:
                self._conn.client.close()
                raise self._unknown_key_error(exc) from exc
            except paramiko.BadHostKeyException as exc:
                self._conn.client.close()
                raise self._changed_key_error(exc) from exc
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
            return transport

    def _endpoint(self) -> tuple[str, int]:
        return str(self._conn.host), int(self._conn.port)

    def _unknown_key_error(self, exc: _UnknownHostKey) -> HostKeyError:
        # exc.entry names the hop that offered the key: "host", or "[host]:port"
        host, port = exc.entry, 22
        if exc.entry.startswith("["):
            host, _, port_text = exc.entry[1:].partition("]:")
            port = int(port_text)
        known = shlex.quote(str(self.known_hosts))
        return HostKeyError(
            f"{self.name}: unknown SSH host key {exc.key.get_name()} {fingerprint(exc.key)} "
            f"for {exc.entry}; refusing to connect",
            detail=f"{exc.entry} is not in {self.known_hosts}",
            hint=(
                "check the fingerprint against the host's own (on the host: ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub), then trust it with "
                f"`ssh-keyscan -p {port} {shlex.quote(host)} >> {known}`; or set "
                'host_key_policy = "accept-new" (--accept-new-host-keys) to trust and record '
                "the keys of hosts seen for the first time"
            ),
        )

    def _changed_key_error(self, exc: paramiko.BadHostKeyException) -> HostKeyError:
        host, port = self._endpoint()
        entry = host if port == 22 else f"[{host}]:{port}"
        known = shlex.quote(str(self.known_hosts))
        return HostKeyError(
            f"{self.name}: WARNING: THE SSH HOST KEY HAS CHANGED! Refusing to connect: someone "
            "could be intercepting this connection (man-in-the-middle), or the host was "
            "reinstalled",
            detail=(
                f"{exc.key.get_name()} key offered: {fingerprint(exc.key)}\n"
                f"{exc.expected_key.get_name()} key in {self.known_hosts}: "
                f"{fingerprint(exc.expected_key)}"
            ),
            hint=(
                "only if you have verified that the change is legitimate, remove the old key with "
                f"ssh-keygen -R {shlex.quote(entry)} -f {known} and trust the new one"
            ),
        )

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
