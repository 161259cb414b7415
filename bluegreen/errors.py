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
    └── HookError                9  a hook (e.g. migrations) failed before the switch
"""

from __future__ import annotations

from enum import IntEnum


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


class HostError(BgError):
    exit_code = ExitCode.HOST


class HostKeyError(HostError):
    pass


class StateError(BgError):
    exit_code = ExitCode.STATE


class HookError(BgError):
    exit_code = ExitCode.HOOK


class CommandError(BgError):
    """A command bg ran on a host exited non-zero where success was required."""
