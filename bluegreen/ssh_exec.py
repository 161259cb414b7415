"""The SSH plumbing under :class:`bluegreen.ssh.SshHost`: how its transport is set up,
how one command runs on its session channel (the release, or nothing, on stdin; stdout
and stderr read until EOF and the exit status), how a direct-tcpip channel opens, and what
low-level errors say. Without httpx: ``bg status`` and ``bg switch`` over SSH probe
through these channels and never import it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import IO, Any

import paramiko

_CHUNK = 32768


def feed(chan: paramiko.Channel, source: IO[bytes]) -> None:
    """Copy ``source`` to the command's stdin, then close it (a thread of its own). A send
    waits for the channel's window (the host reads slowly); one that timed out (a channel
    timeout, should one be set) sent nothing and is tried again: Channel.sendall would
    lose track of what it sent."""
    try:
        while chunk := source.read(_CHUNK):
            while chunk:
                try:
                    sent = chan.send(chunk)
                except TimeoutError:
                    continue
                if sent == 0:  # the channel closed: the script ended early, its exit tells
                    return
                chunk = chunk[sent:]
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the script ended early or the link dropped: its exit tells


class TimedOut(Exception):
    pass


def drain(chan: paramiko.Channel, deadline: float | None) -> tuple[bytes, bytes]:
    """stdout and stderr until the channel's EOF, then the exit status; :class:`TimedOut`
    past ``deadline``. One Event, set by paramiko's transport thread whenever either stream
    gets data or closes, is all the waiting: no poll while a command runs (a 50 ms stderr
    poll cost ~0.4 ms of controller CPU per host and second of a command), and no
    ``select``, for which paramiko keeps a pipe per channel, written on every packet (~40%
    of a short command's controller CPU)."""
    out, err = bytearray(), bytearray()
    ready = threading.Event()
    chan.in_buffer.set_event(ready)
    chan.in_stderr_buffer.set_event(ready)
    while True:
        ready.clear()  # before looking: whatever arrives after the look sets it again
        progressed = False
        if chan.recv_ready():
            out += chan.recv(_CHUNK)
            progressed = True
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(_CHUNK)
            progressed = True
        if progressed:
            continue
        if chan.eof_received or chan.closed:
            # Both streams closed; what came before the EOF is buffered: take it all.
            while chan.recv_ready():
                out += chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_CHUNK)
            break
        _wait(ready, deadline)
    while not chan.status_event.is_set():  # the exit status follows EOF
        _wait(chan.status_event, deadline)
    return bytes(out), bytes(err)


def _wait(event: threading.Event, deadline: float | None) -> None:
    if deadline is None:
        event.wait()
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimedOut
    event.wait(left)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {getattr(e, "strerror", None) or str(e) for e in exc.errors.values()}
        return ", ".join(sorted(causes)) or "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class ChannelOpenError(Exception):
    """The host's sshd did not open the TCP connection (``timed_out``: it timed out)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def open_direct_tcpip(transport: paramiko.Transport, name: str, host: str, port: int,
                      timeout: float | None) -> paramiko.Channel:
    """A TCP connection to ``host:port`` opened by the sshd of host ``name``."""
    where = f"{host}:{port} on {name}"
    try:
        return transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )
    except paramiko.ChannelException as exc:
        raise ChannelOpenError(f"cannot connect to {where}: {exc.text}") from exc
    except paramiko.SSHException as exc:
        if "Timeout" in str(exc):
            raise ChannelOpenError(f"timed out connecting to {where}", timed_out=True) from exc
        raise ChannelOpenError(f"cannot connect to {where}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise ChannelOpenError(f"cannot connect to {where}: {describe_error(exc)}") from exc


# AES-GCM first: its MAC is the cipher's own tag (one call into OpenSSL per packet instead of
# a cipher call and an HMAC), so a release moves with ~30% less controller CPU and wall time
# than with paramiko's default, aes128-ctr + hmac-sha2. The rest stay, in paramiko's order,
# for servers without GCM (OpenSSH has it since 6.2).
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def transport_factory(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """The Transport paramiko's SSHClient connects with (its ``transport_factory``)."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in _GCM if c in offered) + tuple(
        c for c in offered if c not in _GCM)
    return transport


# How long paramiko's transport thread blocks in recv before it looks up (closed? keepalive
# due? rekey wanted?). paramiko's 0.1 s wakes every idle connection ten times a second:
# ~0.7 ms of controller CPU per host and second, 2 ms per host of a 3 s fleet deploy. Data
# wakes the thread at once whatever this is; what waits up to it: a keepalive (every 15 s)
# and a rekey paramiko asks for after 512 MB sent.
_IDLE_POLL = 1.0


def tune_socket(transport: paramiko.Transport) -> None:
    """TCP_NODELAY on the connection, as OpenSSH sets for interactive sessions: bg's
    exchanges are small request/answer pairs (a script, an HTTP probe), which Nagle's
    algorithm would hold back for the peer's delayed ACK, ~40 ms each time. Then the idle
    poll (after the handshake, whose timeouts paramiko counts in its own steps)."""
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):  # not a ProxyCommand or a jump host's channel
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_IDLE_POLL)
