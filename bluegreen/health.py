"""The health gate: poll a slot over HTTP until it is healthy, with httpx + tenacity.

Every ``[health]`` knob is honoured: ``start_delay`` before the first attempt, ``interval``
between attempts, ``timeout`` per attempt, ``deadline`` for the whole gate (start delay
included), ``successes`` consecutive good answers required, ``expect`` the status.
The request travels through the host's own transport, so for a remote host it goes
through the SSH connection and the slot's port never has to be reachable from outside.

:func:`healthy_now` asks the same question without waiting for a boot (``bg status``,
warm slots, right after a switch) with one-shot probes (:mod:`bluegreen.probe`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bluegreen.config import HealthConfig
from bluegreen.probe import ProbeError, Prober

if TYPE_CHECKING:  # imported where used: only the gate waiting for a boot needs them
    import httpx



class NotHealthy(Exception):
    """One attempt did not count as healthy (retried)."""


class SlotDied(Exception):
    """The slot's process is gone: waiting longer cannot help (not retried)."""


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    attempts: int
    elapsed: float
    last: str  # the last answer or error, for the message
    died: bool = False


def wait_healthy(
    transport: httpx.BaseTransport,
    port: int,
    cfg: HealthConfig,
    *,
    alive: Callable[[], bool] | None = None,
    alive_every: float = 1.0,
) -> HealthReport:
    """Poll the slot on ``port`` until ``cfg.successes`` good answers in a row, the deadline,
    or ``alive`` saying its process is gone (asked at most every ``alive_every`` s)."""
    import httpx
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception_type,
        stop_after_delay,
        wait_fixed,
    )

    started = time.monotonic()
    state = _Progress(checked=started)
    attempt = _Attempt(health_url(port, cfg), cfg, state, alive, alive_every)
    if cfg.start_delay:
        time.sleep(cfg.start_delay)
    remaining = max(0.0, cfg.deadline - (time.monotonic() - started))
    retrying = Retrying(
        stop=stop_after_delay(remaining),
        wait=wait_fixed(cfg.interval),
        retry=retry_if_exception_type(NotHealthy),
        reraise=False,
    )
    timeout = httpx.Timeout(cfg.timeout)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        try:
            retrying(attempt, client)
        except RetryError:
            return _report(False, state, started)
        except SlotDied:
            return _report(False, state, started, died=True)
    return _report(True, state, started)


def health_url(port: int, cfg: HealthConfig) -> str:
    return f"http://127.0.0.1:{port}{cfg.path}"


def healthy_now(host: Prober, port: int, cfg: HealthConfig, *, within: float = 0.0
                ) -> HealthReport:
    """Is the slot healthy right now? One probe (``cfg.timeout`` capped at 2 s), repeated
    every ``cfg.interval`` (at most 50 ms) while ``within`` seconds have not passed; one
    expected answer is enough."""
    url = health_url(port, cfg)
    started = time.monotonic()
    state = _Progress(checked=started)
    while True:
        state.attempts += 1
        try:
            status = host.http_probe(url, timeout=min(cfg.timeout, 2.0)).status
            state.last = f"HTTP {status}"
            if status == cfg.expect:
                return _report(True, state, started)
            state.last += f" (expected {cfg.expect})"
        except ProbeError as exc:
            state.last = str(exc)
        if time.monotonic() - started >= within:
            return _report(False, state, started)
        time.sleep(min(cfg.interval, 0.05))


@dataclass
class _Progress:
    checked: float
    attempts: int = 0
    ok: int = 0
    last: str = "no answer yet"


@dataclass
class _Attempt:
    """One GET of the health URL, counted in ``state``: raises NotHealthy to be retried,
    SlotDied when the slot's process is gone."""

    url: str
    cfg: HealthConfig
    state: _Progress
    alive: Callable[[], bool] | None
    alive_every: float

    def __call__(self, client: httpx.Client) -> None:
        import httpx

        state, cfg = self.state, self.cfg
        state.attempts += 1
        try:
            response = client.get(self.url)
        except httpx.HTTPError as exc:
            state.ok = 0
            state.last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            # A failed attempt may mean the process is gone; ask (at most every alive_every s).
            now = time.monotonic()
            if self.alive is not None and now - state.checked >= self.alive_every:
                state.checked = now
                if not self.alive():
                    raise SlotDied(state.last) from exc
            raise NotHealthy(state.last) from exc
        if response.status_code != cfg.expect:
            state.ok = 0
            state.last = f"HTTP {response.status_code} (expected {cfg.expect})"
            raise NotHealthy(state.last)
        state.ok += 1
        state.last = f"HTTP {response.status_code}"
        if state.ok < cfg.successes:
            raise NotHealthy(f"{state.ok}/{cfg.successes} consecutive successes")


def _report(ok: bool, state: _Progress, started: float, died: bool = False) -> HealthReport:
    return HealthReport(
        healthy=ok,
        attempts=state.attempts,
        elapsed=time.monotonic() - started,
        last=state.last,
        died=died,
    )
