"""``bg promote`` and ``bg abort``: end a running canary (see :mod:`bluegreen.ops.canary`).

Promote is a switch to the canary's slot: the same two-phase, confirmed switch, then the
old slot retires as after any deploy. Abort is a switch back to the old slot alone, then
the canary's slot retires (after nginx's workers that still proxied to it have drained).
Both run under the lock like every operation, and a crash is recovered by the next one.
"""

from __future__ import annotations

from dataclasses import replace

from bluegreen import nginx
from bluegreen.errors import BgError
from bluegreen.ops import canary, canarysteps
from bluegreen.ops.core import Context, OperationResult, prefetch
from bluegreen.ops.deploy import _facts
from bluegreen.ops.executor import counted, execute, interruptible
from bluegreen.ops.plan import plan_switch
from bluegreen.ops.session import Session

_NONE = "no canary is running"
_HINT = "start one with `bg deploy --canary PERCENT ARTIFACT`"


def promote(ctx: Context) -> OperationResult:
    prefetch(*nginx.renderer_modules(ctx.config))
    with interruptible(), Session(ctx, "promote") as session:
        found = canary.running(ctx, session)
        if not found:
            raise BgError(_NONE, hint=_HINT)
        slot = next(iter(found.values())).slot
        facts = _facts(ctx, session.states, session.observed, lambda s: {slot})
        plan = plan_switch(ctx.config, facts, to=slot, retire=ctx.should_retire,
                           boot_batch=ctx.target.boot_batch(len(ctx.hosts)),
                           front=ctx.tier.names)
        result = execute(ctx, session, replace(plan, operation="promote"), None)
    return counted(ctx, result)


def abort(ctx: Context) -> OperationResult:
    prefetch(*nginx.renderer_modules(ctx.config))
    with interruptible(), Session(ctx, "abort") as session:
        found = canary.running(ctx, session)
        if not found:
            raise BgError(_NONE, hint=_HINT)
        result = execute(ctx, session, canarysteps.plan_abort(ctx, session, found), None)
    return counted(ctx, result)
