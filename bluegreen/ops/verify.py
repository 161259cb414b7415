"""The verification window after a deploy's switch: real traffic, judged by nginx's record.

Before the switch (:func:`begin`) every nginx host (each app host, or each load balancer)
says whether its configuration writes bg's access log (:mod:`bluegreen.accesslog`) and how
long the file is. For ``[verify] window`` seconds after the switch (:func:`watch`) bg
reads what was appended, counts the requests the new slots served and those answered 5xx
or given up on (499), and probes ``[verify] paths`` through bg's probe server on every
nginx host. The old slots keep running all along. Too high a rate (once ``min_requests``
were seen) or a failed probe raises :class:`~bluegreen.errors.VerifyError`; the executor
then switches back and :func:`settle` reads the log once more, so the figures reported and
journaled count every failed request up to the moment traffic went back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen import accesslog
from bluegreen.errors import BgError, VerifyError
from bluegreen.facts.upstream import dump_command
from bluegreen.host import Host
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Verify
from bluegreen.ops.session import Session
from bluegreen.probe import ProbeError


@dataclass(frozen=True)
class Figures:
    requests: int = 0
    errors: int = 0  # 5xx and 499
    probes: int = 0
    probe_failures: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "rate": round(self.rate, 4), "probes": self.probes,
                "probe_failures": self.probe_failures, "seconds": round(self.seconds, 2)}

    def line(self) -> str:
        return (f"{self.requests} requests, {self.errors} failed ({self.rate:.1%}),"
                f" {self.probes - self.probe_failures}/{self.probes} probes ok")


@dataclass
class Window:
    """One window's readers: per nginx host, where its log is read next and what it
    counted so far (``None``: that host's site does not write bg's log)."""

    step: Verify
    nginx_hosts: list[Host]
    offsets: dict[str, int | None]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # host -> (req, err)
    probes: int = 0
    probe_failures: int = 0
    started: float = 0.0
    failure: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def without_log(self) -> list[str]:
        return [n for n, off in self.offsets.items() if off is None]

    def figures(self) -> Figures:
        return Figures(requests=sum(r for r, _ in self.counts.values()),
                       errors=sum(e for _, e in self.counts.values()),
                       probes=self.probes, probe_failures=self.probe_failures,
                       seconds=time.monotonic() - self.started if self.started else 0.0)


def _nginx_hosts(ctx: Context, session: Session, step: Verify) -> list[Host]:
    return session.hosts(ctx.tier.nginx_names(step.hosts))


def begin(ctx: Context, session: Session, step: Verify) -> Window:
    """Before the switch: the log's length on every nginx host (one round trip each)."""
    hosts = _nginx_hosts(ctx, session, step)
    path = ctx.config.verify.log_path(ctx.config.app.root)
    script = accesslog.begin_script(path, dump_command(ctx.config.nginx.test_command))

    def one(host: Host) -> int | None:
        found = accesslog.parse_begin(session.run(host, script).stdout)
        return found.offset if found.uses else None

    offsets = ctx.each(one, "verify: nginx's log", hosts)
    window = Window(step, hosts, dict(offsets))
    if window.without_log:
        ctx.reporter.info(
            f"warning: nginx on {', '.join(window.without_log)} does not write {path}"
            f" (add `{accesslog.site_line(ctx.config.app.name, path)}` to the"
            " site): the window judges by probes there")
    return window


def _read(ctx: Context, window: Window, host: Host) -> None:
    offset = window.offsets.get(host.name)
    if offset is None:
        return
    step = window.step
    script = accesslog.count_script(
        ctx.config.verify.log_path(ctx.config.app.root), offset,
        new=ctx.tier.addresses(ctx, host.name, step.slots),
        old=ctx.tier.addresses(ctx, host.name, step.old),
        mode="canary" if step.canary else "all")
    count = accesslog.parse_count(host.run(script).stdout)
    if count is None:  # the file is gone: nginx no longer writes it here
        window.offsets[host.name] = None
        return
    window.offsets[host.name] = count.offset
    with window.lock:
        req, err = window.counts.get(host.name, (0, 0))
        window.counts[host.name] = (req + count.requests, err + count.errors)


def _probe(ctx: Context, window: Window, host: Host) -> None:
    expect = ctx.config.health.expect
    for path in ctx.config.verify.paths or (ctx.config.health.path,):
        url = ctx.config.nginx.probe_server_url + path
        try:
            status = host.http_probe(url, timeout=min(ctx.config.health.timeout, 2.0)).status
            problem = "" if status == expect else f"HTTP {status}, expected {expect}"
        except ProbeError as exc:
            problem = str(exc)
        with window.lock:  # one thread per nginx host
            window.probes += 1
            if problem:
                window.probe_failures += 1
                window.failure = (window.failure
                                  or f"probe {path} through nginx on {host.name}: {problem}")


def _poll(ctx: Context, window: Window) -> Figures:
    def one(host: Host) -> None:
        _read(ctx, window, host)
        _probe(ctx, window, host)

    ctx.each(one, "verify", window.nginx_hosts)
    return window.figures()


def _verdict(ctx: Context, window: Window, figures: Figures) -> str:
    v = ctx.config.verify
    if window.failure:
        return window.failure
    if figures.requests and figures.requests >= v.min_requests and figures.rate > v.max_error_rate:
        return (f"{figures.errors} of {figures.requests} requests through nginx failed"
                f" ({figures.rate:.1%}, limit {v.max_error_rate:.1%})")
    return ""


def watch(ctx: Context, session: Session, step: Verify, window: Window) -> Figures:
    """The window itself; returns its figures, or raises VerifyError at the first verdict."""
    v = ctx.config.verify
    window.started = time.monotonic()
    deadline = window.started + step.window
    shown = window.started
    title = f"verify {step.window:g}s (nginx's log, probes)"
    with ctx.step(title) as note:
        while True:
            time.sleep(max(0.0, min(v.interval, deadline - time.monotonic())))
            figures = _poll(ctx, window)
            why = _verdict(ctx, window, figures)
            if why:
                note.append(figures.line())
                raise VerifyError(f"verification failed after {figures.seconds:.1f}s: {why}")
            if time.monotonic() >= deadline:
                break
            if time.monotonic() - shown >= max(v.interval, step.window / 6):
                shown = time.monotonic()
                ctx.reporter.info(f"  verify {figures.seconds:4.0f}s/{step.window:g}s:"
                                  f" {figures.line()}")
        note.append(figures.line())
        if figures.requests < v.min_requests:
            note.append(f"judged by probes: fewer than {v.min_requests} requests")
    session.record("verify", "ok", (*step.hosts, *step.front), **figures.to_json())
    return figures


def settle(ctx: Context, session: Session, window: Window, error: VerifyError) -> None:
    """After the switch back: count what the log gained since the verdict (the requests
    that failed until traffic went back), journal the figures, complete the message."""
    try:
        ctx.each(lambda h: _read(ctx, window, h), "verify", window.nginx_hosts)
    except BgError as exc:
        error.attach(exc)
    figures = replace(window.figures(), seconds=time.monotonic() - window.started)
    step = window.step
    session.record("verify", "failed", (*step.hosts, *step.front), reason=error.message,
                   **figures.to_json())
    slots = sorted(set(step.slots.values()))
    error.message += (f"; {figures.line()} until traffic went back to"
                      f" {'/'.join(sorted(set(step.old.values())))}")
    error.hint = (f"{'/'.join(slots)} was stopped; its log: `bg logs --slot {slots[0]}`;"
                  " fix the release and deploy again (or `--no-verify` to skip the window)")
    error.figures = figures.to_json()
