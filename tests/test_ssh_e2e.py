"""bg over SSH against real sandbox hosts: own network, own /srv, own sshd and nginx."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import Sandbox, SandboxHost
from bluegreen.sandbox.sample import build_sample
from tests.helpers import run_bg
from tests.sandbox_fixtures import MakeSandbox

SECRET = "s3cr3t-value-never-printed-4242"


def bg(config: Path, *args: str, check: bool = True, home: Path | None = None
       ) -> subprocess.CompletedProcess[str]:
    """bg over SSH; $HOME is ``home`` or the config's folder, never the operator's own."""
    return run_bg(*args, config=config, home=home or config.parent, check=check)


def through_nginx(host: SandboxHost) -> tuple[str, str | None]:
    r = httpx.get(f"http://{host.address}/", headers={"Connection": "close"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.text.strip(), r.headers.get("X-BG-Slot")


def status(config: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bg(config, "--json", "status", check=False).stdout)["result"]
    return data


def setup(sandbox: Sandbox, tmp: Path, **kw: Any) -> Path:
    config = sandbox_config(sandbox, tmp / "bluegreen.toml", **kw)
    bg(config, "setup")
    return config


def test_one_host_deploy_deploy_rollback_switch(make_sandbox: MakeSandbox, tmp_path: Path
                                                ) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    env = tmp_path / ".env.production"
    env.write_text(f"API_TOKEN={SECRET}\n")
    config = setup(sandbox, tmp_path, app_section=(
        'runner = "command"\ncommand = "bin/server"\nenv_file = ".env.production"'))
    art = tmp_path / "art"

    out = bg(config, "-v", "deploy", str(build_sample(art, "1.0.0")))
    assert through_nginx(host) == ("hello 1.0.0 slot=blue", "blue")
    assert "commands" in out.stderr  # -v: round trips per host
    out2 = bg(config, "-v", "deploy", str(build_sample(art, "2.0.0")))
    assert through_nginx(host) == ("hello 2.0.0 slot=green", "green")
    bg(config, "rollback")
    assert through_nginx(host) == ("hello 1.0.0 slot=blue", "blue")
    out3 = bg(config, "switch")
    assert through_nginx(host) == ("hello 2.0.0 slot=green", "green")
    st = status(config)
    assert st["ok"] and st["hosts"][0]["live"] == "green" and st["hosts"][0]["version"] == "2.0.0"

    # The env file: on the host with mode 0600, never in output, journal or state.
    env_on_host = host.srv("/srv/hello/shared/env")
    assert env_on_host.read_text() == f"API_TOKEN={SECRET}\n"
    assert env_on_host.stat().st_mode & 0o777 == 0o600
    captured = "".join(p.stdout + p.stderr for p in (out, out2, out3))
    captured += bg(config, "--json", "history", "-n", "100").stdout
    captured += json.dumps(st)
    assert SECRET not in captured
    for f in ("bg/journal.jsonl", "bg/state.json", "logs/blue.log", "logs/green.log"):
        assert SECRET not in host.srv(f"/srv/hello/{f}").read_text()

    # The live release again: nothing to do at all.
    same = json.loads(bg(config, "--json", "deploy",
                         str(build_sample(art, "2.0.0"))).stdout)["result"]
    assert [h["outcome"] for h in same["hosts"]] == ["unchanged"]
    assert not any(s["title"].startswith(("upload", "start")) for s in same["steps"])
    # A release still on the host (1.0.0, retired) is started again without an upload.
    uploads = host.srv("/srv/hello/bg/uploads")
    release = host.srv("/srv/hello/releases/1.0.0")
    mtime = release.stat().st_mtime_ns
    again = json.loads(bg(config, "--json", "deploy",
                          str(build_sample(art, "1.0.0"))).stdout)["result"]
    assert [h["outcome"] for h in again["hosts"]] == ["start, gate, switch: green -> blue"]
    assert not any(s["title"].startswith("upload") for s in again["steps"])
    assert release.stat().st_mtime_ns == mtime
    assert list(uploads.iterdir()) == []
    assert through_nginx(host) == ("hello 1.0.0 slot=blue", "blue")


def test_three_hosts_all_or_nothing(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = make_sandbox(3)
    config = setup(sandbox, tmp_path, health="interval = 0.1\ntimeout = 1.0\ndeadline = 3.0")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    for h in sandbox.hosts:
        assert through_nginx(h) == ("hello 1.0.0 slot=blue", "blue")

    # Host 2 alone refuses 2.0.0's health check: no host may switch.
    flag = sandbox.hosts[1].srv("/srv/hello/shared/unhealthy-2.0.0")
    flag.touch()
    upstreams = [h.srv(h.nginx.upstream_file).read_bytes() for h in sandbox.hosts]
    proc = bg(config, "deploy", str(build_sample(art, "2.0.0")), check=False)
    assert proc.returncode == ExitCode.HEALTH, proc.stderr
    assert sandbox.hosts[1].spec in proc.stderr and "never became healthy" in proc.stderr
    assert f"  {sandbox.hosts[0].spec}: health check: ok" in proc.stderr  # every host named
    for h, before in zip(sandbox.hosts, upstreams, strict=True):
        assert through_nginx(h) == ("hello 1.0.0 slot=blue", "blue")
        assert h.srv(h.nginx.upstream_file).read_bytes() == before
    st = status(config)
    assert all(x["live"] == "blue" and x["version"] == "1.0.0" for x in st["hosts"])
    assert not any(x["slots"]["green"]["running"] for x in st["hosts"])  # none left half-up

    flag.unlink()
    out = bg(config, "--json", "deploy", str(build_sample(art, "2.0.0")))
    result = json.loads(out.stdout)["result"]
    assert [h["outcome"] for h in result["hosts"]] == ["start, gate, switch: blue -> green"] * 3
    for h in sandbox.hosts:
        assert through_nginx(h) == ("hello 2.0.0 slot=green", "green")


def test_switch_failure_on_one_host_restores_all(make_sandbox: MakeSandbox, tmp_path: Path
                                                 ) -> None:
    """Host 3's nginx rejects the new upstream: hosts 1 and 2 keep the old one too."""
    sandbox = make_sandbox(3)
    config = setup(sandbox, tmp_path)
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    bad = sandbox.hosts[2]
    # A site on host 3 only, whose upstream name the green rendering also defines.
    (bad.srv("/srv/nginx/sites") / "clash.conf").write_text(
        "upstream clash { server 127.0.0.1:9; }\n"
    )
    conf = bad.srv(bad.nginx.upstream_file)
    ups = [h.srv(h.nginx.upstream_file).read_bytes() for h in sandbox.hosts]
    template = tmp_path / "up.j2"
    template.write_text(
        "upstream {{ app }}_live { server 127.0.0.1:{{ port }}; }\n"
        'map "" ${{ app }}_slot { default "{{ slot }}"; }\n'
        "{% if slot == 'green' %}upstream clash { server 127.0.0.1:9; }{% endif %}\n"
    )
    text = config.read_text().replace("[nginx]\n", f'[nginx]\ntemplate = "{template}"\n')
    config.write_text(text)
    proc = bg(config, "deploy", str(build_sample(art, "2.0.0")), check=False)
    assert proc.returncode == ExitCode.SWITCH, proc.stderr
    assert bad.spec in proc.stderr and "duplicate upstream" in proc.stderr
    for h, before in zip(sandbox.hosts, ups, strict=True):
        assert h.srv(h.nginx.upstream_file).read_bytes() == before
        assert through_nginx(h) == ("hello 1.0.0 slot=blue", "blue")
    assert conf.exists()


def test_host_keys(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", known_hosts=empty)

    refused = bg(config, "setup", check=False)
    assert refused.returncode == ExitCode.HOST, refused.stderr
    assert "accept-new" in refused.stderr and "SHA256:" in refused.stderr
    assert empty.read_text() == ""
    assert not host.srv("/srv/hello").exists()  # nothing touched

    bg(config, "--accept-new-host-keys", "setup")
    assert host.address in empty.read_text() or "|1|" in empty.read_text()
    bg(config, "setup")  # now known: strict works

    # A different key for the same address: always refused, even with the opt-in.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()
    empty.write_text(f"{host.address} {pub[0]} {pub[1]}\n")
    changed = bg(config, "--accept-new-host-keys", "status", check=False)
    assert changed.returncode == ExitCode.HOST, changed.stderr
    assert "CHANGED" in changed.stderr.upper()


def test_confirm_failure_on_one_host_restores_the_switched_ones(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """Host 2 reloads but never confirms: hosts already switched are switched back."""
    sandbox = make_sandbox(3)
    config = setup(sandbox, tmp_path)
    art = tmp_path / "art"
    bg(config, "deploy", "--keep-old", str(build_sample(art, "1.0.0")))
    bad = sandbox.hosts[1]
    site = bad.srv(f"/srv/nginx/sites/{sandbox.app}.conf")
    site.write_text(site.read_text().replace("add_header X-BG-Slot", "add_header X-Other"))
    ups = [h.srv(h.nginx.upstream_file).read_bytes() for h in sandbox.hosts]
    proc = bg(config, "deploy", str(build_sample(art, "2.0.0")), check=False)
    assert proc.returncode == ExitCode.SWITCH, proc.stderr
    assert bad.spec in proc.stderr and "X-BG-Slot" in proc.stderr
    for h, before in zip(sandbox.hosts, ups, strict=True):
        assert h.srv(h.nginx.upstream_file).read_bytes() == before
        text, _ = through_nginx(h)
        assert text == "hello 1.0.0 slot=blue"
    st = status(config)
    assert all(x["live"] == "blue" for x in st["hosts"])
    assert not any(x["slots"]["green"]["running"] for x in st["hosts"])


def test_lock_on_one_host_blocks_all_and_leaves_no_lock_behind(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = make_sandbox(3)
    config = setup(sandbox, tmp_path)
    lock = sandbox.hosts[1].srv("/srv/hello/bg/lock")
    lock.mkdir()
    (lock / "holder.json").write_text(json.dumps({
        "user": "bob", "controller": "laptop-of-bob", "pid": 4242, "command": "deploy 0.9",
        "time": "2026-11-21T10:00:00+00:00"}))
    proc = bg(config, "deploy", str(build_sample(tmp_path / "art", "1.0.0")), check=False)
    assert proc.returncode == ExitCode.LOCKED, proc.stderr
    assert "bob@laptop-of-bob" in proc.stderr and "deploy 0.9" in proc.stderr
    for i in (0, 2):  # the hosts that were locked on the way are unlocked again
        assert not sandbox.hosts[i].srv("/srv/hello/bg/lock").exists()
        assert not sandbox.hosts[i].srv("/srv/hello/releases/1.0.0").exists()
    assert lock.exists()  # another operator's lock is not ours to clear
