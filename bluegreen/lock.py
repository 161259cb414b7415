"""The lock (``bg/lock/``): one bg operation at a time on a host, all hosts or none.

The lock is a directory made with ``mkdir`` (atomic on every POSIX filesystem) holding the
holder's details, so a second ``bg`` sees who holds it and since when; a holder that
provably died (same controller, process gone) is taken over. The builders below only build
shell (as Kamal's ``commands/lock.rb``); :class:`Locks` runs them, and :func:`with_lock`
holds the lock around a block (Kamal's ``with_lock``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from bluegreen.errors import BgError, HostFailures, LockHeldError, StaleLockError
from bluegreen.host import CommandResult, Host, check, controller_identity
from bluegreen.layout import Layout
from bluegreen.shell import ScriptExit, lines, q
from bluegreen.state import now_iso


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot: tells a reused pid apart."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def holder_info(command: str) -> dict[str, Any]:
    who = controller_identity()
    return {
        **who,
        "started": _process_start(os.getpid()),
        "command": command,
        "time": now_iso(),
    }


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this machine and its process no longer exists."""
    if holder.get("controller") != socket.gethostname():
        return False  # another operator's machine: we cannot tell, so we never guess
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    return started == "" or started != holder.get("started")


def describe_holder(holder: dict[str, Any]) -> str:
    age = ""
    try:
        since = datetime.fromisoformat(str(holder["time"]))
        age = f", for {int((datetime.now(UTC) - since).total_seconds())}s"
    except (KeyError, ValueError):
        pass
    return (
        f"{holder.get('user', '?')}@{holder.get('controller', '?')} pid {holder.get('pid', '?')}"
        f" running `{holder.get('command', '?')}` since {holder.get('time', '?')}{age}"
    )


LOCKED_EXIT = ScriptExit.LOCKED


def lock_script(paths: Layout, holder: dict[str, Any]) -> str:
    """mkdir is the atomic test-and-set; on failure print the holder."""
    lock = q(paths.lock)
    info = q(json.dumps(holder, sort_keys=True))
    return (
        f"umask 022; {{ [ -d {q(paths.bg)} ] || mkdir -p {q(paths.bg)}; }}"
        f" && if mkdir {lock} 2>/dev/null; then "
        f"printf '%s\\n' {info} > {lock}/holder.json; "
        f"else cat {lock}/holder.json 2>/dev/null; exit {LOCKED_EXIT}; fi"
    )


def takeover_script(paths: Layout, dead: dict[str, Any], holder: dict[str, Any]) -> str:
    """Take over a lock whose holder died: ``mkdir`` of a directory named after that one
    holder is the atomic claim, so of two operations taking over at once exactly one wins
    (the other sees the winner as holder and exits LOCKED)."""
    lock = q(paths.lock)
    claim = q(f"{paths.lock}/taken-{_claim_id(dead)}")
    info = q(json.dumps(holder, sort_keys=True))
    return (
        f"if mkdir {claim} 2>/dev/null; then "
        f"printf '%s\\n' {info} > {lock}/holder.json.tmp && "
        f"mv -f {lock}/holder.json.tmp {lock}/holder.json; "
        f"else cat {lock}/holder.json 2>/dev/null; exit {LOCKED_EXIT}; fi"
    )


def _claim_id(holder: dict[str, Any]) -> str:
    pid, started = holder.get("pid"), holder.get("started")
    ok = isinstance(pid, int) and isinstance(started, str) and started.isdigit()
    return f"{pid}-{started}" if ok else "unknown"


def parse_holder(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def raise_held(host: Host, paths: Layout, holder_text: str) -> None:
    holder = parse_holder(holder_text)
    clear = "bg lock release" + ("" if host.name == "local" else " --target <target>")
    if holder_is_gone(holder):
        raise StaleLockError(
            f"{host.name}: the lock is stale: its holder is gone ({describe_holder(holder)})",
            hint=f"make sure no bg is running, then clear it with `{clear}`"
            f" (lock: {paths.lock})",
        )
    raise LockHeldError(
        f"{host.name}: another bg operation holds the lock: {describe_holder(holder)}",
        hint=f"wait for it to finish; if it crashed, clear it with `{clear}`",
    )


def release_script(paths: Layout) -> str:
    return f"rm -rf {q(paths.lock)}"


def read_lock(host: Host, paths: Layout) -> dict[str, Any] | None:
    raw = host.read(f"{paths.lock}/holder.json")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"command": "?", "note": "unreadable holder.json"}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------- taking it


class Each(Protocol):
    """``Context.each``: run a function on hosts in parallel, raise HostFailures once."""

    def __call__(self, fn: Callable[[Host], Any], what: str,
                 hosts: Sequence[Host] | None = None) -> Mapping[str, Any]: ...


class Locks:
    """The locks one operation holds, host by host."""

    def __init__(self, paths: Layout, command: str) -> None:
        self.paths = paths
        self.holder = holder_info(command)
        self.hosts: list[Host] = []

    def take(self, host: Host, tail: str = "") -> tuple[CommandResult, dict[str, Any] | None]:
        """Take ``host``'s lock and run ``tail`` once it is held, in one round trip; take
        over the lock of a holder that provably died. Returns the script's result (the
        caller checks it: the host counts as locked already) and the dead holder, if any."""
        result = host.run(lines(lock_script(self.paths, self.holder), tail))
        dead = None
        if result.exit_code == LOCKED_EXIT:
            dead = parse_holder(result.stdout)
            if not holder_is_gone(dead):
                raise_held(host, self.paths, result.stdout)
            result = host.run(lines(takeover_script(self.paths, dead, self.holder), tail))
            if result.exit_code == LOCKED_EXIT:
                raise_held(host, self.paths, result.stdout)
        self.hosts.append(host)  # from here on, every exit path releases it
        return result, dead

    def drop(self, host: Host) -> None:
        """``host``'s lock went with a script of the operation's own (its last step)."""
        self.hosts = [h for h in self.hosts if h is not host]

    def release(self, each: Each, exc: BaseException | None,
                head: Callable[[Host], str] = lambda host: "") -> None:
        """Release every lock held (``head(host)`` runs first, in the same script). A
        failure here is attached to the operation's own error ``exc``, never put in its
        place; without one it is raised."""
        locked, self.hosts = self.hosts, []
        if not locked:
            return
        scripts = {h.name: lines(head(h), release_script(self.paths)) for h in locked}

        def one(host: Host) -> None:
            check(host.run(scripts[host.name]), "releasing the lock", host)

        try:
            try:
                each(one, "releasing the lock", locked)
            except HostFailures as first:
                # A connection that dropped mid-operation is usually back at once: the host
                # reconnects on use, so try those hosts once more before giving up.
                time.sleep(0.5)
                each(one, "releasing the lock", [h for h in locked if h.name in first.errors])
        except BgError as failure:
            if isinstance(exc, BgError):
                exc.attach(failure)
            elif exc is None:
                raise


@contextmanager
def with_lock(each: Each, hosts: Sequence[Host], paths: Layout, command: str
              ) -> Iterator[Locks]:
    """Hold the lock on every host of ``hosts`` (all or none) while the block runs, and
    release it after, also when the block fails (Kamal's ``with_lock``)."""
    locks = Locks(paths, command)
    try:
        each(lambda h: check(locks.take(h)[0], "taking the lock", h), "taking the lock", hosts)
        yield locks
    except BaseException as exc:
        locks.release(each, exc)
        raise
    locks.release(each, None)
