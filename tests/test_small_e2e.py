"""Issue 18's smaller cases end to end on this machine: real nginx, the sample app, the
real CLI (status during a deploy, history per operation, pruning, `bg remove`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, bg_argv


def _background(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(bg_argv(*args, config=ws.config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_status_during_a_healthy_deploy_exits_0_and_says_in_progress(
        workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    deploying = _background(ws, "deploy", str(build_sample(tmp_path / "art", "2.0.0",
                                                           boot_delay=2.0)))
    try:
        deadline = time.monotonic() + 10
        while (ws.root / "slots" / "green").resolve().name != "2.0.0":
            assert time.monotonic() < deadline, "green never pointed at 2.0.0"
            time.sleep(0.02)
        time.sleep(0.2)  # the slot's process is up, not yet healthy
        status = ws.bg("status", check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "in progress: " in status.stdout, status.stdout
        assert "running `deploy 2.0.0`" in status.stdout
        assert "green runs 2.0.0" in status.stdout
        assert "problem" not in status.stdout
    finally:
        _, err = deploying.communicate(timeout=60)
    assert deploying.returncode == 0, err
    after = ws.bg("status")
    assert "in progress" not in after.stdout


def test_history_is_a_line_per_operation_with_the_user_name(workspace: Workspace,
                                                            tmp_path: Path) -> None:
    import os
    import pwd

    ws = workspace
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME")}
    for version in ("1.0.0", "2.0.0"):  # as cron or CI runs it: no terminal, no $USER
        subprocess.run(bg_argv("deploy", str(build_sample(tmp_path / "art", version)),
                               config=ws.config), env=env, check=True,
                       capture_output=True, start_new_session=True)
    ws.bg("switch")
    out = ws.bg("history").stdout.splitlines()
    assert out[0] == "local:"
    lines = out[1:]
    assert len(lines) == 3, out
    me = pwd.getpwuid(os.getuid()).pw_name
    for line, (op, version) in zip(lines, [("deploy", "1.0.0"), ("deploy", "2.0.0"),
                                           ("switch", "1.0.0")], strict=True):
        words = line.split()
        assert words[2:5] == [op, version, "ok"], line
        assert words[5].endswith("s") and float(words[5][:-1]) > 0, line
        assert words[6].startswith(f"{me}@"), line
    data = json.loads(ws.bg("--json", "history", "-n", "1").stdout)["result"]["local"]
    assert [(o["op"], o["outcome"]) for o in data] == [("switch", "ok")]
    steps = json.loads(ws.bg("--json", "history", "--steps").stdout)["result"]["local"]
    assert {e["step"] for e in steps} >= {"begin", "plan", "health", "done"}


def test_prune_drops_failed_releases_before_good_ones(workspace: Workspace, tmp_path: Path
                                                      ) -> None:
    ws = workspace  # keep_releases = 3
    art = tmp_path / "art"
    ws.bg("deploy", str(build_sample(art, "1.0.0")))
    ws.bg("deploy", str(build_sample(art, "2.0.0")))
    ws.config.write_text(ws.config.read_text().replace("deadline = 15.0", "deadline = 1.0"))
    for bad in ("2.1.0", "2.2.0", "2.3.0"):  # each fails its health gate
        proc = ws.bg("deploy", str(build_sample(art, bad, health_status=500)), check=False)
        assert proc.returncode == 3, proc.stderr
    ws.bg("deploy", str(build_sample(art, "3.0.0")))
    kept = sorted(p.name for p in (ws.root / "releases").iterdir())
    # 2.3.0 is what the slot 3.0.0 replaced pointed at: never pruned in that same deploy.
    assert kept == ["1.0.0", "2.0.0", "2.3.0", "3.0.0"], kept
    ws.bg("rollback")  # to 2.0.0: a release that served is there to go back to
    assert ws.get().text.startswith("hello 2.0.0")


def test_check_with_nginx_stopped_says_nginx_is_not_running(stock: Workspace,
                                                            tmp_path: Path) -> None:
    from bluegreen.sandbox.nginx import NginxServer
    from tests.helpers import free_port

    ws = stock
    other = NginxServer(prefix=tmp_path / "other-nginx", listen=f"127.0.0.1:{free_port()}",
                        app="other")
    other.render()
    (other.prefix / "sites" / "other.conf").unlink()  # no app behind it: an nginx of its own
    other.start()  # another program's nginx keeps running on this machine
    try:
        ws.nginx.stop()
        proc = ws.bg("--json", "check", check=False)
        checks = json.loads(proc.stdout)["result"]["checks"]
        master = next(c for c in checks if c["check"] == "nginx master")
        assert master["status"] == "fail"
        assert master["detail"].startswith("nginx is not running"), master
        assert "start nginx" in master["hint"]
        assert "pid_file" not in master["hint"]
    finally:
        other.stop()


@pytest.mark.nginx
def test_check_before_setup_says_to_run_setup(tmp_path: Path) -> None:
    import shutil

    from tests.helpers import make_workspace, need

    need(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(), "no nginx")
    ws = make_workspace(tmp_path)  # the site is included; `bg setup` has not run yet
    proc = ws.bg("check", check=False)
    assert proc.returncode == 2
    out = proc.stdout
    assert "FAIL" in out and "nginx -t" in out
    assert "hint: run `bg setup`: it writes" in out, out
    ws.bg("setup")
    checks = json.loads(ws.bg("--json", "check", check=False).stdout)["result"]["checks"]
    test = next(c for c in checks if c["check"] == "nginx -t")
    assert test["status"] == "ok"
    assert all("bg setup" not in c["hint"] for c in checks), checks


def test_a_config_broken_before_the_deploy_is_refused_before_anything_changes(
        workspace: Workspace, tmp_path: Path) -> None:
    import os
    import signal

    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), "--keep-old")  # blue warm
    upstream = ws.upstream()
    blue_pid = (ws.root / "run" / "blue.pid").read_text()
    broken = ws.nginx.prefix / "conf.d" / "zz-typo.conf"
    broken.write_text("server { listen 127.0.0.1:1; locaton / { } }\n")  # the user's typo
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "3.0.0")), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "nginx's configuration is already broken" in proc.stderr, proc.stderr
    assert "zz-typo.conf" in proc.stderr and "locaton" in proc.stderr
    assert "new upstream" not in proc.stderr
    assert not (ws.root / "releases" / "3.0.0").exists()  # nothing shipped, nothing started
    assert (ws.root / "slots" / "blue").resolve().name == "1.0.0"
    assert (ws.root / "run" / "blue.pid").read_text() == blue_pid
    assert ws.upstream() == upstream and not (ws.root / "bg" / "lock").exists()
    # To a warm slot, the stage's own test refuses (no `nginx -t` in the lock's round trip).
    for op in ("switch", "rollback"):
        again = ws.bg(op, check=False)
        assert again.returncode == 2, (op, again.stderr)
        assert "already broken" in again.stderr and "locaton" in again.stderr, again.stderr
        assert "new upstream" not in again.stderr
        assert ws.upstream() == upstream and not (ws.root / "bg" / "lock").exists()
        assert not list((ws.nginx.prefix / "conf.d").glob(".*"))  # nothing staged or kept
    # To a cold slot, nginx is tested before the slot boots: blue stays down.
    os.killpg(int(blue_pid), signal.SIGKILL)
    cold = ws.bg("switch", check=False)
    assert cold.returncode == 2 and "already broken" in cold.stderr, cold.stderr
    assert (ws.root / "run" / "blue.pid").read_text() == blue_pid  # not started again
    assert ws.upstream() == upstream and not (ws.root / "bg" / "lock").exists()
    broken.unlink()
    ws.bg("deploy", str(build_sample(tmp_path / "art", "3.0.0")))


# ------------------------------------------------------------------ bg remove


def _nginx_ok(ws: Workspace) -> None:
    subprocess.run(ws.nginx.argv("-q", "-t"), check=True, capture_output=True)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_remove_is_refused_while_a_site_serves_the_app(workspace: Workspace,
                                                       tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    upstream = ws.upstream()
    proc = ws.bg("remove", check=False)
    assert proc.returncode == 2, proc.stderr
    site = str(ws.nginx.prefix / "sites" / "hello.conf")
    assert "traffic is live" in proc.stderr and site in proc.stderr, proc.stderr
    assert "hello_live" in proc.stderr and "--force" in proc.stderr
    assert ws.upstream() == upstream and ws.get().text.startswith("hello 1.0.0")
    assert not (ws.root / "bg" / "lock").exists()
    plan = json.loads(ws.bg("remove", "--dry-run", "--json").stdout)["result"]
    assert plan["dry_run"] is True and "traffic is live" in plan["hosts"]["local"]["refused"]
    forced = ws.bg("remove", "--dry-run", "--force").stdout
    assert "503 stand-in" in forced and "stop blue" in forced
    assert ws.upstream() == upstream and ws.get().text.startswith("hello 1.0.0")


def test_remove_after_the_site_is_gone_keeps_releases_and_purge_removes_them(
        workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    ws.bg("deploy", "--keep-old", str(build_sample(tmp_path / "art", "2.0.0")))
    site = ws.nginx.prefix / "sites" / "hello.conf"
    text = site.read_text()
    site.unlink()  # the user takes the site out first
    subprocess.run(ws.nginx.argv("-s", "reload"), check=True)
    out = json.loads(ws.bg("remove", "--json", "-q").stdout)["result"]
    assert out["operation"] == "remove"
    assert out["hosts"][0]["outcome"].startswith("removed: upstream removed"), out
    assert not Path(ws.nginx.upstream_file).exists()
    _nginx_ok(ws)
    assert _port_free(ws.ports["blue"]) and _port_free(ws.ports["green"])
    left = sorted(p.name for p in ws.root.iterdir())
    assert left == ["bg", "logs", "releases"], left
    assert sorted(p.name for p in (ws.root / "releases").iterdir()) == ["1.0.0", "2.0.0"]
    assert sorted(p.name for p in (ws.root / "bg").iterdir()) == ["journal.jsonl", "lived"]
    history = ws.bg("history").stdout
    assert " remove " in history.splitlines()[-1] and " ok " in history.splitlines()[-1]
    ws.bg("setup")  # back, in init's order: setup, the site, a deploy
    site.write_text(text)
    subprocess.run(ws.nginx.argv("-s", "reload"), check=True)
    back = json.loads(ws.bg("--json", "deploy", str(build_sample(tmp_path / "art", "2.0.0"))
                            ).stdout)["result"]
    assert not any("upload" in s["title"] for s in back["steps"]), back["steps"]
    site.unlink()
    subprocess.run(ws.nginx.argv("-s", "reload"), check=True)
    ws.bg("remove", "--purge")
    assert list(ws.root.iterdir()) == []  # the root itself stays (the user may own it)
    assert not Path(ws.nginx.upstream_file).exists()


def test_remove_force_leaves_a_503_stand_in_that_keeps_nginx_valid(workspace: Workspace,
                                                                    tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    proc = ws.bg("remove", "--force")
    assert "503 stand-in" in proc.stderr, proc.stderr
    _nginx_ok(ws)
    r = ws.get()
    assert r.status_code == 503 and "hello was removed" in r.text
    assert _port_free(ws.ports["blue"])
    (ws.nginx.prefix / "sites" / "hello.conf").unlink()
    subprocess.run(ws.nginx.argv("-s", "reload"), check=True)
    ws.bg("remove")  # now the stand-in goes too
    assert not Path(ws.nginx.upstream_file).exists()
    _nginx_ok(ws)
