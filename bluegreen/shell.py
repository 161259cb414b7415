"""Shell building blocks: quoting, joining, and the one registry of script exit codes.

Every script bg runs on a host is built by an engine module from these helpers; ``ops/``
orchestrates and never formats shell. A value that reaches a script is either quoted here
or validated to a safe alphabet before it gets there (see :func:`safe_token`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from enum import IntEnum


class ScriptExit(IntEnum):
    """Exit codes that bg's own scripts use to say *why* they stopped.

    Chosen outside the range commands commonly use (1, 2, 126, 127, 128+N) so a script's
    own failure is never mistaken for the failure of a command it ran.
    """

    LOCKED = 73  # the lock directory exists: another operation holds it
    NGINX_TEST_FAILED = 74  # the staged upstream was rejected by the test command
    PORT_BUSY = 75  # a process bg did not start listens on the slot's port
    SHA_MISMATCH = 76  # the uploaded artifact does not have the expected sha256
    EXTRACT_FAILED = 77  # tar could not extract the release (disk full, corrupt data)
    NGINX_BROKEN_BEFORE = 78  # nginx's configuration fails its test without bg's change too
    STATE_WRITE = 90  # state.json could not be written
    RETIRE_FAILED = 91  # the old slot could not be stopped
    NEW_SLOT_DIED = 92  # the new live slot died after the switch, before the old one retired
    FAILPOINT = 99  # a test asked the script to stop at a named failpoint


def q(value: str | os.PathLike[str] | int) -> str:
    """Quote one value for a POSIX shell."""
    if isinstance(value, int):
        return str(value)
    return shlex.quote(os.fspath(value))


def join(argv: Iterable[str | os.PathLike[str] | int]) -> str:
    """A command line from an argv list, every element quoted."""
    return " ".join(q(a) for a in argv)


_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def safe_token(value: str, what: str) -> str:
    """``value`` when it is a plain token (a version, a slot, a release name); else ValueError.

    Values read from a host (state.json, directory listings) pass through here before any
    script or path is built from them, so a hostile host file cannot inject shell.
    """
    if not _TOKEN.match(value) or len(value) > 128:
        raise ValueError(f"{what} {value!r} is not a plain token ([A-Za-z0-9._+-], at most 128)")
    return value


def subshell(script: str, *, or_exit: int | None = None, propagate: bool = False) -> str:
    """``script`` in a subshell; with ``or_exit``, the caller exits with that code on
    failure; with ``propagate``, with the subshell's own code."""
    body = f"(\n{script}\n)"
    if propagate:
        return f"{body} || exit $?"
    return f"{body} || exit {or_exit}" if or_exit is not None else body


def lines(*parts: str) -> str:
    """Join non-empty script fragments with newlines."""
    return "\n".join(p for p in parts if p)


def exports(env: dict[str, str]) -> str:
    """``export K=V`` lines, every value quoted (keys are bg's own BG_* names)."""
    return "\n".join(f"export {k}={q(v)}" for k, v in env.items() if _ENV_KEY.match(k))


_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def cd_quietly(path: str) -> str:
    """Change to ``path`` when it exists; stay put otherwise."""
    return f"cd {q(path)} 2>/dev/null || true"


def guard(script: str, exit_code: int, message: str) -> str:
    """Exit ``exit_code`` (printing ``message``) unless ``script`` succeeds."""
    return (f"if ! (\n{script}\n) >/dev/null 2>&1; then echo {q(message)};"
            f" exit {int(exit_code)}; fi")


# Builtin-only forms of the commands the lock round trip runs most: every fork and exec is
# ~1 ms on a host, and the round trip that locks and observes runs before every operation.

def cat_file(path: str) -> str:
    """Print ``path`` byte for byte (text) and exit 0, or print nothing and exit 1 when it
    cannot be read: ``cat PATH 2>/dev/null`` with shell builtins only."""
    return ("{ while IFS= read -r bg_l; do printf '%s\\n' \"$bg_l\"; done;"
            " [ -z \"$bg_l\" ] || printf '%s' \"$bg_l\"; }"
            f" 2>/dev/null < {q(path)}")


def remove_files(*paths: str) -> str:
    """``rm -f PATHS`` that forks only when one of them exists (exit 0 either way)."""
    named = " ".join(q(p) for p in paths)
    present = " || ".join(f"[ -e {q(p)} ] || [ -L {q(p)} ]" for p in paths)
    return f"if {present}; then rm -f {named}; fi"
