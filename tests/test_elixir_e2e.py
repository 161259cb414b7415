"""Real `mix release` tarballs deployed by bg: locally and on a sandbox host over SSH."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from tests.elixir_release import build_release, elixir_available
from tests.helpers import Workspace, make_workspace, need, run_bg
from tests.sandbox_fixtures import MakeSandbox

ELIXIR_APP = (
    'runner = "elixir"\n'
    'env_file = ".env.production"\n'
    'migrate = "Hello.Release.migrate()"\n'
    'rpc_check = "IO.puts(:ok)"\n'
)
HEALTH = "interval = 0.2\ntimeout = 2.0\ndeadline = 30.0"
HOOKS = '\n[hooks]\nbefore_switch = ["migrate"]\n'


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need(elixir_available(), "elixir/mix is not installed (apt-get install elixir)")
    base = tmp_path_factory.mktemp("releases")
    return {
        "1": build_release("1.0.0", out_dir=base / "v1"),
        "2": build_release("2.0.0", out_dir=base / "v2"),
        "3bad": build_release("3.0.0", out_dir=base / "v3", health_status=500),
        "4slow": build_release("4.0.0", out_dir=base / "v4", boot_delay_ms=3000),
    }


def beams(marker: str, netns: str | None = None) -> dict[str, list[int]]:
    """beam.smp processes per slot node name, among those whose command line has ``marker``
    (and, for a sandbox host, that live in its network namespace)."""
    out: dict[str, list[int]] = {"blue": [], "green": []}
    ns_inode = os.stat(f"/run/netns/{netns}").st_ino if netns else None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "beam" not in cmd.split(" ", 1)[0] or marker not in cmd or stat == "Z":
            continue
        try:
            if ns_inode is not None and os.stat(f"/proc/{pid}/ns/net").st_ino != ns_inode:
                continue
        except OSError:
            continue
        for slot in out:
            if f"hello_{slot}@" in cmd or f"hello_{slot} " in cmd:
                out[slot].append(int(pid))
    return out


class Sampler:
    """Watches beam processes during an operation: were both slots' nodes up at once?"""

    def __init__(self, marker: str, netns: str | None) -> None:
        self.marker = marker
        self.netns = netns
        self.both = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            b = beams(self.marker, self.netns)
            if b["blue"] and b["green"]:
                self.both = True
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def release_cmd(root: Path, slot: str, *args: str, exec_argv: Callable[[list[str]], list[str]]
                | None = None, inside_root: str | None = None) -> subprocess.CompletedProcess[str]:
    """`bin/hello ARGS` against a slot's node, as an operator would run it on the host."""
    r = inside_root or str(root)
    script = (
        f'cd {r}/slots/{slot} && RELEASE_COOKIE="$(cat {r}/shared/cookie)"'
        f" RELEASE_NODE=hello_{slot}@127.0.0.1 RELEASE_DISTRIBUTION=name bin/hello "
        + " ".join(f"'{a}'" for a in args)
    )
    argv = ["sh", "-c", script]
    return subprocess.run(exec_argv(argv) if exec_argv else argv, capture_output=True,
                          text=True, timeout=60)


def run_cycle(bg: Callable[..., subprocess.CompletedProcess[str]],
              get: Callable[[], httpx.Response], releases: dict[str, Path], marker: str,
              check_pid_rpc: Callable[[str], None], journal: Callable[[], str],
              netns: str | None = None) -> str:
    """deploy v1, v2 (both nodes up at once), v3 refused, rollback, switch; returns output."""
    outputs = []

    def body() -> str:
        r = get()
        assert r.status_code == 200, r.text
        return r.text.strip()

    outputs.append(bg("deploy", str(releases["1"])).stderr)
    assert body().startswith("hello v1.0.0 slot=hello_blue@127.0.0.1")

    with Sampler(marker, netns) as sampler:
        outputs.append(bg("deploy", str(releases["2"])).stderr)
    assert sampler.both, "the blue and green nodes never ran at the same time"
    assert body().startswith("hello v2.0.0 slot=hello_green@127.0.0.1")
    assert beams(marker, netns)["blue"] == []  # retired, nothing left

    bad = bg("deploy", str(releases["3bad"]), check=False)
    outputs.append(bad.stderr)
    assert bad.returncode == ExitCode.HEALTH, bad.stderr
    assert "HTTP 500" in bad.stderr
    assert body().startswith("hello v2.0.0 slot=hello_green")
    assert beams(marker, netns)["blue"] == []

    outputs.append(bg("rollback").stderr)
    assert body().startswith("hello v1.0.0 slot=hello_blue")
    assert beams(marker, netns)["green"] == []  # the rolled-back-from node is gone

    outputs.append(bg("switch").stderr)
    assert body().startswith("hello v2.0.0 slot=hello_green")
    assert beams(marker, netns)["blue"] == []
    # After all these deploys, the operator's tools still reach the live node.
    check_pid_rpc("green")
    return "".join(outputs) + journal()


@pytest.fixture
def elixir_ws(tmp_path: Path) -> Iterator[Workspace]:
    need(Path("/usr/sbin/nginx").exists(), "nginx is not installed")
    ws = make_workspace(tmp_path, app_section=ELIXIR_APP, health=HEALTH, extra=HOOKS)
    (tmp_path / ".env.production").write_text("SECRET_KEY_BASE=elixir-secret-9431\n")
    ws.bg("setup")
    ws.nginx.start()
    try:
        yield ws
    finally:
        for slot in ("blue", "green"):
            for pid in beams(str(ws.root))[slot]:
                os.kill(pid, 9)
        ws.nginx.stop()


@pytest.mark.elixir
@pytest.mark.nginx
def test_elixir_local_cycle(elixir_ws: Workspace, releases: dict[str, Path]) -> None:
    ws = elixir_ws
    marker = str(ws.root)

    def pid_rpc(slot: str) -> None:
        pid = release_cmd(ws.root, slot, "pid")
        assert pid.returncode == 0 and pid.stdout.strip().isdigit(), pid.stderr
        rpc = release_cmd(ws.root, slot, "rpc", "IO.puts(21 * 2)")
        assert rpc.returncode == 0 and rpc.stdout.strip() == "42", rpc.stderr

    out = run_cycle(ws.bg, ws.get, releases, marker, pid_rpc,
                    lambda: (ws.root / "bg" / "journal.jsonl").read_text())
    cookie = (ws.root / "shared" / "cookie")
    assert cookie.stat().st_mode & 0o777 == 0o600
    assert len(cookie.read_text()) >= 32
    assert cookie.read_text() not in out
    assert "elixir-secret-9431" not in out
    assert ws.status()["ok"] is True


@pytest.mark.elixir
@pytest.mark.nginx
def test_failing_migration_aborts_before_switch(elixir_ws: Workspace,
                                                releases: dict[str, Path]) -> None:
    ws = elixir_ws
    ws.bg("deploy", str(releases["1"]))
    migrated = ws.bg("migrate")
    assert "migrated with 1.0.0 (blue)" in migrated.stdout
    assert "migrate on " in migrated.stderr  # the step's progress line
    upstream = ws.upstream()
    env = ws.dir / ".env.production"
    env.write_text(env.read_text() + "HELLO_MIGRATE_FAIL=1\n")
    proc = ws.bg("deploy", str(releases["2"]), check=False)
    assert proc.returncode == ExitCode.HOOK, proc.stderr
    assert "`migrate` failed" in proc.stderr and "nothing was switched" in proc.stderr
    assert ws.upstream() == upstream
    assert ws.get().text.startswith("hello v1.0.0 slot=hello_blue")
    assert beams(str(ws.root))["green"] == []
    journal = (ws.root / "bg" / "journal.jsonl").read_text()
    assert '"step": "hook", "time"' not in journal or '"outcome": "failed"' in journal


@pytest.mark.elixir
@pytest.mark.nginx
def test_slow_boot_is_waited_for(elixir_ws: Workspace, releases: dict[str, Path]) -> None:
    ws = elixir_ws
    ws.bg("deploy", str(releases["1"]))
    started = time.monotonic()
    out = json.loads(ws.bg("--json", "deploy", str(releases["4slow"])).stdout)["result"]
    assert time.monotonic() - started > 3.0
    health = next(s for s in out["steps"] if s["title"].startswith("health"))
    assert health["seconds"] > 2.5
    assert ws.get().text.startswith("hello v4.0.0 slot=hello_green")


@pytest.mark.elixir
def test_elixir_over_ssh(make_sandbox: MakeSandbox, tmp_path: Path,
                         releases: dict[str, Path]) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    (tmp_path / ".env.production").write_text("SECRET_KEY_BASE=elixir-secret-9431\n")
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", app_section=ELIXIR_APP,
                            health=HEALTH, extra=HOOKS)

    def bg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_bg(*args, config=config, home=tmp_path, timeout=300, check=check)

    bg("setup")

    def get() -> httpx.Response:
        return httpx.get(f"http://{host.address}/", headers={"Connection": "close"}, timeout=5)

    def pid_rpc(slot: str) -> None:
        pid = release_cmd(Path("/srv/hello"), slot, "pid", exec_argv=host.exec_argv)
        assert pid.returncode == 0 and pid.stdout.strip().isdigit(), pid.stderr
        rpc = release_cmd(Path("/srv/hello"), slot, "rpc", "IO.puts(21 * 2)",
                          exec_argv=host.exec_argv)
        assert rpc.stdout.strip() == "42", rpc.stderr

    # Processes of the host's slots are told apart by their release path inside the host.
    out = run_cycle(bg, get, releases, "/srv/hello/releases", pid_rpc,
                    lambda: host.srv("/srv/hello/bg/journal.jsonl").read_text(),
                    netns=host.netns)
    cookie = host.srv("/srv/hello/shared/cookie")
    assert cookie.stat().st_mode & 0o777 == 0o600
    assert cookie.read_text() not in out and "elixir-secret-9431" not in out


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_systemd_unit(tmp_path: Path) -> None:
    """The template unit: text checked always, `systemd-analyze verify` where available."""
    from bluegreen import config
    from bluegreen.layout import Layout
    from bluegreen.runners.systemd import SystemdRunner, render_unit

    cfg = config.parse(
        {"app": {"name": "hello", "root": "/srv/hello", "runner": "systemd"},
         "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"}},
        tmp_path / "bluegreen.toml",
    )
    unit = render_unit(cfg.app, user="deploy")
    assert "WorkingDirectory=/srv/hello\n" in unit
    assert "EnvironmentFile=-/srv/hello/shared/env\n" in unit
    assert "EnvironmentFile=/srv/hello/shared/slot-%i.env\n" in unit
    assert "Environment=RELEASE_NODE=hello_%i@127.0.0.1\n" in unit
    assert "exec /srv/hello/slots/%i/bin/hello start'" in unit
    assert "RELEASE_COOKIE=\"$(cat /srv/hello/shared/cookie)\"" in unit
    assert "HOME" not in unit.replace("# The app's root, not HOME", "")
    runner = SystemdRunner(Layout("/srv/hello"), cfg.app)
    assert "systemctl start hello@blue.service" in runner.start_script("blue", 4001, "1")
    assert runner.alive_script("green") == "systemctl is-active --quiet hello@green.service"
    analyze = "/usr/bin/systemd-analyze"
    if not Path(analyze).exists():
        pytest.skip("systemd-analyze is not installed; the unit text was checked")

    def verify(text: str) -> list[str]:
        unit_dir = tmp_path / "units"
        unit_dir.mkdir(exist_ok=True)
        (unit_dir / "hello@.service").write_text(text)
        proc = subprocess.run([analyze, "verify", "--man=no", f"{unit_dir}/hello@blue.service"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"})
        return [line for line in (proc.stdout + proc.stderr).splitlines() if "hello@" in line]

    assert verify(unit) == []
    # verify does read the file: a broken directive is reported
    assert any("bogus" in line for line in verify(unit.replace("Type=exec", "Type=bogus")))
