"""`bg logs`: a slot's log on one host or all, each line prefixed by its host; ``follow``
polls for what was appended until interrupted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bluegreen import logtail
from bluegreen import state as st
from bluegreen.errors import ConfigError
from bluegreen.host import Host, check
from bluegreen.ops.core import Context

SLOT_CHOICES = ("live", "idle", "blue", "green")


@dataclass(frozen=True)
class HostLog:
    host: str
    slot: str
    source: logtail.LogSource


def sources(ctx: Context, slot: str) -> dict[str, HostLog]:
    """Which slot's log on each host (live and idle are read from each host's state)."""
    if slot not in SLOT_CHOICES:
        raise ConfigError(f"--slot must be one of {', '.join(SLOT_CHOICES)}, got {slot!r}")

    def one(host: Host) -> HostLog:
        chosen = slot
        if slot in ("live", "idle"):
            state = st.read_state(host, ctx.paths)
            # Nothing deployed yet: blue is where the first deploy goes.
            live = state.live or "blue"
            chosen = live if slot == "live" or state.live is None else state.idle
        return HostLog(host.name, chosen, ctx.runner.log_source(chosen))

    return ctx.each(one, "logs")


def tail(ctx: Context, slot: str, lines: int) -> dict[str, tuple[HostLog, str, str]]:
    """Per host: (which log, its last ``lines`` lines, the position to follow from)."""
    logs = sources(ctx, slot)

    def one(host: Host) -> tuple[HostLog, str, str]:
        log = logs[host.name]
        out = check(host.run(logtail.tail_script(log.source, lines)), "reading the log", host)
        text, pos = logtail.split_output(log.source, out.stdout, "")
        return log, text, pos

    return ctx.each(one, "logs")


def follow(ctx: Context, start: dict[str, tuple[HostLog, str, str]],
           emit: Callable[[str, str], None], *, interval: float = 0.5,
           stop: Callable[[], bool] = lambda: False) -> None:
    """Poll every host for appended text and ``emit(host, line)`` each complete line,
    until ``stop()`` is true or Ctrl-C (KeyboardInterrupt propagates to the caller)."""
    positions = {name: pos for name, (_, _, pos) in start.items()}
    partial = dict.fromkeys(start, "")
    while not stop():
        def one(host: Host) -> str:
            log = start[host.name][0]
            out = host.run(logtail.since_script(log.source, positions[host.name]))
            text, positions[host.name] = logtail.split_output(
                log.source, out.stdout, positions[host.name])
            return text

        for name, text in ctx.each(one, "logs -f").items():
            buf = partial[name] + text
            *done, partial[name] = buf.split("\n")
            for line in done:
                emit(name, line)
        time.sleep(interval)
