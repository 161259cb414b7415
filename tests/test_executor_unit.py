"""The executor and its steps against fake hosts: switch, finish, health gate, hooks,
interrupts, dry run (unit tier)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluegreen import nginx
from bluegreen.artifact import sha256_file
from bluegreen.errors import (
    BgError,
    CommandError,
    ExitCode,
    HealthCheckError,
    HookError,
    HostFailures,
    Interrupted,
    SlotDiedError,
    StateError,
    SwitchError,
)
from bluegreen.host import CommandResult
from bluegreen.ops import deploy as ops
from bluegreen.ops.core import Context, OperationResult
from bluegreen.ops.deploy import DryRun
from bluegreen.ops.plan import Action
from bluegreen.state import HostState
from tests.fakes import FakeHost, deployed, fleet, journal_outcomes, make_artifact, make_config

pytestmark = pytest.mark.unit

TWO = ("a", "b")
STAGE = r"\.conf\.bg-tmp"  # phase one: stage and test (in the round trip that starts the slot)
COMMIT = r"the staged upstream file is gone"  # phase two: swap in the staged file, reload
RELOAD = r"old-workers:"  # only the commit's reload lists nginx's old workers
FINISH = r"state\.json\.tmp.* && mv -f .*state\.json"  # the finish records the state


def two_hosts(trace: list[tuple[str, str]] | None = None, **sections: Any
              ) -> tuple[Context, list[FakeHost]]:
    """Two hosts with 1.0.0 live and running on blue, green idle."""
    cfg = make_config(hosts=TWO, **sections)
    return fleet(cfg, TWO, state=deployed("1.0.0", "blue"), alive=("blue",), trace=trace)


def deploy(ctx: Context, tmp: Path, version: str = "2.0.0") -> OperationResult:
    result = ops.deploy(ctx, make_artifact(tmp, version))
    assert isinstance(result, OperationResult)
    return result


def assert_untouched(hosts: list[FakeHost]) -> None:
    """Traffic where it was, the new slot stopped, the lock released."""
    for h in hosts:
        assert h.upstream_slot == "blue" and h.model.backup is None, h.name
        assert h.model.staged is None, h.name  # a staged upstream never outlives its operation
        assert h.model.serving == "blue", h.name
        assert h.model.alive == {"blue"}, h.name
        assert h.model.state is not None and h.model.state.live == "blue", h.name
        assert h.model.lock is None, h.name


# ----------------------------------------------------------------------------- happy path


def test_deploy_two_hosts_switches_both_and_retires_the_old_slot(tmp_path: Path) -> None:
    ctx, hosts = two_hosts()
    result = deploy(ctx, tmp_path)
    assert result.summary.startswith("deployed hello 2.0.0 on green on 2 hosts")
    for h in hosts:
        assert h.model.state == HostState(live="green", versions={"blue": "1.0.0",
                                          "green": "2.0.0"}, previous="1.0.0",
                                          updated_at=h.model.state.updated_at if h.model.state
                                          else "")
        assert h.model.serving == "green" and h.model.alive == {"green"}
        assert h.model.backup is None and h.model.lock is None
        assert h.files["/srv/hello/bg/uploads/2.0.0.tar.gz"].startswith(b"\x1f\x8b")
        assert h.journal_steps() == [
            ("begin", "ok"), ("plan", "intent"), ("upload", "ok"), ("start", "ok"),
            ("health", "ok"), ("switch", "intent"), ("switch", "ok"), ("finish", "ok"),
            ("done", "ok")]
    assert [o.outcome for o in result.hosts] == ["ship, start, gate, switch: blue -> green"] * 2


def test_journal_is_written_ahead_of_the_step_it_precedes(tmp_path: Path) -> None:
    ctx, (a, _) = two_hosts()
    deploy(ctx, tmp_path)
    # The upload's entry reaches the host in front of the start script, not in a trip of
    # its own: a crash during the start still leaves "upload ok" on the host.
    carrier = [s for s in a.scripts if '"step": "upload"' in s]
    assert len(carrier) == 1 and "setsid" in carrier[0]
    assert carrier[0].index('"step": "upload"') < carrier[0].index("setsid")


def test_switch_stages_every_host_before_committing_any(tmp_path: Path) -> None:
    trace: list[tuple[str, str]] = []
    ctx, _ = two_hosts(trace)
    deploy(ctx, tmp_path)
    stages = [i for i, (_, s) in enumerate(trace) if ".conf.bg-tmp" in s]
    commits = [i for i, (_, s) in enumerate(trace) if "the staged upstream file is gone" in s]
    assert len(stages) == 2 and len(commits) == 2
    assert max(stages) < min(commits)


# ----------------------------------------------------------------------------- switch


def test_nginx_test_failure_on_one_host_switches_none(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()
    b.nginx_test_exit = 1
    with pytest.raises(SwitchError) as info:
        deploy(ctx, tmp_path)
    err = info.value
    assert isinstance(err, HostFailures) and err.exit_code == ExitCode.SWITCH
    assert err.phase == "start"  # staged and tested in the round trip that starts the slot
    assert err.outcomes["a"] == "start: ok"
    assert err.outcomes["b"].startswith("failed: b: nginx rejected the new upstream")
    assert "fake test failure" in err.detail
    for h in (a, b):
        assert h.sent(STAGE) and not h.sent(COMMIT) and h.model.reloads == 0
        assert journal_outcomes(h, "stop") == ["ok"]
    assert_untouched([a, b])


def test_commit_failure_on_one_host_restores_and_reloads_the_other(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()
    b.on(RELOAD, (1, "nginx: [error] reload failed"))
    with pytest.raises(SwitchError) as info:
        deploy(ctx, tmp_path)
    assert info.value.exit_code == ExitCode.SWITCH
    assert "b: reloading nginx" in info.value.message
    assert a.model.reloads == 2  # the switch, then the restore
    restore = a.bodies[a.bodies.index(a.sent(RELOAD)[0]) + 1]
    assert nginx.abort_script(ctx.config) in restore
    assert ctx.config.nginx.reload_command in restore
    assert_untouched([a, b])
    assert journal_outcomes(a, "switch") == ["intent", "restored"]


def test_fault_switch_error_keeps_per_host_outcomes(tmp_path: Path) -> None:
    """Old code: `isinstance(exc, SwitchError)` in ops/steps.py was never true, so the
    per-host outcomes of a failed switch were lost."""
    ctx, (_, b) = two_hosts()
    b.on(RELOAD, (1, "nginx: [error] reload failed"))
    with pytest.raises(SwitchError) as info:
        deploy(ctx, tmp_path)
    err = info.value
    assert isinstance(err, HostFailures)
    assert err.outcomes["a"] == "switch: ok"
    assert err.outcomes["b"].startswith("failed: b: reloading nginx")


def test_confirm_failure_keeps_per_host_outcomes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx, "confirm", functools.partial(nginx.confirm, timeout=0.2))
    ctx, (a, b) = two_hosts()
    b.probe = lambda request: httpx.Response(200, headers={
        nginx.SLOT_HEADER: "blue", nginx.APP_HEADER: "hello"})
    with pytest.raises(SwitchError) as info:
        deploy(ctx, tmp_path)
    err = info.value
    assert isinstance(err, HostFailures) and err.phase == "switch"
    assert err.outcomes["a"] == "switch: ok"
    assert "nginx did not send traffic to green" in err.outcomes["b"]
    assert "from slot 'blue', expected 'green'" in err.detail
    assert a.model.reloads == 2 and b.model.reloads == 2
    assert_untouched([a, b])


# ----------------------------------------------------------------------------- finish


def test_finish_records_the_state_first(tmp_path: Path) -> None:
    ctx, (a, _) = two_hosts()
    deploy(ctx, tmp_path)
    (script,) = a.sent(FINISH)
    # the last stop of blue: the drain itself may stop it early (bluegreen.retire)
    order = [script.rindex(part) for part in (
        "/srv/hello/bg/state.json.tmp", nginx.discard_backup_script(ctx.config),
        "echo drained", "/srv/hello/run/blue.pid", 'echo "pruned: $r"')]
    assert order == sorted(order)


def test_finish_state_write_failure_says_recording_the_state(tmp_path: Path) -> None:
    ctx, (_, b) = two_hosts()
    b.on(FINISH, (90, ""))
    with pytest.raises(CommandError) as info:
        deploy(ctx, tmp_path)
    assert "b: recording the state failed (exit 90)" in info.value.message


def test_finish_retire_failure_names_the_slot(tmp_path: Path) -> None:
    ctx, (_, b) = two_hosts()
    b.on(FINISH, (91, "kill: permission denied"))
    with pytest.raises(CommandError) as info:
        deploy(ctx, tmp_path)
    assert "b: stopping blue failed (exit 91)" in info.value.message


def _drain_timeout(host: FakeHost, script: str) -> CommandResult:
    r = host.emulate(script)
    return CommandResult(script, r.exit_code, r.stdout.replace("drained", "drain-timeout"), "")


def _pruned(host: FakeHost, script: str) -> CommandResult:
    r = host.emulate(script)
    return CommandResult(script, r.exit_code, r.stdout + "pruned: 0.8\npruned: 0.9\n", "")


def test_finish_notes_a_drain_timeout_and_parses_prune_output(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()
    a.on(FINISH, _drain_timeout)
    b.on(FINISH, _pruned)
    result = deploy(ctx, tmp_path)
    (warning,) = [w for w in result.warnings if "drain_timeout" in w]
    # the host, the setting and the cause (nothing was stopped early: not sockets)
    assert warning.startswith("a: nginx's old workers outlived [switch] drain_timeout (1s):"
                              " requests nginx was still reading kept them"), warning
    (finish,) = [s for s in result.steps if s.title.startswith("record state")]
    assert "a: drain timed out after 1s" in finish.note
    assert "pruned 0.8, 0.9" in finish.note


# ----------------------------------------------------------------------------- health gate


def test_fault_failed_health_gate_is_journaled_with_exit_3(tmp_path: Path) -> None:
    """Old code: the `except HealthCheckError` around the gate never fired (the error came
    wrapped), so the journal never said "health failed" and the exit code was not 3."""
    ctx, (a, b) = two_hosts()
    b.health["green"] = 503
    with pytest.raises(HealthCheckError) as info:
        deploy(ctx, tmp_path)
    err = info.value
    assert err.exit_code == ExitCode.HEALTH
    assert isinstance(err, HostFailures) and err.phase == "health check"
    assert err.outcomes["a"] == "health check: ok"
    assert "HTTP 503 (expected 200)" in err.outcomes["b"]
    for h in (a, b):
        assert journal_outcomes(h, "health") == ["failed"]
        assert journal_outcomes(h, "stop") == ["ok"]
        stopped = r"read -r pid < /srv/hello/run/green.pid; .*\nif alive \"\$pid\"; then bg_left"
        assert h.sent(stopped)
        assert not h.sent(COMMIT)
    assert_untouched([a, b])


def test_a_slot_that_dies_fails_the_gate_with_its_log(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts(health={"deadline": 3})
    b.health["green"] = lambda request: (_ for _ in ()).throw(
        httpx.ConnectError("refused", request=request))
    b.on(r"^tail -n 20", (0, "** (RuntimeError) boom\n"))
    b.on(lambda s: s.endswith(ctx.runner.alive_script("green")), (1, ""))
    with pytest.raises(HealthCheckError) as info:
        deploy(ctx, tmp_path)
    assert "its process exited" in info.value.message
    assert "** (RuntimeError) boom" in info.value.detail
    assert_untouched([a, b])


def test_a_new_slot_dying_right_after_the_switch_switches_back(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()

    def dies_once_live(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if b.model.serving == "green" else 200)

    b.health["green"] = dies_once_live
    with pytest.raises(SlotDiedError) as info:
        deploy(ctx, tmp_path)
    assert info.value.exit_code == ExitCode.SWITCH
    assert "b: green (2.0.0) stopped answering right after the switch" in info.value.message
    for h in (a, b):
        assert h.model.reloads == 2  # to green, then back to blue
        assert journal_outcomes(h, "verify") == ["failed"]
        assert not h.sent(FINISH)  # blue never retired, no state recorded
    assert_untouched([a, b])


# ----------------------------------------------------------------------------- hooks


def test_failing_before_switch_hook_aborts_with_nothing_switched(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts(hooks={"before_switch": ["./bin/check-migrations"]})
    b.on("check-migrations", (1, "pending migration"))
    with pytest.raises(HookError) as info:
        deploy(ctx, tmp_path)
    err = info.value
    assert err.exit_code == ExitCode.HOOK
    assert "hook before_switch `./bin/check-migrations` failed" in err.message
    assert "nothing was switched" in err.hint
    for h in (a, b):
        assert not h.sent(COMMIT) and h.model.reloads == 0
        assert journal_outcomes(h, "hook") == ["failed"]
    assert_untouched([a, b])


def test_failing_after_switch_hook_switches_back_with_rollback_on_failure(
        tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts(hooks={"after_switch": ["./bin/smoke"],
                                   "rollback_on_failure": True})
    a.on("bin/smoke", (1, "smoke test failed"))
    with pytest.raises(HookError) as info:
        deploy(ctx, tmp_path)
    assert info.value.message.endswith("rolled back (rollback_on_failure)")
    for h in (a, b):
        assert h.model.reloads == 2  # to green, then back to blue
        assert journal_outcomes(h, "switch") == ["intent", "ok", "intent", "ok"]
    assert_untouched([a, b])  # blue was never retired: retiring comes after the hooks


def test_failing_after_switch_hook_without_rollback_is_a_warning(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts(hooks={"after_switch": ["./bin/smoke"]})
    a.on("bin/smoke", (1, "smoke test failed"))
    result = deploy(ctx, tmp_path)
    assert any(w.startswith("hook after_switch failed") for w in result.warnings)
    assert a.model.serving == "green" and b.model.serving == "green"


def test_hooks_get_the_operation_in_their_environment(tmp_path: Path) -> None:
    ctx, (a, _) = two_hosts(hooks={"before_start": ["./bin/prepare"]})
    deploy(ctx, tmp_path)
    (script,) = a.sent("bin/prepare")
    for line in ("export BG_VERSION=2.0.0", "export BG_SLOT=green", "export BG_PORT=4002",
                 "export BG_PREVIOUS_VERSION=1.0.0", "export BG_OPERATION=deploy",
                 "export BG_HOSTS='a b'"):
        assert line in script


# ----------------------------------------------------------------------------- interrupts


def test_interrupt_during_boot_stops_what_started_and_releases_the_lock(
        tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()

    def ctrl_c(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    a.health["green"] = ctrl_c
    with pytest.raises(Interrupted) as info:
        deploy(ctx, tmp_path)
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert "traffic stays where it was" in info.value.message
    for h in (a, b):
        assert journal_outcomes(h, "failed") == ["error"]
    assert_untouched([a, b])


def test_failure_runs_the_on_failure_hooks(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts(hooks={"on_failure": ["./bin/page-someone"]})
    b.health["green"] = 500
    with pytest.raises(HealthCheckError):
        deploy(ctx, tmp_path)
    assert a.sent("page-someone") and b.sent("page-someone")


# ----------------------------------------------------------------------------- dry run


def test_fault_dry_run_takes_no_lock_and_creates_nothing(tmp_path: Path) -> None:
    """Old code: --dry-run took the lock and created the host's directories."""
    ctx, hosts = two_hosts()
    result = ops.deploy(ctx, make_artifact(tmp_path), dry_run=True)
    assert isinstance(result, DryRun)
    assert [h.action for h in result.plan.hosts] == [Action.SHIP, Action.SHIP]
    assert "nothing was touched" in result.lines(ctx)[0]
    diff = result.diffs["a"].splitlines()
    assert "-    server 127.0.0.1:4001;" in diff and "+    server 127.0.0.1:4002;" in diff
    for h in hosts:
        assert len(h.scripts) == 1, h.scripts  # the read-only observation, nothing else
        (script,) = h.scripts
        assert "@@bg-" in script
        assert "mkdir" not in script and "rm " not in script and "mv " not in script
        # no file written (`ls -l`'s " -> " is read, not written)
        assert ">" not in re.sub(r"\d?>\s*/dev/null|\d?>&\d| -> ", "", script)
        assert h.model.lock is None and h.model.journal == []
        assert h.files == {}


def test_dry_run_rollback_and_switch_touch_nothing() -> None:
    cfg = make_config(hosts=TWO)
    ctx, hosts = fleet(cfg, TWO, state=deployed("2.0.0", "green", idle="1.0.0"),
                       alive=("blue", "green"))
    back = ops.rollback(ctx, dry_run=True)
    flip = ops.switch(ctx, dry_run=True)
    assert isinstance(back, DryRun) and isinstance(flip, DryRun)
    assert back.plan.version == "1.0.0"
    assert [h.slot for h in flip.plan.hosts] == ["blue", "blue"]
    for h in hosts:
        assert len(h.scripts) == 2 and all("mkdir" not in s for s in h.scripts)
        assert h.model.lock is None


# ----------------------------------------------------------------------------- hostile state


def test_hostile_version_in_state_is_refused_before_anything_changes(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()
    hostile = "1.0'; touch /tmp/bg-pwned; echo '"
    b.model.state = HostState(live="blue", versions={"blue": "1.0.0", "green": hostile})
    b.model.links = {"blue": "1.0.0"}
    with pytest.raises(StateError) as info:
        deploy(ctx, tmp_path)
    assert "b:" in info.value.message
    assert_untouched([a])
    assert not a.sent(COMMIT) and not b.sent(COMMIT)


# ----------------------------------------------------------------------------- failpoints


@pytest.mark.parametrize("boundary", ["locked", "uploaded", "healthy", "staged", "reloaded"])
def test_failpoint_before_the_switch_completes_leaves_traffic_alone(
        boundary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_FAILPOINT", f"{boundary}:error")
    ctx, hosts = two_hosts()
    with pytest.raises(BgError, match=f"failpoint {boundary} reached"):
        deploy(ctx, tmp_path)
    assert_untouched(hosts)
    for h in hosts:
        assert journal_outcomes(h, "failed") == ["error"]


def test_sigterm_at_a_step_boundary_is_an_interrupt(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_FAILPOINT", "staged:term")
    ctx, hosts = two_hosts()
    with pytest.raises(Interrupted):
        deploy(ctx, tmp_path)
    assert_untouched(hosts)


# ----------------------------------------------------------------------------- other operations


def test_rollback_to_a_warm_slot_only_switches() -> None:
    cfg = make_config(hosts=TWO)
    ctx, hosts = fleet(cfg, TWO, state=deployed("2.0.0", "green", idle="1.0.0"),
                       alive=("blue", "green"))
    result = ops.rollback(ctx)
    assert isinstance(result, OperationResult)
    assert result.summary.startswith("rolled back to hello 1.0.0 on blue on 2 hosts")
    for h in hosts:
        assert not h.sent("setsid")  # warm: nothing started
        assert h.model.serving == "blue" and h.model.alive == {"blue"}
        assert h.model.state is not None and h.model.state.live_version == "1.0.0"
        assert h.model.state.previous == "2.0.0"


def test_switch_only_nginx_test_failure_restores_every_host_and_reloads_none() -> None:
    cfg = make_config(hosts=TWO)
    ctx, (a, b) = fleet(cfg, TWO, state=deployed("2.0.0", "green", idle="1.0.0"),
                        alive=("blue", "green"))
    b.nginx_test_exit = 1
    with pytest.raises(SwitchError) as info:
        ops.rollback(ctx)
    err = info.value
    assert isinstance(err, HostFailures) and err.phase == "nginx test"
    assert err.outcomes == {"a": "nginx test: ok", "b": err.outcomes["b"]}
    assert err.outcomes["b"].startswith("failed: b: nginx rejected the new upstream")
    for h in (a, b):
        assert h.sent_text(nginx.abort_script(cfg))  # every prepared host restored
        assert h.model.staged is None and h.model.reloads == 0 and not h.sent(COMMIT)
        assert h.model.serving == "green" and h.upstream_slot == "green"
        assert h.model.alive == {"blue", "green"} and h.model.lock is None
        assert journal_outcomes(h, "switch") == ["intent", "aborted"]


def test_a_release_already_on_the_host_is_started_not_shipped(tmp_path: Path) -> None:
    ctx, (a, b) = two_hosts()
    art = make_artifact(tmp_path)
    a.model.releases["2.0.0"] = sha256_file(art)
    result = ops.deploy(ctx, art)
    assert isinstance(result, OperationResult)
    assert a.files == {} and b.files  # only b needed the upload
    assert [o.outcome for o in result.hosts] == ["start, gate, switch: blue -> green",
                                                 "ship, start, gate, switch: blue -> green"]
    assert a.model.serving == b.model.serving == "green"


def test_deploying_what_is_live_and_healthy_does_nothing(tmp_path: Path) -> None:
    ctx, hosts = two_hosts()
    art = make_artifact(tmp_path, "1.0.0")
    for h in hosts:
        h.model.releases["1.0.0"] = sha256_file(art)  # the very build that is live
    result = ops.deploy(ctx, art)
    assert isinstance(result, OperationResult)
    assert result.summary == "hello 1.0.0 is already live on every host: nothing to do"
    for h in hosts:
        assert h.model.reloads == 0 and not h.sent("setsid") and h.files == {}
        assert h.model.lock is None


def test_a_single_host_switch_stages_tests_and_reloads_in_one_round_trip() -> None:
    cfg = make_config()
    ctx, (a,) = fleet(cfg, ("a",), state=deployed("2.0.0", "green", idle="1.0.0"),
                      alive=("blue", "green"))
    result = ops.switch(ctx)
    assert isinstance(result, OperationResult)
    (commit,) = a.sent(COMMIT)
    assert re.search(STAGE, commit) and commit.index(".bg-tmp") < commit.index("old-workers:")
    assert not [s for s in a.sent(STAGE) if s is not commit]  # no separate stage round trip
    assert a.model.serving == "blue" and a.commands_run == 3  # lock, stage + reload, finish


def test_a_single_host_switch_rejected_by_nginx_reloads_nothing() -> None:
    cfg = make_config()
    ctx, (a,) = fleet(cfg, ("a",), state=deployed("2.0.0", "green", idle="1.0.0"),
                      alive=("blue", "green"))
    a.nginx_test_exit = 1
    with pytest.raises(SwitchError) as info:
        ops.switch(ctx)
    assert "nginx rejected the new upstream" in info.value.message
    assert "fake test failure" in info.value.detail
    assert a.model.reloads == 0 and a.model.staged is None
    assert a.model.serving == "green" and a.upstream_slot == "green" and a.model.lock is None
    assert journal_outcomes(a, "switch") == ["intent", "aborted"]


def test_an_undone_switch_drains_the_workers_it_abandoned_before_stopping(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restoring reload leaves workers of the new configuration behind, still proxying
    to the new slot: the undo waits for them before it stops that slot."""
    monkeypatch.setattr(nginx, "confirm", functools.partial(nginx.confirm, timeout=0.2))
    ctx, (_, b) = two_hosts()
    b.old_workers = [4242]
    b.probe = lambda request: httpx.Response(200, headers={
        nginx.SLOT_HEADER: "blue", nginx.APP_HEADER: "hello"})
    with pytest.raises(SwitchError):
        deploy(ctx, tmp_path)
    (stop,) = [s for s in b.sent(r"rm -f /srv/hello/run/green\.pid") if "4242" in s]
    assert stop.index("for p in 4242") < stop.index("kill -s TERM")
    assert b.model.serving == "blue" and "green" not in b.model.alive


def _sockets_stopped(host: FakeHost, script: str) -> CommandResult:
    """The retire stopped blue early (sockets held nginx's old workers past socket_grace),
    without seeing the workers' sockets, and blue ignored its SIGTERM."""
    r = host.emulate(script)
    return CommandResult(script, r.exit_code, "open: 3 - 600\nstop: killed after 30s\n"
                         + r.stdout, "")


def test_finish_says_what_the_socket_aware_retire_did(tmp_path: Path) -> None:
    ctx, (a, _) = two_hosts()
    a.on(FINISH, _sockets_stopped)
    result = deploy(ctx, tmp_path)
    (finish,) = [s for s in result.steps if s.title.startswith("record state")]
    assert ("a: 3 connections still open on blue after 0.6s (socket_grace 0.5s): asked blue"
            " to shut down (nginx's workers are another user's") in finish.note, finish.note
    assert ("a: blue did not exit on SIGTERM: killed after 30s ([app] stop_timeout); its"
            " sockets were reset, not closed") in result.warnings, result.warnings
