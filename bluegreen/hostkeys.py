"""Host-key policies for SSH: one known_hosts file, unknown keys refused or recorded.

Fabric trusts any unknown key (``AutoAddPolicy``). bg verifies host keys against one
known_hosts file: an unknown key is refused with a :class:`HostKeyError` that says how to
trust it, unless the policy is ``"accept-new"``, which records it the way OpenSSH's
``StrictHostKeyChecking accept-new`` does. A *changed* key is always refused.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paramiko
from fabric import Connection

from bluegreen.errors import HostError, HostKeyError

log = logging.getLogger(__name__)

HostKeyPolicy = Literal["strict", "accept-new"]

_append_lock = threading.Lock()  # several hosts may accept new keys into one file at once


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class UnknownHostKey(paramiko.SSHException):
    """Raised from inside paramiko's connect; turned into a HostKeyError by the caller."""

    def __init__(self, entry: str, key: paramiko.PKey) -> None:
        super().__init__(f"{entry} is not in known_hosts")
        self.entry = entry
        self.key = key


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKey(hostname, key)


class AcceptNew(paramiko.MissingHostKeyPolicy):
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


@dataclass(frozen=True)
class _Line:
    """One known_hosts line, its key not decoded yet: a fleet's connect decodes only the
    lines naming its own host (building a key object costs ~0.1 ms; a file has hundreds)."""

    hostnames: list[str]  # as paramiko's HostKeyEntry has them: its matcher reads this
    text: str
    lineno: int


_parsed_lock = threading.Lock()
# known_hosts as last read, by path: (inode, size, mtime) and its lines. Every host of a fleet
# connects at once and reads the file; the lock makes that one read, not one per host.
_parsed: dict[str, tuple[tuple[int, int, int], list[_Line]]] = {}


def _known_lines(path: Path) -> list[_Line]:
    """The file's lines, read again whenever its inode, size or mtime changed."""
    with _parsed_lock:
        hit = _parsed.get(str(path))
        if hit is not None and hit[0] == _stamp(os.stat(path)):
            return hit[1]
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            stamp = _stamp(os.fstat(fh.fileno()))  # of what is read: a later write re-reads
            lines = []
            for lineno, raw in enumerate(fh, 1):
                line = raw.strip()  # as paramiko's HostKeys.load reads it
                if not line or line.startswith("#"):
                    continue
                fields = re.split(" |\t", line)
                if len(fields) >= 3:
                    lines.append(_Line(fields[0].split(","), line, lineno))
        _parsed[str(path)] = (stamp, lines)
        return lines


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _entries_for(lines: list[_Line], lookup: str) -> list[Any]:
    """Fresh ``HostKeyEntry`` objects for the lines that name ``lookup`` (plain or hashed),
    in file order: what paramiko's own lookup of that name finds in the whole file. A line
    paramiko cannot read (unknown key type, bad base64) counts as absent, as in OpenSSH."""
    matcher: Any = paramiko.HostKeys()
    entries = []
    for line in lines:
        if matcher._hostname_matches(lookup, line):  # paramiko's rule, hashed names too
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line.text, line.lineno)
            except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey):
                continue
            if entry is not None:
                entries.append(entry)
    return entries


def lookup_name(host: str, port: int) -> str:
    """The name paramiko's SSHClient.connect looks the server's key up by."""
    return host if port == 22 else f"[{host}]:{port}"


def install_policy(
    conn: Any, name: str, known_hosts: Path, policy: HostKeyPolicy, *, hashed: bool
) -> None:
    """Replace Fabric's trust-anything policy, on the host and on every ProxyJump hop.

    known_hosts is read at each connect (read again when its inode, size or mtime changed),
    so keys trusted meanwhile (ssh-keyscan, another host's accept-new) count. Only this
    file: never keys from anywhere else. Each client gets the entries for the name it will
    look up (fresh objects: accept-new adds to a client's keys, never to the shared read).
    """
    missing: paramiko.MissingHostKeyPolicy = (
        AcceptNew(known_hosts, hashed=hashed) if policy == "accept-new" else RefuseUnknown()
    )
    hop: Any = conn
    while isinstance(hop, Connection):
        client: paramiko.SSHClient = hop.client
        keys: Any = client.get_host_keys()
        keys.clear()
        try:
            lines = _known_lines(known_hosts)
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise HostError(f"{name}: cannot read {known_hosts}: {exc.strerror}") from exc
        keys._entries.extend(_entries_for(lines, lookup_name(str(hop.host), int(hop.port))))
        client.set_missing_host_key_policy(missing)
        hop = hop.gateway


def unknown_key_error(name: str, known_hosts: Path, exc: UnknownHostKey) -> HostKeyError:
    # exc.entry names the hop that offered the key: "host", or "[host]:port"
    host, port = exc.entry, 22
    if exc.entry.startswith("["):
        host, _, port_text = exc.entry[1:].partition("]:")
        port = int(port_text)
    known = shlex.quote(str(known_hosts))
    return HostKeyError(
        f"{name}: unknown SSH host key {exc.key.get_name()} {fingerprint(exc.key)} "
        f"for {exc.entry}; refusing to connect",
        detail=f"{exc.entry} is not in {known_hosts}",
        hint=(
            "check the fingerprint against the host's own (on the host: ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub), then trust it with "
            f"`ssh-keyscan -p {port} {shlex.quote(host)} >> {known}`; or set "
            'host_key_policy = "accept-new" (--accept-new-host-keys) to trust and record '
            "the keys of hosts seen for the first time"
        ),
    )


def changed_key_error(
    name: str, known_hosts: Path, endpoint: tuple[str, int], exc: paramiko.BadHostKeyException
) -> HostKeyError:
    host, port = endpoint
    entry = host if port == 22 else f"[{host}]:{port}"
    known = shlex.quote(str(known_hosts))
    return HostKeyError(
        f"{name}: WARNING: THE SSH HOST KEY HAS CHANGED! Refusing to connect: someone "
        "could be intercepting this connection (man-in-the-middle), or the host was "
        "reinstalled",
        detail=(
            f"{exc.key.get_name()} key offered: {fingerprint(exc.key)}\n"
            f"{exc.expected_key.get_name()} key in {known_hosts}: "
            f"{fingerprint(exc.expected_key)}"
        ),
        hint=(
            "only if you have verified that the change is legitimate, remove the old key with "
            f"ssh-keygen -R {shlex.quote(entry)} -f {known} and trust the new one"
        ),
    )
