"""Errors across the parallel boundary, and values that reach shell (unit tier)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bluegreen import runners
from bluegreen.errors import (
    BgError,
    CommandError,
    ExitCode,
    HealthCheckError,
    HostFailures,
    LockHeldError,
    StaleLockError,
    SwitchError,
)
from bluegreen.host import Host
from bluegreen.layout import Layout
from bluegreen.releases import prune_script
from tests.fakes import fleet, make_config
from tests.test_runners import injected

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
CFG3 = make_config(hosts=("a", "b", "c"))


def fail_on(names: set[str], exc: BgError) -> Callable[[Host], str]:
    def fn(host: Host) -> str:
        if host.name in names:
            raise exc
        return f"ok {host.name}"
    return fn


# ----------------------------------------------------------------------------- Context.each


def test_each_one_host_returns_its_result() -> None:
    ctx, _ = fleet(make_config(), ("a",))
    assert ctx.each(lambda h: h.name.upper(), "noop") == {"a": "A"}


def test_each_many_hosts_returns_every_result() -> None:
    ctx, _ = fleet(CFG3, ("a", "b", "c"))
    assert ctx.each(lambda h: h.name * 2, "noop") == {"a": "aa", "b": "bb", "c": "cc"}


def test_each_from_the_main_thread_reuses_its_workers_until_close() -> None:
    """Steps share one pool: no threads started and joined per step (~2 ms of CPU per step
    of a 16-host deploy); close() ends them."""
    cfg = make_config(hosts=("a", "b", "c"), targets={"prod": {"hosts": ["a", "b", "c"],
                                                              "parallel": 3}})
    ctx, _ = fleet(cfg, ("a", "b", "c"))
    threads: set[threading.Thread] = set()
    for step in range(5):
        threads |= set(ctx.each(lambda h: threading.current_thread(), f"step {step}").values())
    assert 1 <= len(threads) <= 3  # a pool per step: at least one new thread each time
    ctx.close()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_each_inside_a_worker_gets_workers_of_its_own() -> None:
    """A step that runs ``each`` on every host from inside a worker: on the shared pool
    (one place per host, all taken by the outer step) it would wait forever; so it runs
    in a process of its own, which a hang cannot take down with the suite."""
    script = """
from tests.fakes import fleet, make_config
cfg = make_config(hosts=("a", "b"), targets={"prod": {"hosts": ["a", "b"], "parallel": 2}})
ctx, _ = fleet(cfg, ("a", "b"))
print(ctx.each(lambda h: ctx.each(lambda i: i.name, "inner"), "outer"))
ctx.close()
"""
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=30, cwd=REPO, check=True).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("each inside a worker waited for the pool its caller holds")
    assert out.strip() == str({"a": {"a": "a", "b": "b"}, "b": {"a": "a", "b": "b"}})


def test_fault_health_error_keeps_meaning_across_hosts() -> None:
    """Old code: Context.each wrapped every failure in a bare HostFailures, even for one
    host, so `except HealthCheckError` (ops/deploy.py) never fired."""
    for names in (("a",), ("a", "b")):
        ctx, _ = fleet(make_config(hosts=names), names)
        err = HealthCheckError("slot never became healthy", hint="traffic was not switched")
        try:
            ctx.each(fail_on(set(names), err), "health check")
        except HealthCheckError as exc:
            assert isinstance(exc, HostFailures)
            assert exc.exit_code == ExitCode.HEALTH
            assert exc.phase == "health check"
            assert set(exc.outcomes) == set(names)
        else:
            pytest.fail("HealthCheckError not raised")


def test_each_collects_every_host_error_before_raising_once() -> None:
    ctx, _ = fleet(CFG3, ("a", "b", "c"))
    ran: list[str] = []
    b_done = threading.Event()

    def fn(host: Host) -> None:
        if host.name == "a":
            raise HealthCheckError("a: unhealthy")  # fails first...
        if host.name == "b":
            b_done.wait(2)
        ran.append(host.name)  # ...yet every other host still runs to its end
        if host.name == "c":
            b_done.set()
            raise HealthCheckError("c: unhealthy")

    with pytest.raises(HealthCheckError) as info:
        ctx.each(fn, "health check")
    exc = info.value
    assert isinstance(exc, HostFailures)
    assert sorted(ran) == ["b", "c"]
    assert set(exc.errors) == {"a", "c"}
    assert exc.outcomes == {"a": "failed: a: unhealthy", "b": "health check: ok",
                            "c": "failed: c: unhealthy"}
    assert exc.message.startswith("health check failed on 2 of 3 hosts")
    assert exc.to_json()["hosts"] == exc.outcomes
    assert exc.to_json()["phase"] == "health check"


def test_each_mixed_errors_fall_back_to_their_common_class() -> None:
    ctx, _ = fleet(CFG3, ("a", "b", "c"))

    def fn(host: Host) -> None:
        if host.name == "a":
            raise HealthCheckError("a: unhealthy")
        if host.name == "b":
            raise CommandError("b: start failed")

    with pytest.raises(HostFailures) as info:
        ctx.each(fn, "start")
    assert not isinstance(info.value, (HealthCheckError, CommandError))
    assert info.value.exit_code == ExitCode.FAILED


def test_each_subclass_errors_keep_the_shared_parent() -> None:
    ctx, _ = fleet(CFG3, ("a", "b", "c"))

    def fn(host: Host) -> None:
        if host.name == "a":
            raise LockHeldError("a: held")
        if host.name == "b":
            raise StaleLockError("b: stale")

    with pytest.raises(LockHeldError) as info:
        ctx.each(fn, "taking the lock")
    assert not isinstance(info.value, StaleLockError)
    assert info.value.exit_code == ExitCode.LOCKED


@pytest.mark.parametrize("names", [("a",), ("a", "b", "c")])
def test_each_lets_a_bug_propagate_unwrapped(names: tuple[str, ...]) -> None:
    ctx, _ = fleet(make_config(hosts=names), names)

    def fn(host: Host) -> None:
        if host.name == "a":
            raise KeyError("a bug, not a host failure")

    with pytest.raises(KeyError):
        ctx.each(fn, "anything")


def test_each_interrupted_signals_the_running_hosts_and_waits_for_them() -> None:
    ctx, _ = fleet(CFG3, ("a", "b", "c"))
    done: list[str] = []

    def fn(host: Host) -> None:
        if host.name == "a":
            raise KeyboardInterrupt  # reaches the main thread through a's future
        if ctx.cancelled.wait(5):  # a health wait, cut short
            time.sleep(0.05)
            done.append(host.name)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ctx.each(fn, "health check")
    assert ctx.cancelled.is_set()
    assert "b" in done  # each returned only after the running workers gave up their waits
    assert time.monotonic() - started < 4


def test_failures_class_is_shared_and_catchable_by_both_names() -> None:
    one = HostFailures.of("switch", {"a": SwitchError("x")}, ["a"])
    two = HostFailures.of("switch", {"b": SwitchError("y")}, ["a", "b"])
    assert type(one) is type(two)
    assert isinstance(one, SwitchError) and isinstance(one, HostFailures)
    assert one.exit_code == ExitCode.SWITCH
    assert one.message == "x"  # one host: its own message, not a fleet summary


def test_attach_keeps_the_error_and_lists_the_secondary() -> None:
    err = HealthCheckError("unhealthy")
    err.attach(CommandError("a: releasing the lock failed (exit 1)"))
    assert err.exit_code == ExitCode.HEALTH
    assert err.to_json()["also"] == ["a: releasing the lock failed (exit 1)"]


# ----------------------------------------------------------------------------- shell values

HOSTILE = "1.0'; touch /tmp/bg-pwned; echo '"


def test_fault_prune_rejects_versions_read_from_a_host() -> None:
    """Old code: prune interpolated the versions read from state.json into the script."""
    with pytest.raises(ValueError, match="not a plain token"):
        prune_script(Layout("/srv/hello"), 3, ["1.0.0", HOSTILE])
    script = prune_script(Layout("/srv/hello"), 3, ["1.0.0", "2.0.0+b1"])
    assert "for p in 1.0.0 2.0.0+b1; do" in script


def _runner_scripts(runner: runners.Runner, slot: str) -> dict[str, str]:
    scripts = {
        "start": runner.start_script(slot, 4001, "1.0.0"),
        "stop": runner.stop_script(slot),
        "alive": runner.alive_script(slot),
        "eval": runner.eval_script(slot, "true"),
        "log": runner.log_script(slot, 20),
    }
    check = runner.check_script(slot)
    if check is not None:
        scripts["check"] = check
    return scripts


_RUNNERS_FIXED = hasattr(runners, "__path__")  # the runners package quotes every value


@pytest.mark.xfail(not _RUNNERS_FIXED, strict=True,
                   reason="fixed on branch `runners` (runners package); main's runners.py"
                   " still writes {slot} unquoted")
@pytest.mark.parametrize("kind", ["command", "elixir", "systemd"])
def test_fault_runner_scripts_quote_the_slot(kind: str, tmp_path: Path) -> None:
    """Old code: `{slot}` was placed unquoted in the runners' scripts."""
    extra = {"release_name": "hello"} if kind != "command" else {}
    cfg = make_config(tmp_path, app={"runner": kind, **extra})
    runner = runners.runner_for(cfg)
    slot = "blue$(echo > pwned)"
    try:
        scripts = _runner_scripts(runner, slot)
    except (ValueError, BgError):
        return  # refusing a slot that is not a plain token is as good as quoting it
    for what, script in scripts.items():
        assert not injected(script, tmp_path), f"{kind} {what} script runs the slot: {script}"
    assert "echo > pwned" in scripts["start"]  # the slot is there, quoted
