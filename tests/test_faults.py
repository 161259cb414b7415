"""Faults during a deploy, each with a clear error, the previous version still live
(probed through nginx), `bg status` exit 0 and nothing half-written.

Local faults use the workspace (real nginx, real sample app); SSH faults use sandbox hosts
(real sshd and nginx in their own network and mount namespaces). bg runs through its CLI.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import Sandbox, SandboxHost, netns_pids
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace
from tests.sandbox_fixtures import MakeSandbox, make_sandbox  # noqa: F401
from tests.test_ssh_e2e import bg as ssh_bg
from tests.test_ssh_e2e import through_nginx

HARD_LIMIT = 60.0  # no watcher thread here runs longer


# ----------------------------------------------------------------------------- checks


def nothing_half_written(root: Path, upstream: Path, *, upload_temps_ok: bool = False,
                         staged_ok: bool = False) -> None:
    """No staged or backup upstream, no lock, no half-extracted release, no upload left."""
    # (the `.bg-prev` backup of the last successful switch stays by design)
    staged = [p.name for p in upstream.parent.iterdir() if p.name.endswith(".bg-new")]
    assert staged_ok or staged == [], f"staged upstream files left: {staged}"
    assert not (root / "bg" / "lock").exists(), "the lock was left behind"
    tmp = [p.name for p in (root / "releases").iterdir() if p.name.startswith(".tmp")]
    assert tmp == [], f"half-extracted releases left: {tmp}"
    uploads = root / "bg" / "uploads"
    if uploads.exists():
        left = [p.name for p in uploads.iterdir()
                if not (upload_temps_ok and p.name.startswith(".") and p.name.endswith(".tmp"))]
        assert left == [], f"uploads left: {left}"


def local_intact(ws: Workspace, version: str, slot: str, *, staged_ok: bool = False) -> None:
    r = ws.get()
    assert r.status_code == 200 and f"hello {version} slot={slot}" in r.text, r.text
    st = ws.bg("--json", "status", check=False)
    assert st.returncode == 0, st.stdout + st.stderr
    host = json.loads(st.stdout)["result"]["hosts"][0]
    assert (host["live"], host["version"]) == (slot, version), host
    nothing_half_written(ws.root, Path(ws.nginx.upstream_file), staged_ok=staged_ok)


def fails(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{out}"
    for w in words:
        assert w.lower() in out.lower(), f"{w!r} not in\n{out}"
    assert "Traceback" not in out, out
    return out


def set_key(config: Path, section: str, key: str, line: str) -> None:
    """Replace ``key = ...`` in ``[section]`` (or add it there)."""
    lines = config.read_text().splitlines()
    out, current, done = [], "", False
    for ln in lines:
        if ln.startswith("["):
            if current == section and not done:
                out.append(line)
                done = True
            current = ln.strip("[]")
        if current == section and ln.split("=")[0].strip() == key:
            ln, done = line, True
        out.append(ln)
    if not done:
        out.append(f"[{section}]" if current != section else "")
        out.append(line)
    config.write_text("\n".join(out) + "\n")


@pytest.fixture
def v1(workspace: Workspace, tmp_path: Path) -> Workspace:
    workspace.bg("deploy", str(build_sample(tmp_path / "arts", "1.0.0")))
    local_intact(workspace, "1.0.0", "blue")
    return workspace


def watch(until: Callable[[], bool], then: Callable[[], None]) -> threading.Thread:
    """Run ``then`` once ``until()`` holds (polled every 5 ms, for at most HARD_LIMIT)."""
    def loop() -> None:
        deadline = time.monotonic() + HARD_LIMIT
        while time.monotonic() < deadline:
            if until():
                then()
                return
            time.sleep(0.005)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


# ----------------------------------------------------------------------------- nginx


def test_reload_fails(v1: Workspace, tmp_path: Path) -> None:
    before = v1.upstream()
    set_key(v1.config, "nginx", "reload_command", 'reload_command = "false"')
    out = fails(v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0")), check=False),
                ExitCode.SWITCH, "reload")
    assert v1.upstream() == before  # the old upstream file back, byte for byte
    local_intact(v1, "1.0.0", "blue")
    # nginx never loaded the new file: nothing to undo, so no alarm either
    assert "NOT RESTORED" not in out, out


def test_reload_does_nothing_so_confirmation_fails(v1: Workspace, tmp_path: Path) -> None:
    before = v1.upstream()
    set_key(v1.config, "nginx", "reload_command", 'reload_command = "true"')
    fails(v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0")), check=False),
          ExitCode.SWITCH, "did not send traffic to green")
    assert v1.upstream() == before
    local_intact(v1, "1.0.0", "blue")


# ----------------------------------------------------------------------------- the new slot


def test_new_slot_dies_right_after_switch(v1: Workspace, tmp_path: Path) -> None:
    state = v1.root / "bg" / "state.json"
    killed: list[int] = []

    def kill_green() -> None:
        pid = int((v1.root / "run" / "green.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        killed.append(pid)

    # state.json names green only once nginx confirmed the switch: the moment right after
    def switched() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return bool(json.loads(state.read_text())["live"] == "green")
        return False

    # A request still being sent to an old nginx worker keeps the drain (between recording
    # the state and retiring blue) open until the watcher has killed green: no race.
    held = socket.create_connection(("127.0.0.1", v1.listen_port))
    held.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")

    def kill_green_then_let_go() -> None:
        kill_green()
        time.sleep(0.3)
        held.close()

    watcher = watch(switched, kill_green_then_let_go)
    try:
        proc = v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0")), check=False)
    finally:
        held.close()
    watcher.join(5)
    assert killed, "the watcher never saw the switch"
    fails(proc, ExitCode.SWITCH, "green")
    local_intact(v1, "1.0.0", "blue")


def test_health_endpoint_hangs(v1: Workspace, tmp_path: Path) -> None:
    # The env file reaches only slots started after it: 1.0.0 (running) answers, 2.0.0 hangs.
    (v1.dir / "hang.env").write_text("SAMPLE_HANG=2.0.0\n")
    set_key(v1.config, "app", "env_file", 'env_file = "hang.env"')
    set_key(v1.config, "health", "deadline", "deadline = 4.0")
    started = time.monotonic()
    fails(v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0")), check=False),
          ExitCode.HEALTH, "green")
    assert time.monotonic() - started < 30  # the per-probe timeout bounds a hanging probe
    assert not (v1.root / "run" / "green.pid").exists(), "the hanging slot was left running"
    local_intact(v1, "1.0.0", "blue")


def test_failed_health_leaves_no_staged_upstream(v1: Workspace, tmp_path: Path) -> None:
    set_key(v1.config, "health", "deadline", "deadline = 1.0")
    fails(v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0", health_status=503)),
                check=False), ExitCode.HEALTH)
    local_intact(v1, "1.0.0", "blue")


def test_slot_port_taken_by_a_foreign_process(v1: Workspace, tmp_path: Path) -> None:
    foreign = socket.socket()
    foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    foreign.bind(("127.0.0.1", v1.ports["green"]))
    foreign.listen()
    try:
        out = fails(v1.bg("deploy", str(build_sample(tmp_path / "arts", "2.0.0")),
                          check=False), ExitCode.FAILED, str(v1.ports["green"]))
        assert "port" in out.lower()
        # the foreign process is untouched: it still accepts
        with socket.create_connection(("127.0.0.1", v1.ports["green"]), timeout=2):
            pass
        local_intact(v1, "1.0.0", "blue")
    finally:
        foreign.close()


# ----------------------------------------------------------------------------- SSH


def sshd_sessions(host: SandboxHost) -> list[int]:
    """The host's per-connection sshd processes (not its listener)."""
    listener = int(host.sshd_pid_file.read_text().strip())
    out = []
    for pid in netns_pids([host.netns]):
        if pid == listener:
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd:"):
                out.append(pid)
    return out


def drop_connections(host: SandboxHost) -> int:
    pids = sshd_sessions(host)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def padded_sample(out: Path, version: str, pad: int) -> Path:
    """The sample release plus ``pad`` random bytes (incompressible: slow to upload, big to
    extract)."""
    path = build_sample(out, version)
    members = []
    with tarfile.open(path) as src:
        for m in src.getmembers():
            f = src.extractfile(m) if m.isfile() else None
            members.append((m, f.read() if f else None))
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        info = tarfile.TarInfo("pad.bin")
        info.size = pad
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(os.urandom(pad)))
    return path


@pytest.fixture
def ssh_v1(make_sandbox: MakeSandbox, tmp_path: Path  # noqa: F811
           ) -> Iterator[tuple[Sandbox, Path]]:
    sandbox = make_sandbox(1)
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml")
    ssh_bg(config, "setup")
    ssh_bg(config, "deploy", str(build_sample(tmp_path / "arts", "1.0.0")))
    yield sandbox, config


def ssh_intact(sandbox: Sandbox, config: Path, version: str, slot: str, *,
               upload_temps_ok: bool = False) -> None:
    host = sandbox.hosts[0]
    assert through_nginx(host) == (f"hello {version} slot={slot}", slot)
    st = ssh_bg(config, "--json", "status", check=False)
    assert st.returncode == 0, st.stdout + st.stderr
    h = json.loads(st.stdout)["result"]["hosts"][0]
    assert (h["live"], h["version"]) == (slot, version), h
    nothing_half_written(host.srv("/srv/hello"), upstream_of(host),
                         upload_temps_ok=upload_temps_ok)


def upstream_of(host: SandboxHost) -> Path:
    """The host's live upstream file, as seen from here."""
    return host.nginx.prefix / "conf.d" / Path(host.nginx.upstream_file).name


def drop_during_upload(sandbox: Sandbox, config: Path, tmp_path: Path) -> Path:
    """Deploy a 48 MiB release and cut the host's SSH sessions once the upload began."""
    host = sandbox.hosts[0]
    art = padded_sample(tmp_path / "big", "2.0.0", 48 << 20)
    uploads = host.srv("/srv/hello/bg/uploads")
    dropped: list[int] = []
    watcher = watch(lambda: any(uploads.iterdir()), lambda: dropped.append(
        drop_connections(host)))
    proc = ssh_bg(config, "deploy", str(art), check=False)
    watcher.join(5)
    assert dropped and dropped[0] >= 1, "the upload was never seen"
    fails(proc, ExitCode.HOST, host.address)
    return art


def test_connection_drops_during_upload(ssh_v1: tuple[Sandbox, Path], tmp_path: Path
                                        ) -> None:
    sandbox, config = ssh_v1
    host = sandbox.hosts[0]
    art = drop_during_upload(sandbox, config, tmp_path)
    ssh_intact(sandbox, config, "1.0.0", "blue", upload_temps_ok=True)
    assert not host.srv("/srv/hello/releases/2.0.0").exists()
    # and the next deploy just works
    ssh_bg(config, "deploy", str(art))
    assert through_nginx(host)[0] == "hello 2.0.0 slot=green"


def test_dropped_upload_leaves_no_temp_file(ssh_v1: tuple[Sandbox, Path], tmp_path: Path
                                            ) -> None:
    sandbox, config = ssh_v1
    host = sandbox.hosts[0]
    art = drop_during_upload(sandbox, config, tmp_path)
    ssh_bg(config, "deploy", str(art))
    assert list(host.srv("/srv/hello/bg/uploads").iterdir()) == []


def nginx_workers(host: SandboxHost) -> set[int]:
    master = host.nginx.master_pid()
    out = set()
    for pid in netns_pids([host.netns]):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: worker"):
                out.add(pid)
    assert master is not None
    return out


@pytest.mark.parametrize("moment", [
    "stage",
    "reload",
])
def test_connection_drops_during_switch(ssh_v1: tuple[Sandbox, Path], tmp_path: Path,
                                        moment: str) -> None:
    sandbox, config = ssh_v1
    host = sandbox.hosts[0]
    upstream = upstream_of(host)
    workers = nginx_workers(host)
    dropped: list[int] = []
    if moment == "stage":  # the staged upstream is in place, nginx not yet reloaded
        def until() -> bool:
            return "live=green" in upstream.read_text()
    else:  # nginx reloaded (new workers), bg confirming through nginx
        def until() -> bool:
            return bool(nginx_workers(host) - workers)
    watcher = watch(until, lambda: dropped.append(drop_connections(host)))
    proc = ssh_bg(config, "deploy", str(build_sample(tmp_path / "arts", "2.0.0")),
                  check=False)
    watcher.join(5)
    assert dropped, "the switch was never seen"
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    if proc.returncode == 0:
        # bg's next round trip reconnected and the deploy completed: fine too, as long as
        # what it says is what nginx serves
        ssh_intact(sandbox, config, "2.0.0", "green")
    else:
        fails(proc, proc.returncode, host.address)
        assert proc.returncode in (ExitCode.HOST, ExitCode.SWITCH), out
        ssh_intact(sandbox, config, "1.0.0", "blue")
        # the live upstream file says what nginx serves (no staged file left in its place)
        assert "live=blue" in upstream.read_text()


def test_disk_fills_during_extraction(ssh_v1: tuple[Sandbox, Path], tmp_path: Path) -> None:
    sandbox, config = ssh_v1
    host = sandbox.hosts[0]
    releases = host.srv("/srv/hello/releases")
    # A 4 MiB tmpfs over releases/ in the host's mount namespace, holding the releases
    # already there (1.0.0 is live and must stay readable).
    subprocess.run(host.exec_argv([
        "sh", "-c", "mkdir -p /tmp/bg-keep && cp -a /srv/hello/releases/. /tmp/bg-keep/"
        " && mount -t tmpfs -o size=4m bgfull /srv/hello/releases"
        " && cp -a /tmp/bg-keep/. /srv/hello/releases/ && rm -rf /tmp/bg-keep"]), check=True)
    try:
        art = padded_sample(tmp_path / "big", "2.0.0", 8 << 20)
        proc = ssh_bg(config, "deploy", str(art), check=False)
        # ArtifactError (exit 2) since the executor rewrite; any clear refusal will do
        out = fails(proc, proc.returncode, "extracting 2.0.0 failed")
        assert proc.returncode in (ExitCode.USAGE, ExitCode.FAILED), out
        inside = subprocess.run(host.exec_argv(["ls", "-a", "/srv/hello/releases"]),
                                capture_output=True, text=True, check=True).stdout.split()
        assert not [n for n in inside if n.startswith(".tmp")], inside
        assert "2.0.0" not in inside
        assert through_nginx(host) == ("hello 1.0.0 slot=blue", "blue")
        st = ssh_bg(config, "--json", "status", check=False)
        assert st.returncode == 0, st.stdout + st.stderr
    finally:
        subprocess.run(host.exec_argv(["umount", "/srv/hello/releases"]), check=False)
    assert releases.exists()
    ssh_intact(sandbox, config, "1.0.0", "blue")


@pytest.mark.unit
def test_set_key_edits_the_right_section() -> None:
    """``set_key`` edits the right section (the tests above depend on it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.toml"
        p.write_text('[app]\nname = "x"\n[nginx]\nreload_command = "a"\n')
        set_key(p, "nginx", "reload_command", 'reload_command = "false"')
        set_key(p, "app", "env_file", 'env_file = "e"')
        text = p.read_text()
        assert 'reload_command = "false"' in text and 'reload_command = "a"' not in text
        assert text.index('env_file = "e"') < text.index("[nginx]")
