"""A non-root deploy user on a Debian-shaped host (tests/debian_host.py), over SSH: the host
provisioned by nginx/provision.sh, whose sudo rule is the only privilege the user has; bg
finds nginx outside the user's PATH, runs it through that rule, and signals nginx's old
workers (www-data's) early through the rule's helper. provision.sh leaves the host's own
sites alone."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluegreen import nginx
from bluegreen.config import load
from bluegreen.sandbox.provision import provision
from bluegreen.sandbox.sample import build_sample
from tests.debian_host import (
    DEBIAN_USER_PATH,
    DEPLOY,
    SHOP_HOST,
    DebianHost,
    children,
    debian_host,
    freeze_after_fork,
    settled_workers,
    stat_state,
    title,
)
from tests.fleet_helpers import bg

__all__ = ["debian_host"]

pytestmark = pytest.mark.root

SUDOERS = f"/etc/sudoers.d/bg-{DEPLOY}"


def get(d: DebianHost, host_header: str | None = None) -> httpx.Response:
    headers = {"Connection": "close", **({"Host": host_header} if host_header else {})}
    return httpx.get(f"http://{d.host.address}/", headers=headers, timeout=5)


def served(d: DebianHost) -> tuple[str, str | None]:
    r = get(d)
    assert r.status_code == 200, r.text
    return r.text.strip(), r.headers.get("X-BG-Slot")


def checks(config: Path) -> tuple[int, list[dict[str, Any]]]:
    proc = bg(config, "--json", "check", check=False)
    return proc.returncode, json.loads(proc.stdout)["result"]["checks"]


def not_ok(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in lines if c["status"] != "ok"]


def nginx_processes(d: DebianHost) -> set[tuple[str, str]]:
    """(user, title without arguments) of the host's nginx master and its workers."""
    master = d.root("cat /run/nginx.pid").stdout.strip()
    out = d.root(f"ps -o user=,args= --pid {master} --ppid {master}").stdout
    return {(line.split(None, 1)[0], line.split(None, 1)[1].split(" process")[0])
            for line in out.splitlines()}


def enabled_sites(d: DebianHost) -> dict[str, str]:
    """Name -> content of each enabled site."""
    out = d.root("cd /etc/nginx/sites-enabled && for f in *; do echo \"== $f\";"
                 " cat \"$f\"; done").stdout
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1]
            for part in out.split("== ")[1:]}


def test_provision_leaves_the_hosts_own_sites_alone(debian_host: DebianHost) -> None:
    d = debian_host
    before = enabled_sites(d)
    assert sorted(before) == ["default", "shop"]
    stock = get(d, "unknown.example")
    assert stock.status_code == 200 and "Welcome to nginx" in stock.text

    provision(d.host, user=DEPLOY)
    provision(d.host, user=DEPLOY)  # idempotent

    after = enabled_sites(d)
    assert after == {**before, "hello": after.get("hello", "missing")}  # ours added only
    dump = d.root("nginx -T 2>/dev/null").stdout
    defaults = [ln for ln in dump.splitlines()
                if "default_server" in ln and not ln.strip().startswith("#")]
    assert defaults == ["\tlisten 80 default_server;", "\tlisten [::]:80 default_server;"], \
        defaults
    # Each site still answers for its own names; ours for the host's own name and address.
    assert get(d, SHOP_HOST).text == "shop\n"
    assert "Welcome to nginx" in get(d, "unknown.example").text
    ours = get(d)  # Host: the host's address; nothing deployed yet
    assert ours.status_code == 502 and ours.headers.get("X-BG-Slot") == "none", ours.text
    assert d.root("visudo -c -q").returncode == 0


def test_provision_refuses_a_host_whose_nginx_is_already_broken(
        debian_host: DebianHost) -> None:
    d = debian_host
    d.root("echo 'server { listen 80; bogus_directive; }' > /etc/nginx/conf.d/broken.conf")
    before = d.root("find /etc/nginx /etc/sudoers.d | sort | xargs ls -ld").stdout
    with pytest.raises(Exception, match="provisioning failed") as info:
        provision(d.host, user=DEPLOY)
    assert "before provisioning" in str(getattr(info.value, "detail", "")), info.value
    assert d.root("find /etc/nginx /etc/sudoers.d | sort | xargs ls -ld").stdout == before


def test_non_root_deploy_user_deploys_switches_rolls_back(debian_host: DebianHost,
                                                           tmp_path: Path) -> None:
    d = debian_host
    provision(d.host, user=DEPLOY)
    # The shape the issue found: a user, not root, whose PATH has no /usr/sbin, with only
    # the documented rule; nginx's master runs as root and its workers as www-data.
    who = d.ssh("id -un; echo \"$PATH\"; command -v nginx || echo no-nginx; sudo -n -l")
    assert who.returncode == 0, who.stderr
    lines = who.stdout.splitlines()
    assert lines[:3] == [DEPLOY, DEBIAN_USER_PATH, "no-nginx"], lines
    assert "NOPASSWD: /usr/sbin/nginx -t" in who.stdout and "ALL : ALL" not in who.stdout
    users = nginx_processes(d)
    assert users == {("root", "nginx: master"), ("www-data", "nginx: worker")}, users

    config = d.config(tmp_path / "bluegreen.toml")
    rc, lines_ = checks(config)
    assert rc == 0 and not_ok(lines_) == [], not_ok(lines_)
    names = {c["check"]: c["detail"] for c in lines_}
    assert names["nginx installed"] == "/usr/sbin/nginx"
    assert "sudo" in names["nginx -t"], names

    bg(config, "setup")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    assert served(d) == ("hello 1.0.0 slot=blue", "blue")
    bg(config, "deploy", str(build_sample(art, "2.0.0")))
    assert served(d) == ("hello 2.0.0 slot=green", "green")
    bg(config, "rollback")
    assert served(d) == ("hello 1.0.0 slot=blue", "blue")
    bg(config, "switch")
    assert served(d) == ("hello 2.0.0 slot=green", "green")
    assert get(d, SHOP_HOST).text == "shop\n"  # the host's own site, untouched throughout
    rc, lines_ = checks(config)
    assert rc == 0 and not_ok(lines_) == [], not_ok(lines_)


def test_check_names_the_missing_sudo_rule(debian_host: DebianHost, tmp_path: Path) -> None:
    d = debian_host
    provision(d.host, user=DEPLOY)
    config = d.config(tmp_path / "bluegreen.toml")
    d.root(f"rm {SUDOERS}")
    rc, lines = checks(config)
    assert rc == 2
    bad = {c["check"]: c for c in not_ok(lines)}
    rule = bad.get("sudo rule")
    assert rule is not None and rule["status"] == "fail", lines
    assert SUDOERS in rule["hint"] and "NOPASSWD: /usr/sbin/nginx -t" in rule["hint"], rule
    assert "nginx installed" not in bad  # found all the same


@pytest.mark.parametrize("reload_command", [None, "sudo -n nginx -s reload"])
def test_reload_as_non_root_quits_www_data_workers_early(
        debian_host: DebianHost, tmp_path: Path, reload_command: str | None) -> None:
    """The reload script bg runs on a switch, as the deploy user over SSH: nginx reloads
    through the sudo rule, and nginx's old workers (www-data's) are told to quit as soon as
    a new one runs. The test freezes the master (SIGSTOP, from outside) the moment it has
    forked the new workers, inside its 100 ms before it would signal the old ones itself:
    only bg can make them exit then. Either with the default reload command or one that
    says `sudo` itself (as `bg rehearse --vagrant` writes)."""
    d = debian_host
    provision(d.host, user=DEPLOY)
    extra = {"reload_command": reload_command} if reload_command else {}
    cfg = load(d.config(tmp_path / "bluegreen.toml", **extra))
    master = int(d.root("cat /run/nginx.pid").stdout)
    for _ in range(3):  # a busy machine may let the master's own 100 ms pass first
        old = settled_workers(master)
        frozen: list[bool] = []
        watcher = threading.Thread(target=freeze_after_fork, args=(master, old, frozen))
        watcher.start()
        try:
            r = d.ssh(nginx.reload_script(cfg))
            watcher.join()
            assert r.returncode == 0, r.stdout + r.stderr
            assert nginx.parse_old_workers(r.stdout) == old
            if frozen == [True]:
                deadline = time.monotonic() + 5
                while not all(stat_state(p) in ("gone", "Z") for p in old):
                    assert time.monotonic() < deadline, [title(p) for p in old]
                    time.sleep(0.01)
                assert stat_state(master) == "T"  # nginx's master never got to do it
                return
        finally:
            os.kill(master, signal.SIGCONT)
        time.sleep(0.5)
    pytest.fail("the master always signalled its old workers before the test froze it")


def test_a_failed_reload_as_non_root_signals_nothing(debian_host: DebianHost,
                                                      tmp_path: Path) -> None:
    """The helper bg starts before the reload never quits the only workers nginx has: a
    reload that fails leaves them serving, and bg does not wait for the helper's timeout."""
    d = debian_host
    provision(d.host, user=DEPLOY)
    cfg = load(d.config(tmp_path / "bluegreen.toml", reload_command="false"))
    master = int(d.root("cat /run/nginx.pid").stdout)
    old = settled_workers(master)
    ssh_alone = time.monotonic()
    assert d.ssh("true").returncode == 0
    ssh_alone = time.monotonic() - ssh_alone
    started = time.monotonic()
    r = d.ssh(nginx.reload_script(cfg))
    took = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    assert took < ssh_alone + 0.7, (took, ssh_alone)  # the helper's --wait is 1 s
    time.sleep(1.5)  # past the helper's wait
    assert children(master) == old
    assert all(title(p) == "nginx: worker process" for p in old)
