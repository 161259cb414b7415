"""Stopping a slot ends the app and everything it started (issue 18, item 1).

The release's start script runs the app as a child, without ``exec`` (``python3 bin/server``
and a helper in the background), as many start scripts do. On Debian ``/bin/sh`` is dash,
which rejects ``kill -TERM -- -PID``: bg used to kill the script alone, leave the app holding
its port, and fail the third deploy ("taken by another process"). Each test finds the slot's
processes from /proc by a tag in their environment (the env file bg loads), so nothing of a
slot can hide, and kills whatever it finds at the end.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.runners.base import stop_pid_script
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, bg_argv, make_workspace, need, serving
from tests.sandbox_fixtures import MakeSandbox
from tests.test_ssh_e2e import bg as ssh_bg
from tests.test_ssh_e2e import through_nginx

WRAPPER = b"""#!/bin/sh
# No exec: the app runs as this script's child, and a helper runs beside it.
sleep 3600 &
python3 bin/server
"""


def build_wrapped(out_dir: Path, version: str, *, start: bytes = WRAPPER, **kw: object
                  ) -> Path:
    """The sample release plus ``bin/start``, a start script without ``exec``."""
    plain = build_sample(out_dir / "plain", version, **kw)  # type: ignore[arg-type]
    path = out_dir / plain.name
    with tarfile.open(plain) as src, path.open("wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("bin/start")
        info.size, info.mode = len(start), 0o755
        tar.addfile(info, io.BytesIO(start))
    return path


def tagged(tag: str, slot: str | None = None) -> list[tuple[int, str, str]]:
    """(pid, comm, slot) of every live process whose environment has ORPHAN_TAG=tag."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(") ", 1)[1][:1]
            comm = (d / "comm").read_text().strip()
        except (OSError, IndexError):
            continue
        if f"ORPHAN_TAG={tag}".encode() not in env or state in "ZX":
            continue
        where = next((v.decode()[8:] for v in env if v.startswith(b"BG_SLOT=")), "?")
        if slot is None or where == slot:
            out.append((int(d.name), comm, where))
    return out


def kill_tagged(tag: str) -> None:
    for pid, _, _ in tagged(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(tag: str, slot: str, timeout: float = 5.0) -> list[tuple[int, str, str]]:
    """The slot's processes still there after ``timeout`` (a stop has returned: they should
    be gone at once; the wait only absorbs the kernel's reaping)."""
    deadline = time.monotonic() + timeout
    while (left := tagged(tag, slot)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ----------------------------------------------------------------------------- the script


def _start_session(tmp_path: Path, script: bytes) -> int:
    start = tmp_path / "start.sh"
    start.write_bytes(script)
    pidfile = tmp_path / "slot.pid"
    subprocess.run(["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sh {start}'"
                    " </dev/null >/dev/null 2>&1 &"], check=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        # the leader and both its children are up
        if text and len(_session(int(text))) >= 3:
            return int(text)
        time.sleep(0.02)
    raise AssertionError("the session never started")


@contextlib.contextmanager
def _session_started(tmp_path: Path, script: bytes) -> Iterator[int]:
    """``_start_session``'s sid; whatever is left of the session is SIGKILLed afterwards."""
    sid = _start_session(tmp_path, script)
    try:
        yield sid
    finally:
        subprocess.run(["kill", "-s", "KILL", "--", f"-{sid}"], capture_output=True)


def _session(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[3] == str(sid) and fields[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


# A start script without exec, its "app" and a helper (sleep: a python3 on PATH may be a
# pyenv shim that forks helpers of its own while it starts).
PLAIN = b"""sleep 3600 &
sleep 3601
"""
# The same, ignoring SIGTERM (an ignored signal stays ignored across fork and exec).
STUBBORN = b"trap '' TERM\n" + PLAIN


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_ends_every_process_of_the_session(tmp_path: Path, shell: str) -> None:
    with _session_started(tmp_path, PLAIN) as sid:
        started = time.monotonic()
        result = subprocess.run([shell, "-c", stop_pid_script(str(tmp_path / "slot.pid"), 5)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Illegal number" not in result.stderr
        assert _session(sid) == [], "a process of the slot's session outlived the stop"
        assert time.monotonic() - started < 3  # SIGTERM sufficed: no wait to the timeout
        assert "killed" not in result.stdout
        assert not (tmp_path / "slot.pid").exists()


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_kills_the_whole_session_after_stop_timeout_and_says_so(
        tmp_path: Path, shell: str) -> None:
    with _session_started(tmp_path, STUBBORN) as sid:
        started = time.monotonic()
        result = subprocess.run([shell, "-c", stop_pid_script(str(tmp_path / "slot.pid"), 0.5)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert 0.4 < time.monotonic() - started < 5
        assert _session(sid) == []
        assert f"killed after 0.5s (SIGKILL to session {sid}:" in result.stdout


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_timeout_is_wall_time_on_a_host_where_each_look_is_slow(
        tmp_path: Path, shell: str) -> None:
    """Each look at a stopping slot forks (`sleep`, the session scan); in an emulated VM a
    10 s stop_timeout counted in sleeps lasted 63-84 s. Here every `sleep` takes 0.4 s: a
    1 s timeout counted in 0.02 s sleeps would wait 50 of them, 20 s."""
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "sleep").write_text("#!/bin/sh\nexec /bin/sleep 0.4\n")
    (slow / "sleep").chmod(0o755)
    with _session_started(tmp_path, STUBBORN) as sid:
        started = time.monotonic()
        result = subprocess.run([shell, "-c", stop_pid_script(str(tmp_path / "slot.pid"), 1)],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PATH": f"{slow}:{os.environ['PATH']}"})
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"killed after 1s (SIGKILL to session {sid}:" in result.stdout
        assert _session(sid) == []
        assert 0.9 < elapsed < 6, elapsed


def _stop_with_kill_spy(tmp_path: Path, shell: str) -> tuple[str, list[list[str]]]:
    """Stop the session of ``slot.pid``, every ``kill`` written down: (stdout, TERM kills)."""
    log = tmp_path / "kills"
    spy = f'kill() {{ echo "$*" >> {log}; command kill "$@"; }}\n'
    result = subprocess.run([shell, "-c", spy + stop_pid_script(str(tmp_path / "slot.pid"), 5)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, [line.split() for line in log.read_text().splitlines()
                           if line.startswith("-s TERM")]


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_sends_a_live_leader_one_sigterm(tmp_path: Path, shell: str) -> None:
    """The group's SIGTERM reaches a live leader (it leads its group): a second one to its
    pid could land inside the app's handler, and a handler need not be re-entrant (the
    sample app's deadlocked there, and stop_timeout's SIGKILL then reset its sockets)."""
    with _session_started(tmp_path, PLAIN) as sid:
        _, terms = _stop_with_kill_spy(tmp_path, shell)
        assert _session(sid) == []
        to_leader = [t for t in terms if str(sid) in t or f"-{sid}" in t]
        assert len(to_leader) == 1, terms


# A start script without exec whose app outlives the shell: its TERM handler takes 0.5 s
# (in a child it forks then, after the group's SIGTERM).
SLOW_TO_EXIT = b"""sh -c 'trap "sleep 0.5; exit 0" TERM; while :; do sleep 0.1; done' &
wait
"""
# A member that moved to a process group of its own (still in the session).
OWN_GROUP = b"""/usr/bin/python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(3600)' &
sleep 3601
"""


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_sends_the_app_behind_a_script_without_exec_one_sigterm(
        tmp_path: Path, shell: str) -> None:
    """The group's SIGTERM reached the app; once the shell is gone, the app (and what its
    handler started) must not get a second one by pid: some servers take a second SIGTERM
    as "stop now", and a handler need not be re-entrant."""
    with _session_started(tmp_path, SLOW_TO_EXIT) as sid:
        stdout, terms = _stop_with_kill_spy(tmp_path, shell)
        assert terms == [["-s", "TERM", "--", f"-{sid}"]]
        assert "killed" not in stdout
        assert _session(sid) == []


@pytest.mark.nginx
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_stop_reaches_a_member_in_a_process_group_of_its_own_once(
        tmp_path: Path, shell: str) -> None:
    with _session_started(tmp_path, OWN_GROUP) as sid:
        deadline = time.monotonic() + 5
        while not (own := [p for p in _session(sid) if os.getpgid(p) != sid]):
            assert time.monotonic() < deadline, "the member never left the leader's group"
            time.sleep(0.02)
        stdout, terms = _stop_with_kill_spy(tmp_path, shell)
        assert terms == [["-s", "TERM", "--", f"-{sid}"], ["-s", "TERM", str(own[0])]]
        assert "killed" not in stdout  # SIGTERM reached it: no wait to stop_timeout
        assert _session(sid) == []


@pytest.mark.nginx
def test_stop_finds_the_session_after_its_leader_died(tmp_path: Path) -> None:
    """A start script that crashed (or was killed alone, as before this fix) leaves its
    children in the session: the next stop of the slot ends them."""
    with _session_started(tmp_path, PLAIN) as sid:
        os.kill(sid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while sid in _session(sid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_session(sid)) == 2  # the app and the helper
        result = subprocess.run(["dash", "-c", stop_pid_script(str(tmp_path / "slot.pid"), 5)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _session(sid) == []


# ----------------------------------------------------------------------------- local deploys


@pytest.fixture
def tag() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    kill_tagged(value)


def wrapped_workspace(tmp_path: Path, tag: str, *, deadline: float = 15.0) -> Iterator[Workspace]:
    need(os.path.exists("/usr/sbin/nginx"), "nginx is not installed")
    env = tmp_path / "app.env"
    env.write_text(f"ORPHAN_TAG={tag}\n")
    ws = make_workspace(tmp_path, app_section={"runner": "command", "command": "bin/start",
                                               "env_file": str(env)},
                        health={"interval": 0.1, "timeout": 1.0, "deadline": deadline})
    with serving(ws):
        yield ws


@pytest.fixture
def wrapped(tmp_path: Path, tag: str) -> Iterator[Workspace]:
    yield from wrapped_workspace(tmp_path, tag, deadline=3.0)


@pytest.mark.nginx
def test_retire_rollback_and_three_deploys_leave_nothing(wrapped: Workspace, tag: str,
                                                        tmp_path: Path) -> None:
    ws, arts = wrapped, tmp_path / "arts"
    ws.bg("deploy", str(build_wrapped(arts, "1.0.0")))
    assert sorted(c for _, c, _ in tagged(tag, "blue")) == ["python3", "sleep", "start"]
    ws.bg("deploy", str(build_wrapped(arts, "2.0.0")))  # retires blue
    assert wait_gone(tag, "blue") == []
    # The third deploy starts blue again on its port: it used to find the port taken.
    ws.bg("deploy", str(build_wrapped(arts, "3.0.0")))
    assert "hello 3.0.0 slot=blue" in ws.get().text
    assert wait_gone(tag, "green") == []
    ws.bg("rollback")  # 2.0.0 again in green, blue retired
    assert "hello 2.0.0 slot=green" in ws.get().text
    assert wait_gone(tag, "blue") == []
    assert ws.status()["ok"]


@pytest.mark.nginx
def test_failed_health_gate_leaves_nothing(wrapped: Workspace, tag: str, tmp_path: Path
                                           ) -> None:
    ws, arts = wrapped, tmp_path / "arts"
    ws.bg("deploy", str(build_wrapped(arts, "1.0.0")))
    proc = ws.bg("deploy", str(build_wrapped(arts, "2.0.0", health_status=503)), check=False)
    assert proc.returncode == ExitCode.HEALTH, proc.stdout + proc.stderr
    assert wait_gone(tag, "green") == []
    assert "hello 1.0.0 slot=blue" in ws.get().text
    ws.bg("deploy", str(build_wrapped(arts, "3.0.0")))  # green's port is free again
    assert "hello 3.0.0 slot=green" in ws.get().text


@pytest.mark.nginx
def test_interrupted_deploy_leaves_nothing(tmp_path: Path, tag: str) -> None:
    for ws in wrapped_workspace(tmp_path, tag):
        arts = tmp_path / "arts"
        ws.bg("deploy", str(build_wrapped(arts, "1.0.0")))
        proc = subprocess.Popen(
            bg_argv("deploy", str(build_wrapped(arts, "2.0.0", boot_delay=5.0)),
                    config=ws.config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ws.dir)
        deadline = time.monotonic() + 20
        while not any(c == "python3" for _, c, _ in tagged(tag, "green")):
            assert time.monotonic() < deadline, "the new slot never started"
            time.sleep(0.05)
        time.sleep(0.3)  # inside the health gate now
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert wait_gone(tag, "green") == []
        assert "hello 1.0.0 slot=blue" in ws.get().text


@pytest.mark.nginx
def test_what_ignores_sigterm_is_killed_after_stop_timeout_and_bg_says_so(
        tmp_path: Path, tag: str) -> None:
    for ws in wrapped_workspace(tmp_path, tag):
        text = ws.config.read_text().replace("stop_timeout = 10", "stop_timeout = 1")
        ws.config.write_text(text)
        arts = tmp_path / "arts"
        stubborn = WRAPPER.replace(b"sleep 3600 &", b"trap '' TERM; sleep 3600 &")
        ws.bg("deploy", str(build_wrapped(arts, "1.0.0", start=stubborn)))
        started = time.monotonic()
        proc = ws.bg("deploy", str(build_wrapped(arts, "2.0.0")))
        out = proc.stdout + proc.stderr
        assert "killed what outlived stop_timeout (1s)" in out, out
        assert time.monotonic() - started > 1
        assert wait_gone(tag, "blue") == []


def _leader(tag: str, slot: str) -> int:
    return next(pid for pid, comm, _ in tagged(tag, slot) if comm == "start")


@pytest.mark.nginx
def test_status_and_check_name_a_slots_leftovers(wrapped: Workspace, tag: str,
                                                 tmp_path: Path) -> None:
    ws = wrapped
    ws.bg("deploy", str(build_wrapped(tmp_path / "arts", "1.0.0")))
    assert ws.status()["ok"]
    assert not any("leftover" in line for line in ws.bg("check", check=False).stdout.splitlines()
                   if "fail" in line)
    os.kill(_leader(tag, "blue"), signal.SIGKILL)  # the start script dies, its children stay
    assert wait_gone(tag, "blue", timeout=0.2)
    status = ws.status()
    problems = " ".join(status["hosts"][0]["problems"])
    assert "blue" in problems and "python3 (pid" in problems and "sleep (pid" in problems, status
    check = ws.bg("check", check=False)
    assert check.returncode != 0
    line = next(ln for ln in check.stdout.splitlines() if "slot blue leftovers" in ln)
    assert "python3 (pid" in line and "sleep (pid" in line, check.stdout
    # As the old stop left them: pid file gone, the app still on the slot's port.
    (ws.root / "run" / "blue.pid").unlink()
    problems = " ".join(ws.status()["hosts"][0]["problems"])
    assert "python3 (pid" in problems and "sleep" not in problems, problems
    kill_tagged(tag)


# ----------------------------------------------------------------------------- over SSH


def test_over_ssh_retire_gate_rollback_interrupt_leave_nothing(
        make_sandbox: MakeSandbox, tmp_path: Path, tag: str) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    env = tmp_path / ".env.production"
    env.write_text(f"ORPHAN_TAG={tag}\n")
    config = sandbox_config(
        sandbox, tmp_path / "bluegreen.toml",
        app_section={"runner": "command", "command": "bin/start",
                     "env_file": ".env.production"},
        health={"interval": 0.1, "timeout": 1.0, "deadline": 3.0})
    ssh_bg(config, "setup")
    arts = tmp_path / "arts"
    for version, slot in (("1.0.0", "blue"), ("2.0.0", "green"), ("3.0.0", "blue")):
        ssh_bg(config, "deploy", str(build_wrapped(arts, version)))
        assert through_nginx(host) == (f"hello {version} slot={slot}", slot)
        other = "green" if slot == "blue" else "blue"
        assert wait_gone(tag, other) == [], f"{other} outlived its retirement"
    ssh_bg(config, "rollback")
    assert through_nginx(host) == ("hello 2.0.0 slot=green", "green")
    assert wait_gone(tag, "blue") == []
    bad = ssh_bg(config, "deploy", str(build_wrapped(arts, "4.0.0", health_status=503)),
                 check=False)
    assert bad.returncode == ExitCode.HEALTH, bad.stdout + bad.stderr
    assert wait_gone(tag, "blue") == []
    # Ctrl-C inside the health gate.
    run_env = {**os.environ, "HOME": str(tmp_path)}
    run_env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.Popen(
        bg_argv("deploy", str(build_wrapped(arts, "5.0.0", boot_delay=5.0)), config=config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env)
    deadline = time.monotonic() + 30
    while not any(c == "python3" for _, c, _ in tagged(tag, "blue")):
        assert time.monotonic() < deadline, "the new slot never started"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert wait_gone(tag, "blue") == []
    assert through_nginx(host) == ("hello 2.0.0 slot=green", "green")
    st = json.loads(ssh_bg(config, "--json", "status", check=False).stdout)["result"]
    assert st["ok"], st
    # What a slot leaves behind is found over SSH too: its start script dies alone.
    os.kill(_leader(tag, "green"), signal.SIGKILL)
    assert wait_gone(tag, "green", timeout=0.2)
    st = json.loads(ssh_bg(config, "--json", "status", check=False).stdout)["result"]
    problems = " ".join(st["hosts"][0]["problems"])
    assert "slot green is not running but left processes behind" in problems, st
    assert "python3 (pid" in problems and "sleep (pid" in problems, st
    check = ssh_bg(config, "check", check=False)
    assert "slot green leftovers" in check.stdout and "python3 (pid" in check.stdout, check.stdout
