"""The engine end to end on this machine: real nginx, real sample app, the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import httpx

from bluegreen.errors import ExitCode
from bluegreen.lock import _process_start
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, bg_argv


def answer(ws: Workspace) -> tuple[str, str | None]:
    r = ws.get()
    assert r.status_code == 200, r.text
    return r.text.strip(), r.headers.get("X-BG-Slot")


def live(ws: Workspace) -> tuple[str | None, str | None]:
    host = ws.status()["hosts"][0]
    return host["live"], host["version"]


def test_deploy_deploy_rollback_switch(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    v1 = build_sample(tmp_path / "art", "1.0.0")
    v2 = build_sample(tmp_path / "art", "2.0.0")

    ws.bg("deploy", str(v1))
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")
    assert live(ws) == ("blue", "1.0.0")

    ws.bg("deploy", str(v2))
    assert answer(ws) == ("hello 2.0.0 slot=green", "green")
    status = ws.status()
    assert status["ok"] is True
    host = status["hosts"][0]
    assert (host["live"], host["version"], host["previous"]) == ("green", "2.0.0", "1.0.0")
    assert host["slots"]["blue"]["running"] is False  # retired after the drain
    assert host["slots"]["green"]["healthy"] is True

    ws.bg("rollback")
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")
    assert live(ws) == ("blue", "1.0.0")

    ws.bg("switch")
    assert answer(ws) == ("hello 2.0.0 slot=green", "green")
    assert live(ws) == ("green", "2.0.0")

    history = json.loads(ws.bg("--json", "history", "--steps", "-n", "200").stdout
                         )["result"]["local"]
    ops = [e["op"] for e in history if e["step"] == "done"]
    assert ops == ["deploy", "deploy", "rollback", "switch"]


def test_rollback_is_instant_when_old_slot_is_warm(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    ws.bg("deploy", "--keep-old", str(build_sample(tmp_path / "art", "2.0.0")))
    assert ws.status()["hosts"][0]["slots"]["blue"]["running"] is True
    pid_before = (ws.root / "run" / "blue.pid").read_text()
    out = ws.bg("--json", "rollback").stdout
    steps = [s["title"] for s in json.loads(out)["result"]["steps"]]
    assert not any(t.startswith("start ") for t in steps), steps  # no restart: a pure switch
    assert (ws.root / "run" / "blue.pid").read_text() == pid_before
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")


def test_unhealthy_release_is_never_switched_to(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    upstream = ws.upstream()
    bad = build_sample(tmp_path / "art", "2.0.0", health_status=500)
    cfg = ws.config.read_text().replace("deadline = 15.0", "deadline = 2.0")
    ws.config.write_text(cfg)
    proc = ws.bg("deploy", str(bad), check=False)
    assert proc.returncode == ExitCode.HEALTH, proc.stderr
    assert "never became healthy" in proc.stderr
    assert "HTTP 500" in proc.stderr
    assert "sample 2.0.0 listening" in proc.stderr  # the slot's log tail is shown
    assert ws.upstream() == upstream
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")
    host = ws.status()["hosts"][0]
    assert (host["live"], host["version"]) == ("blue", "1.0.0")
    assert host["slots"]["green"]["running"] is False  # the failed slot was stopped


def test_crashing_release_fails_fast(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    started = time.monotonic()
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0", crash=True)), check=False)
    assert proc.returncode == ExitCode.HEALTH
    assert "process exited" in proc.stderr and "crashing on purpose" in proc.stderr
    assert time.monotonic() - started < 10  # did not wait for the 15 s deadline
    assert answer(ws)[0] == "hello 1.0.0 slot=blue"


def test_invalid_template_is_never_loaded(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    before = ws.upstream()
    template = tmp_path / "bad.conf.j2"
    template.write_text(
        "upstream {{ app }}_live { server 127.0.0.1:{{ port }}; no_such_directive on; }\n"
        'map "" ${{ app }}_slot { default "{{ slot }}"; }\n'
    )
    ws.config.write_text(
        ws.config.read_text().replace("[nginx]\n", f'[nginx]\ntemplate = "{template}"\n')
    )
    master = ws.nginx.master_pid()
    workers_before = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True
    ).stdout.split()
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), check=False)
    assert proc.returncode == ExitCode.SWITCH, proc.stderr
    assert "nginx rejected" in proc.stderr and "no_such_directive" in proc.stderr
    assert ws.upstream() == before  # byte for byte
    workers_after = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True
    ).stdout.split()
    # nginx was not reloaded: no new worker (the first deploy's old workers may still be
    # on their way out: nothing was retired, so bg did not wait for them)
    assert workers_after and set(workers_after) <= set(workers_before)
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")
    assert ws.status()["hosts"][0]["slots"]["green"]["running"] is False


def test_template_syntax_error_is_a_config_error(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    template = tmp_path / "broken.conf.j2"
    template.write_text("upstream {{ app }_live {")
    ws.config.write_text(
        ws.config.read_text().replace("[nginx]\n", f'[nginx]\ntemplate = "{template}"\n')
    )
    before = ws.upstream()
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")), check=False)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "broken.conf.j2" in proc.stderr
    assert ws.upstream() == before
    assert not (ws.root / "bg" / "lock").exists()


def _hold_lock(ws: Workspace, pid: int) -> None:
    lock = ws.root / "bg" / "lock"
    lock.mkdir()
    holder = {"user": "alice", "controller": socket.gethostname(), "pid": pid,
              "started": _process_start(pid), "command": "deploy 9.9.9",
              "time": "2026-01-01T00:00:00+00:00"}
    (lock / "holder.json").write_text(json.dumps(holder))


def test_lock_held_by_live_process_blocks_deploy(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _hold_lock(ws, sleeper.pid)
        proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")), check=False)
        assert proc.returncode == ExitCode.LOCKED, proc.stderr
        assert "alice@" in proc.stderr and f"pid {sleeper.pid}" in proc.stderr
        assert "deploy 9.9.9" in proc.stderr
        assert not (ws.root / "releases" / "1.0.0").exists()
        assert (ws.root / "bg" / "lock" / "holder.json").exists()  # not ours to remove
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_holder_on_this_controller_is_taken_over(workspace: Workspace, tmp_path: Path
                                                      ) -> None:
    ws = workspace
    gone = subprocess.Popen(["true"])
    gone.wait()
    _hold_lock(ws, gone.pid)
    lock_status = json.loads(ws.bg("--json", "lock", "status").stdout)["result"]
    assert lock_status["local"]["stale"] is True
    status = ws.bg("--json", "status", check=False)
    assert "interrupted operation: `deploy 9.9.9`" in status.stdout
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    assert answer(ws)[0] == "hello 1.0.0 slot=blue"
    assert not (ws.root / "bg" / "lock").exists()
    history = json.loads(ws.bg("--json", "history", "--steps", "-n", "200").stdout
                         )["result"]["local"]
    taken = [e for e in history if e["step"] == "lock" and e["outcome"] == "taken over"]
    assert taken and taken[0]["interrupted"] == "deploy 9.9.9"


def test_lock_of_another_controller_is_reported_with_the_way_out(
        workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    _hold_lock(ws, 1)
    holder = json.loads((ws.root / "bg" / "lock" / "holder.json").read_text())
    holder["controller"] = "elsewhere.example"
    (ws.root / "bg" / "lock" / "holder.json").write_text(json.dumps(holder))
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")), check=False)
    assert proc.returncode == ExitCode.LOCKED, proc.stderr
    assert "alice@elsewhere.example" in proc.stderr and "bg lock release" in proc.stderr
    ws.bg("lock", "release")
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))


def test_concurrent_deploys_one_wins(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    slow = build_sample(tmp_path / "art", "1.0.0", boot_delay=1.5)
    other = build_sample(tmp_path / "art", "2.0.0")
    first = subprocess.Popen(
        bg_argv("deploy", str(slow), config=ws.config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 10
    while not (ws.root / "bg" / "lock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = ws.bg("deploy", str(other), check=False)
    assert second.returncode == ExitCode.LOCKED, second.stderr
    assert f"pid {first.pid}" in second.stderr
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert answer(ws)[0] == "hello 1.0.0 slot=blue"


def _evil_tar(path: Path, kind: str) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("bin/server")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"hi\n"))
        if kind == "absolute":
            info = tarfile.TarInfo("/tmp/bg-evil-absolute")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "dotdot":
            info = tarfile.TarInfo("bin/../../bg-evil-dotdot")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            link = tarfile.TarInfo("escape")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../.."
            tar.addfile(link)
            info = tarfile.TarInfo("escape/bg-evil-symlink")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "device":
            dev = tarfile.TarInfo("dev-null")
            dev.type = tarfile.CHRTYPE
            dev.devmajor, dev.devminor = 1, 3
            tar.addfile(dev)
    return path


def test_malicious_tarballs_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    for kind, words in [("absolute", "absolute path"), ("dotdot", "'..'"),
                        ("symlink", "outside the release"), ("device", "device")]:
        evil = _evil_tar(tmp_path / f"hello-6.6.6-{kind}.tar.gz", kind)
        proc = ws.bg("deploy", "--version", f"6.6.6-{kind}", str(evil), check=False)
        assert proc.returncode == ExitCode.USAGE, (kind, proc.stderr)
        assert words in proc.stderr, (kind, proc.stderr)
        assert list((ws.root / "releases").iterdir()) == []
        assert list((ws.root / "bg" / "uploads").iterdir()) == []
    assert not Path("/tmp/bg-evil-absolute").exists()
    assert not (tmp_path / "bg-evil-dotdot").exists()
    assert not (ws.root.parent / "bg-evil-symlink").exists()
    assert not (ws.root / "bg" / "journal.jsonl").exists()  # no operation even started


def test_zero_failed_requests_across_three_deploys(workspace: Workspace, tmp_path: Path) -> None:
    """Continuous new-connection load through nginx while three deploys go out."""
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    stop = threading.Event()
    results: list[tuple[float, int, str]] = []  # (when it was answered, status, body)

    def load() -> None:
        deadline = time.monotonic() + 60  # bounded even if the test body hangs
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = httpx.get(ws.url, headers={"Connection": "close"}, timeout=5)
                results.append((time.monotonic(), r.status_code, r.text))
            except httpx.HTTPError as exc:
                results.append((time.monotonic(), 0, repr(exc)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    windows = []
    try:
        for v in ("2.0.0", "3.0.0", "4.0.0"):
            artifact = build_sample(tmp_path / "art", v)
            began = time.monotonic()
            ws.bg("deploy", str(artifact))
            windows.append((began, time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r[1] != 200]
    # Each deploy ran under load, however fast it was (a count over all three, > 100, failed
    # once deploys got quicker on a busy machine: 96).
    for began, ended in windows:
        assert sum(began <= at <= ended for at, _, _ in results) >= 5, (began, ended)
    assert failures == [], failures[:5]
    served = {text.split()[1] for _, _, text in results}
    assert {"1.0.0", "4.0.0"} <= served
    assert answer(ws)[0] == "hello 4.0.0 slot=green"
    assert os.path.isdir(ws.root / "releases" / "2.0.0")  # keep_releases = 3: 1.0.0 pruned
    assert not os.path.isdir(ws.root / "releases" / "1.0.0")


def _tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (or link target), for equality."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def test_dry_run_prints_the_plan_and_changes_nothing(workspace: Workspace, tmp_path: Path
                                                     ) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    art = build_sample(tmp_path / "art", "2.0.0")
    before = _tree_digest(ws.dir)
    proc = ws.bg("deploy", "--dry-run", str(art))
    assert "plan: deploy 2.0.0 (dry run: nothing was touched on any host)" in proc.stdout
    assert "local: ship, start, gate, switch (blue -> green)" in proc.stdout
    assert f"start 2.0.0 in green (:{ws.ports['green']})" in proc.stdout
    assert "stop blue" in proc.stdout
    # The nginx diff the switch would make.
    assert f"-    server 127.0.0.1:{ws.ports['blue']}" in proc.stdout
    assert f"+    server 127.0.0.1:{ws.ports['green']}" in proc.stdout
    dry = ws.bg("--json", "deploy", "--dry-run", "--keep-old", str(art)).stdout
    out = json.loads(dry)["result"]
    host = out["plan"]["hosts"][0]
    assert (host["slot"], host["old_slot"], host["retire"]) == ("green", "blue", None)
    assert [s["kind"] for s in out["plan"]["steps"]] == ["upload", "boot", "switch", "finish"]
    nothing = ws.bg("rollback", "--dry-run", check=False)
    assert nothing.returncode == ExitCode.FAILED
    assert "no previous release is recorded" in nothing.stderr
    assert _tree_digest(ws.dir) == before  # no lock, no directory, no file touched
    assert answer(ws) == ("hello 1.0.0 slot=blue", "blue")


def test_dry_run_on_a_host_never_set_up_creates_nothing(workspace: Workspace, tmp_path: Path
                                                        ) -> None:
    ws = workspace
    shutil.rmtree(ws.root, ignore_errors=True)
    proc = ws.bg("deploy", "--dry-run", str(build_sample(tmp_path / "art", "1.0.0")))
    assert "local: ship, start, gate, switch (- -> blue)" in proc.stdout
    assert not ws.root.exists()
