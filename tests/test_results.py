"""Typed results rendered by the CLI alone, the lock's with_lock, and the runner protocol that
keeps runner names inside bluegreen/runners/ (issue 20)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bluegreen import lock
from bluegreen.cli.options import GlobalOptions
from bluegreen.cli.output import envelope
from bluegreen.cli.render import lock_release_lines, status_lines
from bluegreen.config.schema import RUNNERS as CONFIG_RUNNERS
from bluegreen.errors import CommandError, HealthCheckError, LockHeldError
from bluegreen.layout import Layout
from bluegreen.results import (
    SCHEMA_VERSION,
    HostStatus,
    LbStatus,
    LockReleaseResult,
    NginxStatus,
    SlotStatus,
    StatusResult,
)
from bluegreen.runners import RUNNERS, runner_for
from tests.fakes import fleet, make_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
RELEASE = r"rm -rf '?/srv/hello/bg/lock'?$"


# ----------------------------------------------------------------------------- results


def _host(name: str, *, live: str = "blue", problems: tuple[str, ...] = ()) -> HostStatus:
    slot = SlotStatus(port=4001, version="1.0.0", release="1.0.0", running=True, healthy=True,
                      live=True)
    return HostStatus(host=name, live=live, version="1.0.0", previous=None, updated_at="",
                      slots={"blue": slot}, nginx=NginxStatus("blue", 4001, "blue"), lock=None,
                      interrupted=None, in_progress=None, transient=(), problems=problems)


def test_the_envelope_carries_its_schema_version() -> None:
    opts = GlobalOptions.merge({}, {}, command="status", environ={})
    doc = envelope(opts, result={"x": 1})
    assert doc == {"schema": SCHEMA_VERSION, "ok": True, "command": "status",
                   "result": {"x": 1}}
    assert SCHEMA_VERSION == 1


def test_status_json_keeps_its_keys_and_counts_load_balancer_problems() -> None:
    lb = LbStatus("lb1", ("10.0.0.1:4001",), None, ("nginx does not answer with X-BG-Slot",))
    result = StatusResult(app="hello", target="prod", hosts=(_host("a"),), balancers=(lb,),
                          has_balancers=True)
    doc = result.to_json()
    assert list(doc) == ["app", "target", "hosts", "lbs", "diverged", "divergence", "ok"]
    assert list(doc["hosts"][0]) == [
        "host", "live", "version", "previous", "updated_at", "slots", "nginx", "lock",
        "interrupted", "in_progress", "transient", "problems"]
    assert doc["hosts"][0]["slots"]["blue"] == {
        "port": 4001, "version": "1.0.0", "release": "1.0.0", "running": True,
        "healthy": True, "live": True}
    # A load balancer's problem is the status's problem: JSON and exit code agree.
    assert doc["ok"] is False and result.problems == [
        "lb1: nginx does not answer with X-BG-Slot"]


def test_status_renders_divergence_and_problems_from_the_typed_result() -> None:
    result = StatusResult(app="hello", target="prod", hosts=(
        _host("a"), _host("b", live="green", problems=("live slot green is not running",))))
    assert result.diverged and result.divergence == "a: blue (1.0.0), b: green (1.0.0)"
    text = "\n".join(status_lines(result))
    assert "a: live blue (1.0.0), previous -" in text
    assert "  problem: live slot green is not running" in text
    assert "canary" not in result.to_json()


def test_lock_release_is_one_value_for_text_and_json() -> None:
    result = LockReleaseResult({"a": True, "b": False})
    assert result.to_json() == {"hosts": {"a": "released", "b": "was not locked"}}
    assert lock_release_lines(result) == ["a: released", "b: was not locked"]


def test_only_the_cli_prints_or_shapes_json() -> None:
    """Operations return values; printing and JSON belong to bluegreen/cli/."""
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "bluegreen" / "ops").glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bprint\(|json\.dumps\(", line)
    ]
    assert offenders == []


# ----------------------------------------------------------------------------- with_lock


def test_with_lock_holds_every_host_and_releases_after() -> None:
    ctx, hosts = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    with lock.with_lock(ctx.each, ctx.hosts, ctx.paths, "setup") as held:
        assert [(h.model.lock or {}).get("command") for h in hosts] == ["setup", "setup"]
        assert len(held.hosts) == 2
    assert all(h.model.lock is None and h.sent(RELEASE) for h in hosts)


def test_with_lock_is_all_or_none_and_never_runs_the_block() -> None:
    ctx, (a, b) = fleet(make_config(hosts=("a", "b")), ("a", "b"))
    b.model.lock = {"user": "bob", "controller": "elsewhere.example", "pid": 1,
                    "command": "deploy 9", "time": "2026-01-01T00:00:00+00:00"}
    ran = []
    with pytest.raises(LockHeldError) as info, lock.with_lock(ctx.each, ctx.hosts, ctx.paths,
                                                               "setup"):
        ran.append(1)
    assert ran == [] and "b: another bg operation holds the lock" in info.value.message
    assert a.model.lock is None and a.sent(RELEASE)  # the lock taken was given back
    assert b.model.lock is not None and not b.sent(RELEASE)  # bob's lock stays


def test_with_lock_releases_when_the_block_fails_and_keeps_its_error() -> None:
    ctx, (a,) = fleet(make_config(), ("a",))
    a.on(RELEASE, (1, "rm: cannot remove: Permission denied"))
    with pytest.raises(HealthCheckError) as info, lock.with_lock(ctx.each, ctx.hosts,
                                                                  ctx.paths, "x"):
        raise HealthCheckError("the block failed")
    assert info.value.message == "the block failed"
    assert "releasing the lock" in info.value.secondary[0].message
    a.rules.clear()
    a.model.lock = None  # the failed release left it: gone by hand
    with pytest.raises(CommandError):  # no error of the block's own: the release's is raised
        a.on(RELEASE, (1, "no"))
        with lock.with_lock(ctx.each, ctx.hosts, ctx.paths, "x"):
            pass


# ----------------------------------------------------------------------------- runners


def _config(tmp_path: Path, runner: str) -> Any:
    from bluegreen import config

    app: dict[str, Any] = {"name": "hello", "root": "/srv/hello", "runner": runner}
    app.update({"command": "bin/server"} if runner == "command" else {"release_name": "hello"})
    return config.parse({"app": app, "nginx": {"upstream_file": "/etc/nginx/conf.d/h.conf"}},
                        tmp_path / "bluegreen.toml")


def test_every_runner_the_config_accepts_has_an_implementation(tmp_path: Path) -> None:
    assert set(RUNNERS) == set(CONFIG_RUNNERS)
    for name in RUNNERS:
        runner = runner_for(_config(tmp_path, name))
        assert runner.name == name
        assert isinstance(runner.setup_script(), str)


def test_a_runner_says_where_its_log_is_and_what_setup_installs(tmp_path: Path) -> None:
    command = runner_for(_config(tmp_path, "command"))
    assert command.log_source("green").path == Layout("/srv/hello").log("green")
    assert command.setup_script() == "" and command.setup_files() == ()
    assert command.teardown_script() == ""
    elixir = runner_for(_config(tmp_path, "elixir"))
    assert "/srv/hello/shared/cookie" in elixir.setup_script()
    systemd = runner_for(_config(tmp_path, "systemd"))
    assert systemd.log_source("green").unit == "hello@green.service"
    (unit,) = systemd.setup_files()
    assert b"ExecStart=" in unit.data and "/etc/systemd/system/hello@.service" in unit.install
    assert "PORT=%s" in systemd.setup_script() and "4002" in systemd.setup_script()
    assert "rm -f /etc/systemd/system/hello@.service" in systemd.teardown_script()


def test_no_runner_name_outside_the_runners_package() -> None:
    """What differs between runners is asked of the runner (bluegreen/runners/), never
    decided by comparing its name; the config's schema lists the names it accepts."""
    # The config's schema and validation name the runners they accept; `bg init` writes the
    # `command` key only for the command runner.
    allowed = {"bluegreen/config/schema.py", "bluegreen/config/__init__.py",
               "bluegreen/scaffold.py"}
    pattern = re.compile(r"""runner\s*[!=]=\s*["'](command|elixir|systemd)["']""")
    offenders = [
        f"{rel}:{n}"
        for path in sorted((REPO / "bluegreen").rglob("*.py"))
        if not (rel := str(path.relative_to(REPO))).startswith("bluegreen/runners/")
        and rel not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_the_runners_setup_and_teardown_quote_the_root(tmp_path: Path, kind: str) -> None:
    import dataclasses
    import shlex
    import subprocess

    hostile = "/srv/my app;$(touch /tmp/pwned)'"
    cfg = _config(tmp_path, kind)
    cfg = dataclasses.replace(cfg, app=dataclasses.replace(cfg.app, root=hostile))
    runner = runner_for(cfg)
    scripts = [runner.setup_script(), runner.teardown_script(),
               *(f.install for f in runner.setup_files())]
    for script in scripts:
        assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
        assert "$(touch" not in script.replace(shlex.quote(hostile)[1:-1], "")
    if kind != "command":
        assert shlex.quote(f"{hostile}/shared/cookie") in runner.setup_script()
