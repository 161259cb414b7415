"""Hooks at named points of a deploy. ``before_switch``: after the new slot is healthy,
before any traffic moves; a failure aborts the deploy with the command's output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bluegreen.errors import HookError

if TYPE_CHECKING:
    from bluegreen.ops.core import Context


def run_before_switch(ctx: Context, hook: str, slot: str, version: str) -> None:
    if hook != "migrate":
        raise HookError(f"unknown hook {hook!r}")
    expression = ctx.config.app.migrate
    # Migrations change a shared database: run them once, on the first host.
    host = ctx.hosts[0]
    with ctx.step(f"migrate on {host.name} ({version} in {slot})") as note:
        result = host.run(ctx.runner.eval_script(slot, expression), timeout=3600)
        if not result.ok:
            raise HookError(
                f"{host.name}: migrate failed (exit {result.exit_code}); nothing was switched",
                detail=result.output,
            )
        note.append("ok")
