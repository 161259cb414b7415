"""Hooks: commands at named points of an operation, run as a step of the plan.

An entry is ``migrate`` (``app.migrate`` through the runner, once, on the first host: it
changes a shared database), ``local: CMD`` (once, on the controller) or a shell command
run on every host of the step. Each gets BG_APP, BG_VERSION, BG_SLOT, BG_PORT,
BG_PREVIOUS_VERSION, BG_HOSTS, BG_TARGET and BG_OPERATION in its environment.
"""

from __future__ import annotations

import os
import subprocess

from bluegreen.errors import HookError
from bluegreen.facts import hooks
from bluegreen.host import Host
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Hook, Plan
from bluegreen.ops.session import Session

HOOK_TIMEOUT = 3600.0


def hook_env(ctx: Context, plan: Plan, host: str | None) -> dict[str, str]:
    hp = plan.host(host) if host else (plan.acting or plan.hosts)[0]
    return {
        "BG_APP": ctx.config.app.name,
        "BG_VERSION": hp.version,
        "BG_SLOT": hp.slot,
        "BG_PORT": str(ctx.config.slots[hp.slot]),
        "BG_PREVIOUS_VERSION": hp.old_version or "",
        "BG_HOSTS": " ".join(h.host for h in plan.hosts),
        "BG_TARGET": ctx.target.name,
        "BG_OPERATION": plan.operation,
    }


def run_hook(ctx: Context, plan: Plan, hook: Hook, session: Session) -> None:
    """Run one hook entry; raise HookError naming the point, command and host on failure."""
    cmd = hook.command
    with ctx.step(f"hook {hook.point}: {cmd}") as note:
        if cmd.startswith("local:"):
            env = {**os.environ, **hook_env(ctx, plan, None)}
            proc = subprocess.run(["/bin/sh", "-c", cmd[len("local:"):].strip()], env=env,
                                  capture_output=True, text=True, timeout=HOOK_TIMEOUT,
                                  check=False, cwd=ctx.config.path.parent)
            if proc.returncode != 0:
                raise HookError(f"hook {hook.point} `{cmd}` failed on the controller"
                                f" (exit {proc.returncode})",
                                detail=(proc.stdout + proc.stderr).strip())
            note.append("controller")
            return
        hosts = [h for h in ctx.hosts if h.name in hook.hosts]
        if cmd == "migrate":
            hosts = hosts[:1]  # a shared database: once

        def one(host: Host) -> None:
            hp = plan.host(host.name)
            env = hook_env(ctx, plan, host.name)
            if cmd == "migrate":
                script = hooks.migrate_script(
                    env, ctx.runner.eval_script(hp.slot, ctx.config.app.migrate))
            else:
                script = hooks.command_script(env, cmd, ctx.paths.slot(hp.slot))
            result = session.run(host, script, timeout=HOOK_TIMEOUT)
            hooks.raise_if_failed(result, host.name, hook.point, cmd)

        ctx.each(one, f"hook {hook.point}", hosts)
        note.append(", ".join(h.name for h in hosts))
