"""What every operation shares: the hosts of a target, parallel work over them, the lock
session and step reporting (the result objects live in bluegreen/results.py)."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bluegreen.config import Config, TargetConfig
from bluegreen.errors import BgError, ConfigError, HostFailures
from bluegreen.host import Host, LocalHost
from bluegreen.layout import Layout
from bluegreen.ops.tier import NginxTier, open_tier
from bluegreen.results import HostOutcome, OperationResult, StepTiming
from bluegreen.runners import Runner, runner_for

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")
_FROM_TARGET: Any = object()  # Context's tier when none is given

# The result types are re-exported: operations import them from here.
__all__ = ["HostOutcome", "OperationResult", "StepTiming"]


class Reporter(Protocol):
    def step_done(self, title: str, seconds: float, ok: bool, note: str) -> None: ...

    def info(self, text: str) -> None: ...


class SilentReporter:
    def step_done(self, title: str, seconds: float, ok: bool, note: str) -> None:
        pass

    def info(self, text: str) -> None:
        pass


@dataclass
class Context:
    """Built once from the parsed command line; owns the host connections."""

    config: Config
    target: TargetConfig
    hosts: list[Host]
    reporter: Reporter = field(default_factory=SilentReporter)
    retire: bool | None = None  # command-line override of [switch] retire
    steps: list[StepTiming] = field(default_factory=list)
    # Set on Ctrl-C/SIGTERM: long waits in worker threads (health gates) stop early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Where nginx runs (on ``hosts``, or on load balancers in front of them); by default
    # the target's, opened here.
    tier: NginxTier = _FROM_TARGET
    # The worker threads of ``each`` from the main thread, kept for the operation.
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        if self.tier is _FROM_TARGET:
            self.tier = open_tier(self.config, self.target)

    @functools.cached_property
    def paths(self) -> Layout:
        return Layout(self.config.app.root)

    @functools.cached_property
    def runner(self) -> Runner:
        return runner_for(self.config, bind=self.tier.bind)

    @property
    def should_retire(self) -> bool:
        return self.config.switch.retire if self.retire is None else self.retire

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """Time a step; the yielded list collects a short note ("3 attempts")."""
        note: list[str] = []
        started = time.monotonic()
        try:
            yield note
        except BaseException:
            self._done(title, started, False, note)
            raise
        self._done(title, started, True, note)

    def _done(self, title: str, started: float, ok: bool, note: list[str]) -> None:
        timing = StepTiming(title, time.monotonic() - started, ok, ", ".join(note))
        self.steps.append(timing)
        self.reporter.step_done(timing.title, timing.seconds, ok, timing.note)

    def each(self, fn: Callable[[Host], T], what: str, hosts: Sequence[Host] | None = None
             ) -> dict[str, T]:
        """Run ``fn`` on every host, ``parallel`` at a time; collect every error, raise once."""
        hosts = list(self.hosts if hosts is None else hosts)
        results: dict[str, T] = {}
        errors: dict[str, BaseException] = {}
        if len(hosts) == 1:
            try:
                results[hosts[0].name] = fn(hosts[0])
            except BgError as exc:
                errors[hosts[0].name] = exc
        else:
            pool, own = self._workers(len(hosts))
            try:
                futures = {h.name: pool.submit(fn, h) for h in hosts}
                for name, fut in futures.items():
                    try:
                        results[name] = fut.result()
                    except BgError as exc:
                        errors[name] = exc
            except BaseException:
                # Ctrl-C / SIGTERM lands here (main thread): ask the workers to give up
                # their waits, drop queued hosts, and wait for the running ones to return.
                self.cancelled.set()
                if not own:
                    self._pool = None
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            if own:
                pool.shutdown(wait=True)
        if errors:
            raise HostFailures.of(what, errors, [h.name for h in hosts])
        return results

    def _workers(self, count: int) -> tuple[ThreadPoolExecutor, bool]:
        """The pool for one ``each`` and whether that call owns it (shuts it down). Steps
        asked from the main thread share one pool of ``parallel`` threads for the whole
        operation: starting and joining 16 threads per step cost ~2 ms of CPU each time,
        ~1 ms per host of a deploy. An ``each`` inside a worker gets a pool of its own (on
        the shared one it could wait for a place its own caller holds)."""
        from concurrent.futures import ThreadPoolExecutor  # one host runs inline

        if threading.current_thread() is not threading.main_thread():
            workers = max(1, min(self.target.parallel, count))
            return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bg-host"), True
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.target.parallel),
                                            thread_name_prefix="bg-host")
        return self._pool, False

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for h in self.hosts:
            h.close()
        self.tier.close()

    def outcomes(self, outcome: str | dict[str, str]) -> tuple[HostOutcome, ...]:
        return tuple(
            HostOutcome(
                h.name,
                outcome if isinstance(outcome, str) else outcome.get(h.name, "unchanged"),
                h.commands_run,
            )
            for h in self.hosts
        )


def select_hosts(target: TargetConfig, patterns: Sequence[str]) -> tuple[str, ...]:
    """The target's hosts matching any of ``patterns`` (exact names or shell globs), in
    target order; a pattern that matches nothing is an error naming the hosts there are."""
    if not patterns:
        return target.hosts
    names = target.hosts or ("local",)
    chosen: set[str] = set()
    for pattern in patterns:
        hit = {n for n in names if fnmatch.fnmatchcase(n, pattern)
               or fnmatch.fnmatchcase(n.rsplit("@", 1)[-1], pattern)}
        if not hit:
            raise ConfigError(
                f"--hosts {pattern!r} matches no host of target {target.name!r}",
                hint="hosts there: " + ", ".join(names),
            )
        chosen |= hit
    return tuple(n for n in names if n in chosen)


def open_hosts(
    config: Config, target: TargetConfig, *, accept_new_host_keys: bool = False,
    only: Sequence[str] = (),
) -> list[Host]:
    """Connections to the target's hosts (all, or those matching ``only``)."""
    if target.is_local:
        select_hosts(target, only)
        return [LocalHost()]
    from bluegreen.ssh import SshHost

    policy = "accept-new" if accept_new_host_keys else target.host_key_policy
    specs = select_hosts(target, only)
    return [
        SshHost(
            spec,
            identity_file=target.identity_file,
            known_hosts=target.known_hosts,
            host_key_policy=policy,  # type: ignore[arg-type]
            connect_timeout=target.connect_timeout,
        )
        for spec in specs
    ]


def prefetch(*modules: str) -> None:
    """Import ``modules`` on a thread while the operation's first round trip waits (a
    subprocess or SSH wait releases the GIL): jinja2 for the upstream file, httpx and
    tenacity for the health gate. An import that fails here fails again, loudly, where it
    is used. Not a daemon: an operation refused at once (a rollback while a canary runs)
    would otherwise exit with the thread still importing, which can crash the interpreter
    as it finalizes; the exit waits for the imports instead (tens of ms at most)."""
    if not modules:  # a switch with the built-in template: nothing to start
        return

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=load, name="bg-prefetch").start()
