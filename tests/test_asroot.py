"""bg's nginx commands for a deploy user who is not root (bluegreen/asroot.py): the host's
nginx found outside the PATH, sudo -n when not root, the one sudo rule (the same in
asroot.py, nginx/provision.sh and the README), `bg check`'s "sudo rule" line, and the
worker-only SIGQUIT helper that provision.sh installs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bluegreen import asroot
from bluegreen.facts import check as checks
from tests.debian_host import freeze_after_fork, settled_workers, stat_state, title
from tests.helpers import Workspace, need
from tests.test_check import GOOD, cfg

ROOT = Path(__file__).resolve().parent.parent
PROVISION = (ROOT / "nginx" / "provision.sh").read_text()


def fake_bin(tmp_path: Path, *, uid: int, sudo_allows: bool = True) -> Path:
    """A PATH directory with an `id` saying ``uid``, a `sudo` that records its arguments
    (and refuses, like sudo without the rule, unless ``sudo_allows``), and an `nginx`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls"
    scripts = {
        "id": f'#!/bin/sh\ncase "$1" in -u) echo {uid};; -un) echo deploy;; esac\n',
        "sudo": f'#!/bin/sh\necho "sudo $*" >> {log}\n' + (
            'shift; exec "$@"\n' if sudo_allows
            else 'echo "sudo: a password is required" >&2; exit 1\n'),
        "nginx": f'#!/bin/sh\necho "nginx $*" >> {log}\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def dash(script: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dash", "-c", script], capture_output=True, text=True, check=False,
                          env={"PATH": path}, timeout=30)


@pytest.mark.unit
def test_only_a_bare_nginx_is_resolved() -> None:
    for text in ("/usr/sbin/nginx -t", "sudo nginx -t", "systemctl reload nginx",
                 "nginx-debug -t", "/opt/nginx -p /x -t"):
        assert asroot.command(text) == text
    for text in ("nginx -t", "  nginx -s reload", "nginx"):
        assert asroot.is_bare(text)
        assert "bg_nginx" in asroot.command(text)
        assert asroot.command(text).endswith(text.replace("nginx", "bg_nginx", 1))


@pytest.mark.unit
def test_a_user_runs_nginx_through_sudo_and_root_runs_it_directly(tmp_path: Path) -> None:
    user = fake_bin(tmp_path / "user", uid=1000)
    r = dash(asroot.command("nginx -s reload") + " && " + asroot.command("nginx -V"),
             f"{user}:/usr/bin:/bin")
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "user" / "calls").read_text().splitlines()
    assert calls == [f"sudo -n {user}/nginx -s reload", "nginx -s reload", "nginx -V"]

    root = fake_bin(tmp_path / "root", uid=0)
    r = dash(asroot.command("nginx -t"), f"{root}:/usr/bin:/bin")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "root" / "calls").read_text().splitlines() == ["nginx -t"]


@pytest.mark.unit
def test_nginx_is_found_outside_the_users_path(tmp_path: Path) -> None:
    """Debian's user PATH has no /usr/sbin: the sbin directories are searched after it."""
    need(Path("/usr/sbin/nginx").exists(), "no /usr/sbin/nginx here")
    user = fake_bin(tmp_path, uid=1000)
    (user / "nginx").unlink()
    r = dash(asroot.command("nginx -t"), f"{user}:/usr/local/bin:/usr/bin:/bin:/usr/games")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["sudo -n /usr/sbin/nginx -t"]
    r = dash(f"echo $( {asroot.find_script()} )", "/usr/bin:/bin")
    assert r.stdout.strip() in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/sbin/nginx")


@pytest.mark.unit
def test_a_refused_sudo_says_which_rule_is_missing(tmp_path: Path) -> None:
    user = fake_bin(tmp_path, uid=1000, sudo_allows=False)
    r = dash(asroot.command("nginx -t"), f"{user}:/usr/bin:/bin")
    assert r.returncode == 1
    assert "sudo: a password is required" in r.stderr
    assert f"sudo does not allow deploy to run '{user}/nginx -t' as root" in r.stderr
    assert "bg check" in r.stderr


@pytest.mark.unit
def test_one_rule_in_asroot_provision_and_readme() -> None:
    rule = asroot.sudo_rule("deploy")
    assert rule == ("deploy ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -T,"
                    " /usr/sbin/nginx -s reload, /usr/local/sbin/bg-nginx-quit")
    template = next(line.strip().removesuffix(" \\").strip('"')
                    for line in PROVISION.splitlines() if "NOPASSWD" in line)
    rendered = template.replace("$USER_NAME", "deploy").replace("$NGINX", "/usr/sbin/nginx")
    assert rendered == rule
    assert asroot.QUIT_HELPER in PROVISION and asroot.QUIT_HELPER in rule
    readme = (ROOT / "README.md").read_text()
    assert rule in readme
    assert asroot.sudoers_file("deploy") in readme
    assert asroot.sudoers_file("deploy.bot") == "/etc/sudoers.d/bg-deploy_bot"  # sudo skips dots


@pytest.mark.unit
def test_sudo_rule_check_lines() -> None:
    assert asroot.evaluate(["not-needed"]) is None
    assert asroot.evaluate([]) is None
    ok = asroot.evaluate(["user deploy", "allowed /usr/sbin/nginx -t",
                          "allowed /usr/sbin/nginx -T", f"allowed {asroot.QUIT_HELPER}"])
    assert ok is not None and ok[0] == "ok"
    missing = asroot.evaluate(["user deploy", "refused /usr/sbin/nginx -t",
                               "refused /usr/sbin/nginx -T", f"refused {asroot.QUIT_HELPER}"])
    assert missing is not None and missing[0] == "fail"
    assert "/usr/sbin/nginx -t" in missing[1]
    assert "/etc/sudoers.d/bg-deploy" in missing[2] and asroot.sudo_rule("deploy") in missing[2]
    local = asroot.evaluate(["user web", "refused /usr/local/sbin/nginx -t"])
    assert local is not None and asroot.sudo_rule("web", "/usr/local/sbin/nginx") in local[2]
    nosudo = asroot.evaluate(["user deploy", "no-sudo"])
    assert nosudo is not None and nosudo[0] == "fail" and "apt-get install sudo" in nosudo[2]
    helper = asroot.evaluate(["user deploy", "allowed /usr/sbin/nginx -t", "no-helper"])
    assert helper is not None and helper[0] == "warn" and "100 ms" in helper[1]


@pytest.mark.unit
def test_check_script_asks_sudo_only_what_the_commands_need() -> None:
    assert asroot.check_script("/usr/sbin/nginx -p /x -t", "/usr/sbin/nginx -s reload") \
        == "echo not-needed"
    both = asroot.check_script("nginx -t", "nginx -s reload")
    assert all(f'"$b" {a}' in both for a in ("-t", "-T", "-s reload"))
    assert asroot.QUIT_HELPER in asroot.check_script("sudo -n nginx -t", "sudo -n nginx -s reload")


@pytest.mark.unit
def test_bg_check_reports_the_sudo_rule_and_skips_include_without_a_dump() -> None:
    def names(output: str) -> dict[str, str]:
        return {ln.name: ln.status
                for ln in checks.evaluate(cfg(), "web-1", output, marker="@@", local=False)}

    assert "sudo rule" not in names(GOOD)  # root, or no sudo needed: no line
    refused = GOOD.replace("@@ pid-file", "@@ sudo\nuser deploy\nrefused /usr/sbin/nginx -t\n"
                           "@@ pid-file")
    assert names(refused)["sudo rule"] == "fail"
    no_dump = re.sub(r"@@ dump\n(.*\n)*?(?=@@ port-blue)", "@@ dump\n", GOOD)
    assert names(no_dump)["upstream included"] == "skip"


def helper_script(tmp_path: Path) -> Path:
    """bg-nginx-quit, as provision.sh installs it."""
    text = PROVISION.split("<<'HELPER'\n", 1)[1].split("\nHELPER\n", 1)[0] + "\n"
    path = tmp_path / "bg-nginx-quit"
    path.write_text(text)
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    return stat_state(pid) not in ("gone", "Z", "X")


def test_the_quit_helper_signals_old_nginx_workers_only(tmp_path: Path,
                                                         workspace: Workspace) -> None:
    """bg-nginx-quit refuses what is not an nginx worker, never signals the only workers
    nginx has, and quits old ones once a newer worker runs: shown with nginx's master
    frozen right after it forked the new workers, before it signals the old ones itself."""
    helper = helper_script(tmp_path)
    master = workspace.nginx.master_pid()
    assert master is not None
    old = settled_workers(master)
    other = subprocess.Popen(["sleep", "60"])
    try:
        r = subprocess.run(["dash", str(helper), str(other.pid), str(master)],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 1, r
        assert f"{other.pid} is not an nginx worker" in r.stderr
        assert f"{master} is not an nginx worker" in r.stderr
        r = subprocess.run(["dash", str(helper), "12x"], capture_output=True, text=True,
                           check=False)
        assert r.returncode == 2 and "not a pid: 12x" in r.stderr, r
        # the only workers there are: nothing is signalled, even after waiting
        r = subprocess.run(["dash", str(helper), "--wait", "100", *map(str, old), "999999999"],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 3 and "no newer worker" in r.stderr, r
        time.sleep(0.2)
        assert other.poll() is None and _alive(master) and all(_alive(p) for p in old)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()

    for _ in range(3):  # a busy machine may let the master's own 100 ms pass first
        frozen: list[bool] = []
        watcher = threading.Thread(target=freeze_after_fork, args=(master, old, frozen))
        watcher.start()
        try:
            subprocess.run(workspace.nginx.argv("-s", "reload"), check=True)
            watcher.join()
            if frozen == [True]:
                r = subprocess.run(["dash", str(helper), "--wait", "2000", *map(str, old)],
                                   capture_output=True, text=True, check=False)
                assert r.returncode == 0, r
                deadline = time.monotonic() + 5
                while any(_alive(p) for p in old):
                    assert time.monotonic() < deadline, [title(p) for p in old]
                    time.sleep(0.01)
                assert stat_state(master) == "T"  # only the helper can have told them
                return
        finally:
            os.kill(master, signal.SIGCONT)
        old = settled_workers(master)
    pytest.fail("the master always signalled its old workers before the test froze it")
