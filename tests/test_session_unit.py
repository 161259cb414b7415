"""Session against fake hosts: the all-or-none lock, takeover, release, journal, reconcile,
recovery (unit tier)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from bluegreen import lock
from bluegreen.errors import (
    BgError,
    CommandError,
    ExitCode,
    HealthCheckError,
    HostFailures,
    LockHeldError,
    StaleLockError,
)
from bluegreen.facts.observe import Observation
from bluegreen.ops.admin import status
from bluegreen.ops.reconcile import reconcile
from bluegreen.ops.session import Session
from tests.fakes import FakeHost, Recorder, deployed, fleet, journal_outcomes, make_config

pytestmark = pytest.mark.unit

CFG = make_config(hosts=("a", "b", "c"))
RELEASE = r"rm -rf '?/srv/hello/bg/lock'?$"


def dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def holder(*, controller: str | None = None, pid: int | None = None,
           command: str = "deploy 9.9.9") -> dict[str, Any]:
    return {"user": "bob", "controller": controller or "elsewhere.example",
            "pid": pid if pid is not None else 4242, "started": "123", "command": command,
            "time": "2026-01-01T00:00:00.000+00:00"}


def lock_with(host: FakeHost, who: dict[str, Any]) -> None:
    host.model.lock = who


# ----------------------------------------------------------------------------- the lock


def test_session_locks_observes_and_releases_every_host() -> None:
    ctx, hosts = fleet(CFG, ("a", "b", "c"), state=deployed("1.0.0"), alive=("blue",))
    with Session(ctx, "deploy 2.0.0", version="2.0.0") as session:
        assert [(h.model.lock or {}).get("command") for h in hosts] == ["deploy 2.0.0"] * 3
        assert {n: s.live for n, s in session.states.items()} == dict.fromkeys("abc", "blue")
        assert session.observed["a"].alive == {"blue": True, "green": False}
        assert all(len(h.scripts) == 1 for h in hosts)  # lock + observe: one round trip
    assert all(h.model.lock is None for h in hosts)
    assert all(h.sent(RELEASE) for h in hosts)


def test_one_host_held_by_a_live_holder_releases_every_lock_taken() -> None:
    ctx, (a, b, c) = fleet(CFG, ("a", "b", "c"))
    lock_with(b, holder())
    with pytest.raises(LockHeldError) as info, Session(ctx, "deploy 2.0.0"):
        pytest.fail("entered a session with one host locked by someone else")
    assert not isinstance(info.value, StaleLockError)
    assert info.value.exit_code == ExitCode.LOCKED
    assert "bob@elsewhere.example pid 4242 running `deploy 9.9.9`" in info.value.message
    assert a.model.lock is None and c.model.lock is None  # taken, then released
    assert a.sent(RELEASE) and c.sent(RELEASE)
    assert b.model.lock == holder()  # never ours: left alone
    assert not b.sent(RELEASE)


def test_a_provably_dead_holder_is_taken_over_and_journaled() -> None:
    ctx, (a, b, c) = fleet(CFG, ("a", "b", "c"))
    dead = holder(controller=socket.gethostname(), pid=dead_pid(), command="deploy 1.5.0")
    lock_with(b, dead)
    with Session(ctx, "deploy 2.0.0"):
        assert b.model.lock is not None and b.model.lock["pid"] == os.getpid()
        assert len(b.sent("taken-")) == 1
    takeover = [e for e in b.model.journal if e["step"] == "lock"]
    assert [e["outcome"] for e in takeover] == ["taken over"]
    assert takeover[0]["interrupted"] == "deploy 1.5.0"
    assert f"pid {dead['pid']}" in takeover[0]["dead_holder"]
    assert b.model.lock is None
    assert not a.sent("taken-") and not c.sent("taken-")


def test_another_controllers_holder_is_never_taken_over() -> None:
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    # Its pid does not exist *here*, which says nothing about the machine it runs on.
    lock_with(b, holder(controller="elsewhere.example", pid=dead_pid()))
    with pytest.raises(LockHeldError), Session(ctx, "switch"):
        pass
    assert not b.sent("taken-")
    assert b.model.lock is not None and b.model.lock["controller"] == "elsewhere.example"
    assert a.model.lock is None


def test_losing_a_takeover_race_is_lock_held() -> None:
    ctx, (a,) = fleet(make_config(), ("a",))
    dead = holder(controller=socket.gethostname(), pid=dead_pid())
    lock_with(a, dead)
    winner = holder(command="deploy 3.0.0")
    a.on("taken-", (lock.LOCKED_EXIT, json.dumps(winner)))
    with pytest.raises(LockHeldError) as info, Session(ctx, "deploy 2.0.0"):
        pass
    assert "deploy 3.0.0" in info.value.message


def test_a_failing_lock_script_is_an_error_and_releases_the_others() -> None:
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    b.on(r"if mkdir", (1, "mkdir: Read-only file system"))
    with pytest.raises(CommandError) as info, Session(ctx, "rollback"):
        pass
    assert "b: taking the lock failed" in info.value.message
    assert a.model.lock is None and a.sent(RELEASE)
    assert b.sent(RELEASE)  # its lock script may have made the directory: released too


# ----------------------------------------------------------------------------- __exit__


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses taken (a failed release is tried once more after one), none really waited:
    the fake hosts answer at once."""
    taken: list[float] = []
    monkeypatch.setattr(time, "sleep", taken.append)
    return taken


def test_fault_lock_release_failure_does_not_replace_the_operation_error(
        pauses: list[float]) -> None:
    """Old code: a failing release in Session.__exit__ raised its own HostFailures, which
    replaced the operation's error and its exit code."""
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    b.on(RELEASE, (1, "rm: cannot remove: Permission denied"))
    with pytest.raises(HealthCheckError) as info, Session(ctx, "deploy 2.0.0"):
        raise HealthCheckError("b: green never became healthy")
    err = info.value
    assert err.exit_code == ExitCode.HEALTH
    assert err.message == "b: green never became healthy"
    assert len(err.secondary) == 1
    assert "releasing the lock" in err.secondary[0].message
    assert err.to_json()["also"] == [err.secondary[0].message]
    assert a.model.lock is None  # the other host's lock was still released
    assert len(pauses) == 1 and b.sent(RELEASE)  # tried again after a pause


def test_lock_release_failure_is_raised_when_the_operation_succeeded(
        pauses: list[float]) -> None:
    ctx, (a,) = fleet(make_config(), ("a",))
    a.on(RELEASE, (1, "rm: cannot remove: Permission denied"))
    with pytest.raises(CommandError) as info, Session(ctx, "switch"):
        pass
    assert isinstance(info.value, HostFailures)
    assert "releasing the lock" in info.value.message
    assert len(pauses) == 1


def test_lock_release_failure_never_hides_an_interrupt(pauses: list[float]) -> None:
    ctx, (a,) = fleet(make_config(), ("a",))
    a.on(RELEASE, (1, "no"))
    with pytest.raises(KeyboardInterrupt), Session(ctx, "switch"):
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------- journal


def test_journal_entries_ride_in_front_of_the_next_script() -> None:
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    with Session(ctx, "switch") as session:
        session.record("upload", "ok", ("a",), version="2.0.0")
        assert a.model.journal == []  # nothing sent yet: no extra round trip
        session.run(a, "echo next-step")
        script = a.scripts[-1]
        assert script.startswith("printf '%s' ")
        assert script.index('"step": "upload"') < script.index("echo next-step")
        assert [(e["step"], e.get("version")) for e in a.model.journal] == [
            ("begin", None), ("upload", "2.0.0")]
        session.run(a, "echo again")
        assert a.scripts[-1] == "echo again"  # handed over once
        session.run(b, "echo other")
        assert '"step": "upload"' not in b.scripts[-1]  # recorded for a only
        assert b.scripts[-1].endswith("echo other")
        session.record("done", "ok")
    # What is still pending travels with the release.
    assert journal_outcomes(a, "done") == ["ok"] and journal_outcomes(b, "done") == ["ok"]
    release = a.scripts[-1]
    assert release.endswith(lock.release_script(ctx.paths))
    assert release.startswith("printf '%s' ") and '"step": "done"' in release
    entry = a.model.journal[-1]
    assert {"time", "op", "user", "controller", "pid"} <= set(entry)
    assert entry["op"] == "switch"


# ----------------------------------------------------------------------------- reconcile


def test_upstream_file_wins_over_recorded_state() -> None:
    state = deployed("2.0.0", "blue", idle="1.0.0")  # recorded: blue live
    ctx, (a,) = fleet(make_config(), ("a",), state=state, upstream_slot="green",
                      alive=("blue", "green"))
    with Session(ctx, "switch") as session:
        assert session.states["a"].live == "green"
        assert session.states["a"].live_version == "1.0.0"
        assert any("taking green as live" in n for n in session.notes["a"])
    assert journal_outcomes(a, "reconcile") == ["corrected"]


def test_a_backup_upstream_file_is_undone_on_entry() -> None:
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"),
                        state=deployed("1.0.0", "blue", idle="0.9.0"), alive=("blue",))
    # Killed after staging green on a: the live file says green, the backup says blue.
    a.model.backup, a.model.upstream = a.model.upstream, a.render("green")
    with Session(ctx, "switch") as session:
        assert session.states["a"].live == "blue"
        assert a.model.backup is None and a.upstream_slot == "blue"
        assert a.model.reloads == 1 and a.model.serving == "blue"
        assert b.model.reloads == 0  # nothing to undo there
    assert journal_outcomes(a, "recover") == ["ok"]
    assert isinstance(ctx.reporter, Recorder)
    assert any("undid an interrupted switch" in i for i in ctx.reporter.infos)


def test_reconcile_pure_cases() -> None:
    cfg = make_config()
    host = FakeHost("a", cfg)
    recorded = deployed("2.0.0", "blue", idle="1.0.0")
    green = host.render("green")
    obs = Observation(upstream=green, links={"blue": "2.0.0", "green": "1.0.0"},
                      alive={"blue": True, "green": True})
    rec = reconcile(cfg, recorded, obs)
    assert rec.state.live == "green" and not rec.undo_switch
    backup = Observation(upstream=green, backup=host.render("blue"),
                         links={"blue": "2.0.0", "green": "1.0.0"})
    rec = reconcile(cfg, recorded, backup)
    assert rec.undo_switch and rec.state.live == "blue"
    hostile = Observation(links={"blue": "x;reboot", "green": None})
    rec = reconcile(cfg, recorded, hostile)
    assert rec.state.versions["blue"] == "2.0.0"
    assert any("not a release bg made" in n for n in rec.notes)


def test_hosts_disagreeing_on_live_is_a_state_error() -> None:
    cfg = make_config(hosts=("a", "b"))
    a = FakeHost("a", cfg, state=deployed("1.0.0", "blue"))
    b = FakeHost("b", cfg, state=deployed("2.0.0", "green", idle="1.0.0"))
    ctx, _ = fleet(cfg, ())
    ctx.hosts = [a, b]
    with Session(ctx, "migrate") as session, pytest.raises(BgError) as info:
        session.common_live()
    assert "hosts disagree about what is live" in info.value.message
    assert a.model.lock is None and b.model.lock is None


def test_status_reports_what_nginx_serves_and_an_interrupted_operation() -> None:
    cfg = make_config(hosts=("a", "b"))
    ctx, (a, b) = fleet(cfg, ("a", "b"), state=deployed("2.0.0", "blue", idle="1.0.0"),
                        alive=("blue", "green"))
    a.model.upstream, a.model.serving = a.render("green"), "green"  # killed before recording
    lock_with(b, holder(controller=socket.gethostname(), pid=dead_pid(), command="switch"))
    report = status(ctx)
    ha, hb = report.hosts
    assert ha.live == "green" and ha.nginx.serving == "green"
    assert any("taking green as live" in p for p in ha.problems)
    assert hb.interrupted == "switch"
    assert any("interrupted operation: `switch`" in p for p in hb.problems)
    assert report.diverged and not report.ok
    assert all(len(h.scripts) == 1 for h in (a, b))  # one read-only round trip each
    assert b.model.lock is not None  # status never takes over or clears a lock
