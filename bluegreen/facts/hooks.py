"""Hook scripts: a hook's shell command (or ``app.migrate`` through the runner) with bg's
BG_* variables exported, and what a run that failed means (a HookError naming the point,
the command and the host)."""

from __future__ import annotations

from bluegreen.errors import HookError
from bluegreen.host import CommandResult
from bluegreen.shell import cd_quietly, exports, lines


def command_script(env: dict[str, str], command: str, cwd: str) -> str:
    """The user's ``command`` (shell, as written in the config) run in ``cwd`` when it
    exists, with ``env`` exported (every value quoted)."""
    return lines(cd_quietly(cwd), exports(env), command)


def migrate_script(env: dict[str, str], eval_script: str) -> str:
    """``app.migrate`` as the runner evaluates it (``eval_script``), with ``env`` exported."""
    return lines(exports(env), eval_script)


def raise_if_failed(result: CommandResult, host: str, point: str, command: str) -> None:
    if not result.ok:
        raise HookError(f"{host}: hook {point} `{command}` failed (exit {result.exit_code})",
                        detail=result.output)
