"""The error hierarchy and the exit codes it maps to.

Every failure bg reports on purpose is a :class:`BgError`; ``cli.py`` alone turns
them into exit codes. Anything else escaping an operation is a bug and exits 70.

    BgError                      1  an operation failed (the message says which step)
    ├── ConfigError              2  bad configuration or command-line input; nothing touched
    ├── ArtifactError            2  the artifact is unusable or unsafe; nothing extracted
    ├── HealthCheckError         3  the new slot never became healthy; traffic unchanged
    ├── LockHeldError            4  another bg operation holds the lock
    │   └── StaleLockError       5  the lock's holder is gone; clear it with `bg lock release`
    ├── SwitchError              6  nginx could not be switched; previous config restored
    ├── HostError                7  a host is unreachable or refused us (SSH, host key)
    │   └── HostKeyError         7
    ├── StateError               8  a host's state is inconsistent; the message says how to repair
    ├── HookError                9  a hook (e.g. migrations) failed before the switch
    ├── VerifyError             10  the verification window failed; traffic went back
    ├── CommandError             1  a command bg ran on a host failed where success was required
    └── HostFailures                one phase failed on some hosts of a parallel run

A :class:`HostFailures` keeps its meaning: it is also an instance of the most specific class
all its hosts' errors share (health gates failing on two hosts raise an error that is both a
``HostFailures`` and a ``HealthCheckError``, with exit code 3), and it names every host of the
phase with its outcome. ``except HealthCheckError`` therefore works across the parallel
boundary, for one host or many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    HEALTH = 3
    LOCKED = 4
    STALE_LOCK = 5
    SWITCH = 6
    HOST = 7
    STATE = 8
    HOOK = 9
    VERIFY = 10
    INTERRUPTED = 130
    INTERNAL = 70


class BgError(Exception):
    """A failure bg understands: one clear sentence, optional detail and hint."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, detail: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        # Raised while this error was being handled (e.g. releasing the lock): kept, shown,
        # never allowed to replace this error or its exit code.
        self.secondary: list[BgError] = []

    def attach(self, other: BgError) -> None:
        self.secondary.append(other)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message": self.message,
            "hint": self.hint,
            "detail": self.detail,
            "exit_code": int(self.exit_code),
            "kind": type(self).__name__,
        }
        if self.secondary:
            out["also"] = [e.message for e in self.secondary]
        return out


class ConfigError(BgError):
    exit_code = ExitCode.USAGE


class ArtifactError(BgError):
    exit_code = ExitCode.USAGE


class HealthCheckError(BgError):
    exit_code = ExitCode.HEALTH


class LockHeldError(BgError):
    exit_code = ExitCode.LOCKED


class StaleLockError(LockHeldError):
    exit_code = ExitCode.STALE_LOCK


class SwitchError(BgError):
    exit_code = ExitCode.SWITCH


class SlotDiedError(SwitchError):
    """The new live slot died after the switch, before the old one was retired."""


class HostError(BgError):
    exit_code = ExitCode.HOST


class HostKeyError(HostError):
    pass


class StateError(BgError):
    exit_code = ExitCode.STATE


class HookError(BgError):
    exit_code = ExitCode.HOOK


class VerifyError(BgError):
    """Too many of the new release's real requests failed (or a probe did) during the
    verification window: traffic went back to the old slot, the new one was stopped."""

    exit_code = ExitCode.VERIFY
    figures: dict[str, Any] | None = None  # requests, errors, rate, probes, seconds

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.figures is not None:
            out["figures"] = self.figures
        return out


class CommandError(BgError):
    """A command bg ran on a host exited non-zero where success was required."""


class Interrupted(BgError):
    """Ctrl-C or SIGTERM: what was started and not switched was stopped; the lock released."""

    exit_code = ExitCode.INTERRUPTED


def one_line(exc: BaseException) -> str:
    if isinstance(exc, BgError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class HostFailures(BgError):
    """A phase failed on one or more hosts; carries each host's error and every host's outcome.

    Build it with :meth:`of`, which picks the class that keeps the errors' meaning.
    """

    phase: str
    errors: Mapping[str, BaseException]
    outcomes: dict[str, str]

    def __init__(self, phase: str, errors: Mapping[str, BaseException],
                 hosts: Sequence[str]) -> None:
        first = next(iter(errors.values()))
        if len(hosts) == 1:
            message = one_line(first)
        else:
            lines = [f"{name}: {one_line(exc)}" for name, exc in errors.items()]
            message = f"{phase} failed on {len(errors)} of {len(hosts)} hosts: " + "; ".join(lines)
        details = [f"{name}: {exc.detail}" for name, exc in errors.items()
                   if isinstance(exc, BgError) and exc.detail]
        super().__init__(
            message,
            detail="\n".join(details) if len(hosts) > 1 else
            (first.detail if isinstance(first, BgError) else ""),
            hint=first.hint if isinstance(first, BgError) else "",
        )
        self.phase = phase
        self.errors = dict(errors)
        self.outcomes = {
            name: (f"failed: {one_line(errors[name])}" if name in errors else f"{phase}: ok")
            for name in hosts
        }
        if type(self) is HostFailures:
            codes = {exc.exit_code for exc in errors.values() if isinstance(exc, BgError)}
            self.exit_code = codes.pop() if len(codes) == 1 else ExitCode.FAILED

    @classmethod
    def of(cls, phase: str, errors: Mapping[str, BaseException],
           hosts: Sequence[str]) -> HostFailures:
        kind = _common_kind(list(errors.values()))
        return _failures_class(kind)(phase, errors, hosts)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "phase": self.phase, "hosts": self.outcomes}


_FAILURE_CLASSES: dict[type[BgError], type[HostFailures]] = {}


def _common_kind(errors: list[BaseException]) -> type[BgError]:
    """The most specific BgError class every error is an instance of (BgError at worst)."""
    if not errors or not all(isinstance(e, BgError) for e in errors):
        return BgError
    for klass in type(errors[0]).__mro__:
        if (isinstance(klass, type) and issubclass(klass, BgError)
                and not issubclass(klass, HostFailures)
                and all(isinstance(e, klass) for e in errors)):
            return klass
    return BgError


def _failures_class(kind: type[BgError]) -> type[HostFailures]:
    if kind is BgError:
        return HostFailures
    cls = _FAILURE_CLASSES.get(kind)
    if cls is None:
        cls = type(f"{kind.__name__}OnHosts", (HostFailures, kind),
                   {"exit_code": kind.exit_code, "__module__": __name__})
        _FAILURE_CLASSES[kind] = cls
    return cls
