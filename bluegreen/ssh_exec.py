"""How :class:`bluegreen.ssh.SshHost` runs one command on its session channel: the
release (or nothing) on stdin, stdout and stderr read until EOF and the exit status."""

from __future__ import annotations

import time
from typing import IO

import paramiko

_CHUNK = 32768


def feed(chan: paramiko.Channel, source: IO[bytes]) -> None:
    """Copy ``source`` to the command's stdin, then close it (a thread of its own).

    :func:`drain` gives the channel a timeout of ``_POLL``, and paramiko applies it to
    sends too: a send that waited that long for the window (the host reads slowly) raises
    TimeoutError having sent nothing, and is tried again. Channel.sendall would lose track
    of what it sent."""
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


_POLL = 0.05


class TimedOut(Exception):
    pass


def drain(chan: paramiko.Channel, deadline: float | None) -> tuple[bytes, bytes]:
    """stdout and stderr until the channel's EOF and exit status; :class:`TimedOut` past
    ``deadline``. The wait is a blocking ``recv`` (a condition variable that paramiko's
    transport thread signals), stderr read every ``_POLL`` seconds meanwhile: ``select`` on
    a channel makes paramiko keep a pipe per channel, written on every packet, which cost
    ~40% of a short command's controller CPU."""
    out, err = bytearray(), bytearray()

    def wait() -> None:
        if deadline is None:
            chan.settimeout(_POLL)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimedOut
        chan.settimeout(min(_POLL, left))

    while True:  # stdout to its EOF, stderr drained meanwhile (they share the window)
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(_CHUNK)
            continue
        wait()
        try:
            data = chan.recv(_CHUNK)
        except TimeoutError:
            continue
        if not data:  # EOF, or the channel closed: stderr ends with it
            break
        out += data
    while True:
        wait()
        try:
            data = chan.recv_stderr(_CHUNK)
        except TimeoutError:
            continue
        if not data:
            break
        err += data
    while not chan.status_event.wait(_POLL):  # the exit status follows EOF
        wait()
    return bytes(out), bytes(err)
