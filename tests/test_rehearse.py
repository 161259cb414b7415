"""`bg rehearse` end to end: real nginx, real sshd (sandbox hosts), the real CLI, real load.

Each rehearsal runs the whole sequence (deploy A, deploy B, a refused release, rollback,
switch) under new-connection, keep-alive and POST load, and its JSON report must say that
nothing failed. The local one runs as an unprivileged user; a SIGINT in the middle must leave
nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.sandbox.nginx import NGINX_BIN
from bluegreen.sandbox.sample import build_sample
from bluegreen.tomlwriter import dumps
from tests.helpers import need
from tests.sandbox_fixtures import need_root

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_EXITS = [0, 0, 3, 0, 0]  # deploy A, deploy B, refused, rollback, switch


def bg_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def rehearse(*args: str, cwd: Path, env: dict[str, str] | None = None, prefix: list[str] | None
             = None, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    argv = [*(prefix or []), sys.executable, "-m", "bluegreen", "rehearse", "--json", *args]
    proc = subprocess.run(argv, cwd=cwd, env=env or bg_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stderr


def assert_clean_report(data: dict[str, Any], environment: str, hosts: int, stderr: str) -> None:
    assert data, f"no JSON report; stderr:\n{stderr[-3000:]}"
    assert data["environment"] == environment
    assert data["hosts"] == hosts
    assert [s["exit"] for s in data["steps"]] == EXPECTED_EXITS, data["steps"]
    assert data["totals"]["failed"] == 0, (data["totals"], data["steps"])
    assert all(s["failed"] == 0 for s in data["steps"])
    # Enough traffic that "nothing failed" means something, from every kind of client.
    assert data["totals"]["requests"] >= 300, data["totals"]
    assert all(c["requests"] >= 30 for c in data["totals"]["by_client"].values()), data["totals"]
    assert data["ok"] is True, data["problems"]
    assert set(data["steps"][0]) >= {"name", "exit", "seconds", "requests", "failed"}


def nobody_prefix(home: Path) -> list[str]:
    """A command prefix that runs as nobody, with ``home`` as HOME.

    When this interpreter lives under a directory nobody cannot enter (e.g. pyenv in a 0700
    /root), a private mount namespace shows nobody that directory's one needed child and
    nothing else, instead of changing the machine's permissions.
    """
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env",
               f"HOME={home}"]
    real = Path(os.path.realpath(sys.executable))
    blocked = next((p for p in reversed(real.parents) if not os.stat(p).st_mode & 0o001), None)
    if blocked is None:
        return setpriv
    child = real.relative_to(blocked).parts[0]
    stash = tempfile.mkdtemp(prefix="bg-stash-")
    script = (f"mount --bind {blocked / child} {stash} && mount -t tmpfs -o mode=755 bg {blocked}"
              f" && mkdir {blocked / child} && mount --move {stash} {blocked / child}"
              ' && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *setpriv]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write in (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bg-rehearse-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_local_rehearsal_as_an_unprivileged_user(shared_dir: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    need(shutil.which("setpriv") is not None or os.geteuid() != 0, "setpriv is missing")
    home, tmp, out = shared_dir / "home", shared_dir / "tmp", shared_dir / "out"
    for d in (home, tmp, out):
        d.mkdir(mode=0o777)
        d.chmod(0o777)
    prefix = nobody_prefix(home) if os.geteuid() == 0 else []
    started = time.monotonic()
    code, data, stderr = rehearse("--local", cwd=out, env=bg_env(TMPDIR=str(tmp)), prefix=prefix)
    wall = time.monotonic() - started
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "local", 1, stderr)
    assert "hello 2.0.0" in data["steps"][-1]["serving"]  # B serves again after the switch
    assert data["steps"][2]["serving"] == data["steps"][1]["serving"]  # refused: B stayed
    assert list(tmp.iterdir()) == [], "the rehearsal left its temporary directory behind"
    if os.geteuid() == 0:
        assert (out / "bg-rehearsal.json").stat().st_uid != 0  # it really ran as nobody
    if data["plot"]:
        assert (out / "bg-rehearsal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert wall < 90, f"the local rehearsal took {wall:.0f}s"


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_sandbox_rehearsal_with_two_hosts(tmp_path: Path) -> None:
    need_root()
    before = _netns()
    code, data, stderr = rehearse("--sandbox", "--hosts", "2", cwd=tmp_path,
                                  env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "sandbox", 2, stderr)
    assert "2 hosts" in stderr  # the environment said what it started
    assert _netns() <= before, "the rehearsal left network namespaces behind"


def _user_project(where: Path, app: str = "shop") -> tuple[Path, list[Path]]:
    """A user's project: two release tarballs and a hand-written bluegreen.toml that points
    at production (which the rehearsal must redirect, never touch)."""
    arts = [build_sample(where / "rel", v, app=app) for v in ("4.1.0", "4.2.0")]
    (where / "prod.env").write_text("GREETING=howdy\n")
    (where / "prod.env").chmod(0o600)
    config = {
        "app": {"name": app, "root": f"/srv/{app}", "runner": "command",
                "command": "bin/server", "env_file": "prod.env", "keep_releases": 4},
        "slots": {"blue": 4001, "green": 4002},
        "health": {"path": "/health", "interval": 0.2, "timeout": 1.0, "deadline": 20.0},
        "nginx": {"upstream_file": f"/etc/nginx/conf.d/{app}.bluegreen.conf",
                  "test_command": "sudo nginx -t", "reload_command": "sudo nginx -s reload",
                  "probe_url": "http://127.0.0.1/"},
        "hooks": {"after_deploy": ["true"]},
        "targets": {"production": {"hosts": ["deploy@prod1.invalid", "deploy@prod2.invalid"]}},
    }
    path = where / "bluegreen.toml"
    path.write_text(dumps(config))
    return path, arts


def test_rehearsal_of_the_users_artifacts_and_config(tmp_path: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    config, arts = _user_project(tmp_path)
    code, data, stderr = rehearse("--local", *map(str, arts), cwd=tmp_path,
                                  env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "local", 1, stderr)
    # The user's env file was used; their app served A, then B, and B again at the end.
    assert data["steps"][0]["serving"].startswith("howdy 4.1.0")
    assert data["steps"][-1]["serving"].startswith("howdy 4.2.0")
    # The refusal is a real health-gate failure of B on a path it cannot answer.
    refused = data["steps"][2]
    assert refused["name"].startswith("refused (4.2.0-refused")
    assert "health" in refused["message"].lower(), refused
    assert f"your app shop ({config})" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bluegreen.toml", "prod.env", "rel", "bg-rehearsal.json", "bg-rehearsal.png"][
            : 5 if data["plot"] else 4])


def test_one_user_artifact_is_rehearsed_as_two_versions(tmp_path: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    _, arts = _user_project(tmp_path)
    code, data, stderr = rehearse("--local", str(arts[0]), cwd=tmp_path,
                                  env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert [s["name"].split(" (")[1].rstrip(")") for s in data["steps"][:3]] == [
        "4.1.0", "4.1.0-b", "4.1.0-b-refused"]


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    code, _, stderr = rehearse("--local", str(tmp_path / "nope.tar.gz"), cwd=tmp_path)
    assert code != 0 and "no such release tarball" in stderr
    code, _, stderr = rehearse("--local", "--sandbox", cwd=tmp_path)
    assert code != 0 and "choose one of" in stderr
    code, _, stderr = rehearse("--app", "rails", cwd=tmp_path)
    assert code == 2 and "--app must be sample or elixir" in stderr
    assert list(tmp_path.iterdir()) == []


def _mounts_mentioning(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in line]


def _processes_mentioning(path: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmd:
                found.append(f"{entry}: {cmd}")
    return found


@pytest.mark.parametrize("where", ["--sandbox", "--local"])
def test_sigint_in_the_middle_leaves_nothing_behind(tmp_path: Path, where: str) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    if where == "--sandbox":
        need_root()
    before = _netns()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "rehearse", where, "--hosts", "2"], cwd=tmp_path,
        env=bg_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # until the load runs and bg is deploying B
        seen.append(line)
        if line.startswith("[2/5]") or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    workdirs = list(tmp.iterdir())
    assert len(workdirs) == 1, (workdirs, "".join(seen))
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert list(tmp.iterdir()) == [], "the temporary directory is still there"
    assert _processes_mentioning(workdirs[0]) == []
    assert _mounts_mentioning(workdirs[0]) == []
    assert _netns() <= before, "a namespace is still there"
