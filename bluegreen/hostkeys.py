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
import shlex
import threading
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


_parsed_lock = threading.Lock()
# known_hosts as last parsed, by path: (inode, size, mtime) and its entries. Each host of a
# fleet loads the file at its connect; parsing it every time costs O(hosts x lines).
_parsed: dict[str, tuple[tuple[int, int, int], list[Any]]] = {}


def _known_entries(path: Path) -> list[Any]:
    """The file's entries (paramiko ``HostKeyEntry``), parsed again whenever it changed."""
    st = path.stat()
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _parsed_lock:
        hit = _parsed.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
    keys: Any = paramiko.HostKeys()
    keys.load(str(path))
    entries: list[Any] = list(keys._entries)  # no public way to list them
    with _parsed_lock:
        _parsed[str(path)] = (stamp, entries)
    return entries


def install_policy(
    conn: Any, name: str, known_hosts: Path, policy: HostKeyPolicy, *, hashed: bool
) -> None:
    """Replace Fabric's trust-anything policy, on the host and on every ProxyJump hop.

    known_hosts is read at each connect (parsed again when its inode, size or mtime
    changed), so keys trusted meanwhile (ssh-keyscan, another host's accept-new) count.
    Only this file: never keys from anywhere else.
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
            if known_hosts.is_file():
                # Copies: accept-new adds to a client's keys, never to the shared parse.
                keys._entries.extend(
                    paramiko.hostkeys.HostKeyEntry(list(e.hostnames), e.key)
                    for e in _known_entries(known_hosts))
        except OSError as exc:
            raise HostError(f"{name}: cannot read {known_hosts}: {exc.strerror}") from exc
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
