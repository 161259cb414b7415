"""Issue 18's smaller cases, unit tier: the summary's total, status during an operation,
history per operation, pruning by what was live, and `bg check` on a stopped nginx."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bluegreen.ops import deploy as ops
from bluegreen.ops.core import OperationResult
from bluegreen.results import StatusResult
from tests.fakes import deployed, fleet, make_artifact, make_config

pytestmark = pytest.mark.unit


def test_the_reported_total_includes_the_artifact_check(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen import artifact

    real = artifact.inspect

    def slow(*args: object, **kwargs: object) -> artifact.Artifact:
        time.sleep(0.1)  # a large release: reading and hashing it takes a while
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact, "inspect", slow)
    cfg = make_config()
    ctx, _ = fleet(cfg, state=deployed("1.0.0", "blue"), alive=("blue",))
    result = ops.deploy(ctx, make_artifact(tmp_path, "2.0.0"))
    assert isinstance(result, OperationResult)
    steps = sum(s.seconds for s in result.steps)
    assert result.steps[0].title == "check artifact" and result.steps[0].seconds >= 0.1
    assert result.seconds >= steps, (result.seconds, steps)
    assert f"in {result.seconds:.2f}s" in result.summary


# ------------------------------------------------------------------ (a) status mid-operation


def _mid_deploy(*, holder_alive: bool = True) -> tuple[StatusResult, object]:
    """A host as a healthy deploy of 2.0.0 leaves it while the new slot boots: green
    running 2.0.0, state still naming 1.0.0 on blue, the lock held by the deploy."""
    import os

    from bluegreen import lock
    from bluegreen.ops import admin

    cfg = make_config()
    ctx, (host,) = fleet(cfg, state=deployed("1.0.0", "blue"), alive=("blue", "green"))
    host.model.links["green"] = "2.0.0"
    holder = lock.holder_info("deploy 2.0.0")
    if not holder_alive:
        holder["pid"], holder["started"] = 2**22 + 1, "1"
    assert holder["pid"] == os.getpid() or not holder_alive
    host.model.lock = holder
    return admin.status(ctx), host


def test_status_during_a_healthy_deploy_is_no_problem() -> None:
    data, _ = _mid_deploy()
    assert data.ok is True, data
    h = data.hosts[0]
    assert h.problems == ()
    assert h.in_progress is not None and "deploy 2.0.0" in h.in_progress
    assert any("green runs 2.0.0" in n for n in h.transient)


def test_status_after_an_interrupted_deploy_is_a_problem() -> None:
    data, _ = _mid_deploy(holder_alive=False)
    assert data.ok is False and data.to_json()["ok"] is False
    problems = data.hosts[0].problems
    assert any("green runs 2.0.0" in p for p in problems), problems
    assert any("interrupted operation" in p for p in problems), problems


# ------------------------------------------------------------------ (f) history


def test_the_user_is_a_name_without_a_terminal_or_USER(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import pwd

    from bluegreen.host import controller_identity

    def no_tty() -> str:
        raise OSError("no controlling terminal")

    monkeypatch.setattr(os, "getlogin", no_tty)
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("LOGNAME", raising=False)
    assert controller_identity()["user"] == pwd.getpwuid(os.getuid()).pw_name


def _entry(t: str, op: str, step: str, outcome: str, pid: int = 7, **kw: object
           ) -> dict[str, object]:
    return {"time": f"2026-12-03T06:50:{t}+00:00", "op": op, "step": step, "outcome": outcome,
            "user": "ann", "controller": "laptop", "pid": pid, **kw}


def test_history_is_one_line_per_operation() -> None:
    from bluegreen.history import operations

    entries = [
        _entry("00.000", "deploy", "begin", "ok", command="deploy 2.0.0"),
        _entry("00.100", "deploy", "plan", "intent", version="2.0.0"),
        _entry("01.000", "deploy", "health", "ok", version="2.0.0"),
        _entry("02.500", "deploy", "done", "ok", version="2.0.0"),
        _entry("10.000", "deploy", "begin", "ok", pid=8, command="deploy 3.0.0"),
        _entry("10.100", "deploy", "plan", "intent", pid=8, version="3.0.0"),
        _entry("16.600", "deploy", "health", "failed", pid=8, version="3.0.0"),
        _entry("16.700", "deploy", "failed", "error", pid=8, message="never became healthy"),
        _entry("20.000", "rollback", "begin", "ok", pid=9, command="rollback"),
        _entry("20.300", "rollback", "done", "ok", pid=9, version="1.0.0"),
    ]
    ops = operations(entries)
    assert [(o.op, o.version, o.outcome, o.seconds, o.user, o.controller)
            for o in ops] == [
        ("deploy", "2.0.0", "ok", 2.5, "ann", "laptop"),
        ("deploy", "3.0.0", "failed", 6.7, "ann", "laptop"),
        ("rollback", "1.0.0", "ok", 0.3, "ann", "laptop"),
    ]
    assert ops[1].message == "never became healthy"


def test_history_drops_an_operation_the_window_cut() -> None:
    from bluegreen.history import operations

    entries = [_entry("01.000", "deploy", "health", "ok", version="2.0.0"),
               _entry("02.500", "deploy", "done", "ok", version="2.0.0"),
               _entry("03.000", "switch", "begin", "ok", pid=8),
               _entry("03.200", "switch", "done", "ok", pid=8, version="1.0.0")]
    assert [o.op for o in operations(entries, cut=True)] == ["switch"]
    assert [o.op for o in operations(entries)] == ["deploy", "switch"]


# ------------------------------------------------------------------ (e) pruning


def _releases(tmp: Path, names: list[str]) -> Path:
    """Release directories, oldest first (mtimes a minute apart)."""
    import os

    root = tmp / "srv"
    for i, name in enumerate(names):
        d = root / "releases" / name
        d.mkdir(parents=True)
        os.utime(d, (1_700_000_000 + 60 * i,) * 2)
    (root / "bg").mkdir()
    return root


def _sh(script: str) -> str:
    import subprocess

    return subprocess.run(["/bin/sh", "-c", script], check=True, capture_output=True,
                          text=True).stdout


def test_prune_drops_never_live_releases_first_and_keeps_the_last_live(tmp_path: Path) -> None:
    from bluegreen.layout import Layout
    from bluegreen.releases import mark_live_script, parse_pruned, prune_script

    root = _releases(tmp_path, ["1.0.0", "2.0.0", "3.0.0", "4.0.0-bad", "5.0.0-bad",
                                "6.0.0-bad"])
    paths = Layout(str(root))
    for v in ("1.0.0", "2.0.0", "3.0.0"):  # each went live in its turn
        _sh(mark_live_script(paths, [v]))
    # 3.0.0 live on blue; the failed 6.0.0 is what the idle green slot points at.
    out = _sh(prune_script(paths, 3, ["3.0.0", "6.0.0-bad"]))
    assert sorted(parse_pruned(out)) == ["4.0.0-bad", "5.0.0-bad"]
    assert sorted(p.name for p in (root / "releases").iterdir()) == [
        "1.0.0", "2.0.0", "3.0.0", "6.0.0-bad"]


def test_prune_keeps_the_most_recently_live_first(tmp_path: Path) -> None:
    import time as clock

    from bluegreen.layout import Layout
    from bluegreen.releases import mark_live_script, parse_pruned, prune_script

    root = _releases(tmp_path, ["1.0.0", "2.0.0", "3.0.0", "4.0.0"])
    paths = Layout(str(root))
    for v in ("1.0.0", "2.0.0", "3.0.0", "4.0.0", "1.0.0"):  # a rollback to 1.0.0 last
        _sh(mark_live_script(paths, [v]))
        clock.sleep(0.02)
    out = _sh(prune_script(paths, 2, ["1.0.0"]))
    assert sorted(parse_pruned(out)) == ["2.0.0", "3.0.0"]
    assert not (root / "bg" / "lived" / "2.0.0").exists()  # its mark goes with it


def test_prune_without_marks_keeps_the_newest_as_before(tmp_path: Path) -> None:
    from bluegreen.layout import Layout
    from bluegreen.releases import parse_pruned, prune_script

    root = _releases(tmp_path, ["1.0.0", "2.0.0", "3.0.0"])
    out = _sh(prune_script(Layout(str(root)), 2, []))
    assert parse_pruned(out) == ["1.0.0"]


# ------------------------------------------------------------------ (b) check, nginx stopped


def test_check_with_nginx_stopped_says_so_not_other_masters() -> None:
    from bluegreen.facts import check as checks
    from tests.test_check import GOOD, cfg

    # Debian's nginx stopped (it removes /run/nginx.pid); another program runs its own.
    out = GOOD.replace("pid=100\nnginx: master process /usr/sbin/nginx", "pid=\n").replace(
        "  100 nginx: master process /usr/sbin/nginx",
        "  4242 nginx: master process /opt/gitlab/embedded/sbin/nginx -p /var/opt/gitlab/nginx")
    master = next(ln for ln in checks.evaluate(cfg(), "w", out, marker="@@", local=False)
                  if ln.name == "nginx master")
    assert master.status == "fail"
    assert "nginx is not running" in master.detail, master.detail
    assert "start nginx" in master.hint and "pid_file" not in master.hint, master.hint


def test_check_finds_this_configurations_master_without_its_pid_file() -> None:
    from bluegreen.facts import check as checks
    from tests.test_check import GOOD, cfg

    out = GOOD.replace("pid=100\nnginx: master process /usr/sbin/nginx", "pid=\n").replace(
        "  100 nginx: master process /usr/sbin/nginx",
        "  100 nginx: master process /usr/sbin/nginx -g daemon on; master_process on;\n"
        "  4242 nginx: master process nginx -p /tmp/other -c conf/nginx.conf")
    master = next(ln for ln in checks.evaluate(cfg(), "w", out, marker="@@", local=False)
                  if ln.name == "nginx master")
    assert master.status == "fail"
    assert "100" in master.detail and "4242" not in master.detail, master.detail
    assert "pid_file" in master.hint


# ------------------------------------------------------------------ (c) before `bg setup`


def test_check_before_setup_says_run_bg_setup() -> None:
    from bluegreen.facts import check as checks
    from tests.test_check import GOOD, cfg

    # The site is included, the upstream file it proxies to is not there yet.
    out = GOOD.replace("rc=0", "rc=1\nnginx: [emerg] host not found in upstream"
                       ' "shop_live" in /etc/nginx/sites-enabled/shop:6').replace(
        "# configuration file /etc/nginx/conf.d/shop.bluegreen.conf:\n", "") + \
        "@@ upstream-file\nmissing\n"
    lines = {ln.name: ln for ln in checks.evaluate(cfg(), "w", out, marker="@@", local=False)}
    assert lines["nginx -t"].status == "fail"
    assert "bg setup" in lines["nginx -t"].hint, lines["nginx -t"]
    assert lines["upstream included"].status == "warn"
    assert "bg setup" in lines["upstream included"].hint


def test_check_with_the_upstream_file_there_says_nothing_of_setup() -> None:
    from bluegreen.facts import check as checks
    from tests.test_check import GOOD, cfg

    lines = checks.evaluate(cfg(), "w", GOOD + "@@ upstream-file\npresent\n", marker="@@",
                            local=False)
    assert all(ln.status == "ok" and "bg setup" not in ln.hint for ln in lines), lines


def test_init_says_setup_comes_before_including_the_site(tmp_path: Path) -> None:
    from bluegreen.scaffold import SITE_NAME, scaffold

    # Not this machine's nginx: its sites (e.g. Debian's default_server) add a hint first.
    nginx_dir = tmp_path / "etc-nginx"
    result = scaffold(tmp_path, app="shop", runner="command", force=False,
                      nginx_dir=nginx_dir, listening=set())
    steps = result.hints[0]
    assert steps.index("bg setup") < steps.index(f"include {SITE_NAME}") \
        < steps.index(f"{nginx_dir}/sites-enabled/") < steps.index("bg check"), steps


# ------------------------------------------------------------------ bg remove (engine)


def test_remove_finds_the_sites_that_use_the_upstream() -> None:
    from bluegreen import teardown
    from bluegreen.accesslog import format_directive

    upstream = ('upstream my_shop_live {\n    server 127.0.0.1:4001;\n}\n'
                'map "" $my_shop_slot {\n    default "blue";\n}\n'
                + format_directive("my-shop"))
    ups, variables = teardown.defined_names(upstream)
    assert (ups, variables) == (("my_shop_live",), ("my_shop_slot",))
    formats = teardown.defined_formats(upstream)
    assert formats == {"my_shop_bg": format_directive("my-shop").strip()}
    dump = ("# configuration file /etc/nginx/conf.d/my-shop.bluegreen.conf:\n"
            "upstream my_shop_live {\n"
            "# configuration file /etc/nginx/sites-enabled/shop:\n"
            "        proxy_pass http://my_shop_live;\n"
            "        add_header X-BG-Slot $my_shop_slot always;\n"
            "# configuration file /etc/nginx/sites-enabled/other:\n"
            "        # proxy_pass http://my_shop_live;\n"
            "        proxy_pass http://my_shop_live2;\n"
            "        set $x ${my_shop_slot}x;\n"
            "# configuration file /etc/nginx/sites-enabled/logs:\n"
            "    access_log /srv/my-shop/logs/nginx-access.log my_shop_bg;\n")
    uses = teardown.parse_references(dump, (*ups, *formats), variables,
                                     "/etc/nginx/conf.d/my-shop.bluegreen.conf")
    assert uses == {"/etc/nginx/sites-enabled/shop": ["my_shop_live", "$my_shop_slot"],
                    "/etc/nginx/sites-enabled/other": ["$my_shop_slot"],
                    "/etc/nginx/sites-enabled/logs": ["my_shop_bg"]}
    stand_in = teardown.stand_in(make_config(), ups, variables, formats)
    # a site logging in the app's format stays valid (nginx: unknown log format)
    assert format_directive("my-shop").strip() in stand_in.splitlines()
    assert "upstream my_shop_live { server 127.0.0.1:14001; }" in stand_in
    assert 'map "" $my_shop_slot { default "removed"; }' in stand_in
    assert "return 503" in stand_in


def test_the_observation_carries_nginx_s_verdict_on_the_configuration_as_it_is() -> None:
    from bluegreen.facts.observe import parse_observation

    m = "@@bg-00"
    broken = parse_observation(f"{m} state\n{m} nginx-test\nrc=1\nnginx: [emerg] unknown"
                               ' directive "locaton" in /etc/nginx/sites-enabled/x:3\n'
                               "nginx: configuration file /etc/nginx/nginx.conf test failed\n",
                               m)
    assert broken.nginx_error is not None and '"locaton"' in broken.nginx_error
    assert parse_observation(f"{m} state\n{m} nginx-test\nrc=0\n\n", m).nginx_error is None
    assert parse_observation(f"{m} state\n", m).nginx_error is None  # not asked for
    silent = parse_observation(f"{m} state\n{m} nginx-test\nrc=127\n\n", m)
    assert silent.nginx_error == "the test command exited 127"


def test_the_tests_free_ports_are_never_handed_out_twice() -> None:
    # A workspace takes nginx's port and both slots' before anything listens: a port free at
    # each call must still not come back (CI once gave nginx and green the same port).
    from tests.helpers import free_port
    ports = [free_port(29970, 29999) for _ in range(20)]
    assert len(set(ports)) == 20
