"""Security checks: secrets stay 0600 and out of every output and the journal, a deploy
creates nothing world-writable, the journal says who did what from where, and a changed
host key stops a deploy before anything reaches the host.

(Unknown and changed host keys at the SSH layer and `bg setup`: tests/test_ssh_host.py and
tests/test_ssh_e2e.py::test_host_keys. Added here only the deploy case.)
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.host import controller_identity
from bluegreen.layout import Layout
from bluegreen.runners.elixir import cookie_script
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, make_workspace, need, serving
from tests.sandbox_fixtures import MakeSandbox, make_sandbox  # noqa: F401
from tests.test_hostile import tree_digest
from tests.test_ssh_e2e import bg

SECRET = "bg-marker-secret-77c1e0"


def world_writable(root: Path) -> list[str]:
    """Files and directories under ``root`` anyone may write (symlinks excluded)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
                bad.append(f"{p} {stat.S_IMODE(st.st_mode):o}")
    return bad


@pytest.fixture
def secret_workspace(tmp_path: Path) -> Workspace:
    need(Path("/usr/sbin/nginx").exists(), "nginx is not installed")
    (tmp_path / ".env.production").write_text(f"API_TOKEN={SECRET}\nOTHER=1\n")
    ws = make_workspace(tmp_path, app_section=(
        'runner = "command"\ncommand = "bin/server"\nenv_file = ".env.production"'))
    return ws


@pytest.mark.nginx
def test_env_file_secret_never_printed_or_journaled(secret_workspace: Workspace,
                                                    tmp_path: Path) -> None:
    ws = secret_workspace
    with serving(ws):
        arts = tmp_path / "arts"
        outs = [ws.bg("-v", "deploy", str(build_sample(arts, "1.0.0"))),
                ws.bg("-v", "--json", "deploy", str(build_sample(arts, "2.0.0"))),
                ws.bg("-v", "rollback"), ws.bg("-v", "switch"),
                ws.bg("--json", "status"), ws.bg("--json", "history", "-n", "100")]
        env = ws.root / "shared" / "env"
        assert env.read_text() == f"API_TOKEN={SECRET}\nOTHER=1\n"
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        assert stat.S_IMODE((ws.root / "shared").stat().st_mode) == 0o700
        printed = "".join(p.stdout + p.stderr for p in outs)
        assert SECRET not in printed
        for f in ("bg/journal.jsonl", "bg/state.json"):
            assert SECRET not in (ws.root / f).read_text(), f
        # nor anywhere else bg wrote (releases, logs, run, uploads), the env file aside
        for dirpath, _, filenames in os.walk(ws.root):
            for name in filenames:
                p = Path(dirpath, name)
                if p != env and p.is_file() and not p.is_symlink():
                    assert SECRET.encode() not in p.read_bytes(), p
        # nothing world-writable after all of that
        assert world_writable(ws.root) == []

        # the journal records who did what from where, for every entry
        me = controller_identity()
        entries = [json.loads(line) for line in
                   (ws.root / "bg" / "journal.jsonl").read_text().splitlines()]
        assert len(entries) >= 4
        for e in entries:
            assert e["user"] == me["user"] and e["controller"] == socket.gethostname(), e
            assert e["op"] and e["step"] and e["outcome"] and e["time"], e
        assert {"deploy", "rollback", "switch"} <= {e["op"] for e in entries}
        assert {"1.0.0", "2.0.0"} <= {e.get("version") for e in entries}


@pytest.mark.unit
def test_cookie_created_0600_and_never_printed(tmp_path: Path) -> None:
    paths = Layout(str(tmp_path / "app"))
    for _ in range(2):  # the second run keeps the cookie
        r = subprocess.run(["sh", "-c", cookie_script(paths)], capture_output=True, text=True,
                           check=True)
        assert r.stdout == "" and r.stderr == ""
    cookie = Path(paths.cookie)
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
    assert len(cookie.read_text()) == 64
    # an existing cookie with loose modes is tightened
    cookie.chmod(0o644)
    subprocess.run(["sh", "-c", cookie_script(paths)], check=True)
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600


def test_release_modes_stay_tight_under_a_loose_umask(workspace: Workspace,
                                                       tmp_path: Path) -> None:
    # bg's scripts run with the host's umask; even 000 must not leave anything
    # world-writable (the artifact check refuses world-writable members).
    art = build_sample(tmp_path / "arts", "1.0.0")
    old = os.umask(0o022)
    try:
        workspace.bg("deploy", str(art))
    finally:
        os.umask(old)
    assert world_writable(workspace.root) == []


def test_changed_host_key_stops_deploy_before_upload(make_sandbox: MakeSandbox,  # noqa: F811
                                                    tmp_path: Path) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml")
    arts = tmp_path / "arts"
    bg(config, "setup")
    bg(config, "deploy", str(build_sample(arts, "1.0.0")))
    root = host.srv("/srv/hello")
    before = tree_digest(root)

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()
    forged = tmp_path / "forged_known_hosts"
    forged.write_text(f"{host.address} {pub[0]} {pub[1]}\n")
    config2 = sandbox_config(sandbox, tmp_path / "forged.toml", known_hosts=forged)
    out = bg(config2, "--accept-new-host-keys", "deploy", str(build_sample(arts, "2.0.0")),
             check=False)
    assert out.returncode == ExitCode.HOST, out.stdout + out.stderr
    assert "CHANGED" in out.stderr.upper()
    assert tree_digest(root) == before
    assert bg(config, "status").returncode == 0
