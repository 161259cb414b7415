"""The test stand: a private nginx in front of a bg workspace, and the app it deploys.

A private nginx on 127.0.0.1 (``bluegreen.sandbox.nginx.NginxServer``) in front of a bg
workspace with two slots, runner ``command`` for the sample app or ``elixir`` for a real
``mix release``. Only 127.0.0.1 is ever contacted; nginx and the slots listen on ports in
[10000, 20000): below the ephemeral range (32768+), and away from the ports the test suite
picks (20000-30000).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.rehearse.envs import free_port
from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer
from bluegreen.sandbox.sample import build_sample
from bluegreen.tomlwriter import dumps

from untar import extract

from loadgen import HOST, wait_http

REPO = Path(__file__).resolve().parent.parent
APP = "hello"

Log = Callable[[str], None]


def bg_startup_seconds(runs: int = 3) -> float:
    """How long ``python -m bluegreen --version`` takes: bg's fixed cost per command."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bluegreen", "--version"], capture_output=True,
                       check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.monotonic() - started)
    return round(statistics.median(times), 3)


def nginx_version() -> str:
    proc = subprocess.run([NGINX_BIN, "-v"], capture_output=True, text=True, check=False)
    return (proc.stderr or proc.stdout).strip().rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- apps
@dataclass
class AppKind:
    """How to build a release of the app and run one by hand (for the stop/start baseline)."""

    name: str
    build: Callable[[Path, str], Path]
    config: Callable[[Path], dict[str, str]]  # the [app] section's runner keys, given the workdir
    spawn: Callable[[Path, int, Path], subprocess.Popen[bytes]]  # release dir, port, log
    stop: Callable[[subprocess.Popen[bytes], Path], None]
    health_deadline: float = 15.0


def _spawn(argv: list[str], rel: Path, env: dict[str, str], log: Path
           ) -> subprocess.Popen[bytes]:
    """Start a release in its own session (so it can be signalled as a group), logging."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv, cwd=rel, env=env, stdin=subprocess.DEVNULL, stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def _sigterm_and_wait(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def sample_app() -> AppKind:
    """The sample app (bluegreen/sandbox/sample.py), as the test suite builds it."""
    return AppKind(
        name="sample",
        build=lambda out, version: build_sample(out, version, app=APP),
        config=lambda _wd: {"runner": "command", "command": "bin/server"},
        spawn=lambda rel, port, log: _spawn(
            [str(rel / "bin" / "server")], rel,
            {**os.environ, "PORT": str(port), "BG_SLOT": "single"}, log),
        stop=lambda proc, _rel: _sigterm_and_wait(proc),
    )


def elixir_app() -> AppKind:
    """A real ``mix release`` (bluegreen.rehearse.elixir builds it, offline and cached)."""
    from bluegreen.rehearse import elixir

    if (why := elixir.available()) is not None:
        raise SystemExit(why)
    cookie = "benchcookie" + os.urandom(8).hex()

    def env(rel: Path, port: int) -> dict[str, str]:
        return {**os.environ, "PORT": str(port), "RELEASE_NODE": "hello_single",
                "RELEASE_DISTRIBUTION": "sname", "RELEASE_COOKIE": cookie,
                "RELEASE_TMP": str(rel.parent / "tmp-single")}

    return AppKind(
        name="elixir",
        build=lambda out, version: elixir.build_release(version, out),
        config=lambda _wd: {"runner": "elixir", "release_name": "hello"},
        spawn=lambda rel, port, log: _spawn(
            [str(rel / "bin" / APP), "start"], rel, env(rel, port), log),
        stop=lambda proc, _rel: _sigterm_and_wait(proc, 30.0),
        health_deadline=60.0,
    )


# ----------------------------------------------------------------------------- the stand
class Stand:
    """nginx, a bg workspace with two slots, the releases, and a port for stop/start."""

    def __init__(self, app: AppKind, workdir: Path) -> None:
        self.app = app
        self.workdir = workdir
        taken: set[int] = set()
        self.listen = free_port(taken)
        self.blue, self.green, self.single = free_port(taken), free_port(taken), free_port(taken)
        self.nginx = NginxServer(prefix=self.workdir / "nginx", listen=f"{HOST}:{self.listen}",
                                 app=APP)
        self.config = self.workdir / "bluegreen.toml"
        self.root = self.workdir / "srv" / APP
        self.artifacts = self.workdir / "artifacts"
        self.boot_idle: list[float] = []
        self.stop_idle: list[float] = []  # SIGTERM to exit, idle (measure_boot)
        # The stop/start baseline's release, which serves until ``cleanup``.
        self.single_release: tuple[subprocess.Popen[bytes], Path] | None = None
        self._built: dict[str, Path] = {}

    def write_config(self) -> None:
        app = {"name": APP, "root": str(self.root), "keep_releases": 4, "stop_timeout": 15,
               **self.app.config(self.workdir)}
        self.config.write_text(dumps({
            "app": app,
            "slots": {"blue": self.blue, "green": self.green},
            "health": {"interval": 0.05, "timeout": 1.0, "deadline": self.app.health_deadline},
            "nginx": {"upstream_file": self.nginx.upstream_file,
                      "test_command": self.nginx.test_command,
                      "reload_command": self.nginx.reload_command,
                      "probe_url": f"http://{HOST}:{self.listen}/",
                      "pid_file": self.nginx.pid_file},
            "switch": {"drain_timeout": 10},
        }))

    def artifact(self, version: str) -> Path:
        if version not in self._built:
            self._built[version] = self.app.build(self.artifacts, version)
        return self._built[version]

    def extract(self, version: str, into: Path) -> Path:
        rel = into / version
        if not rel.exists():
            extract(self.artifact(version), rel)
        return rel

    def bg(self, *args: str, timeout: float = 180.0) -> tuple[int, dict[str, Any], float, float]:
        """``bg --json ARGS`` in a subprocess: exit code, its JSON, start and end times."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bluegreen", "-c", str(self.config), "--json", *args],
                capture_output=True, text=True, timeout=timeout, cwd=self.workdir, env=env,
                check=False,
            )
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = 124, "", f"timed out: {exc}"
        ended = time.monotonic()
        try:
            data: dict[str, Any] = json.loads(stdout) if stdout.strip() else {}
        except json.JSONDecodeError:
            data = {"raw": stdout[-2000:]}
        if code != 0:
            data.setdefault("stderr", stderr[-2000:])
        return code, data, started, ended

    def measure_boot(self, runs: int = 5) -> list[float]:
        """The app's boot time with no load: spawn to first 200 on /health (seconds)."""
        rel = self.extract("0.0.1", self.workdir / "boot")
        port = free_port({self.listen, self.blue, self.green, self.single})
        times = []
        self.stop_idle = []
        for _ in range(runs):
            started = time.monotonic()
            proc = self.app.spawn(rel, port, self.workdir / "boot.log")
            try:
                up = wait_http(port, self.app.health_deadline, every=0.005)
            finally:
                stopping = time.monotonic()
                self.app.stop(proc, rel)
                self.stop_idle.append(time.monotonic() - stopping)
            if up is None:
                raise SystemExit(f"the {self.app.name} app never answered on :{port}")
            times.append(up - started)
        return times

    def prepare(self, log: Log) -> int:
        """nginx, config, artifacts, the app's idle boot time, `bg setup`; 0 when ready."""
        if not Path(NGINX_BIN).exists():
            print(f"needs nginx ({NGINX_BIN}): apt-get install nginx-light", file=sys.stderr)
            return 2
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nginx.render()
        self.write_config()
        log(f"bench in {self.workdir}: nginx {HOST}:{self.listen}, slots :{self.blue}"
            f" :{self.green}, stop/start port :{self.single}, app {self.app.name}")
        for v in ("0.0.1", "1.0.0", "2.0.0"):
            self.artifact(v)
        self.boot_idle = self.measure_boot()
        log(f"app boot time without load (spawn -> first 200 on /health):"
            f" median {statistics.median(self.boot_idle) * 1000:.0f} ms")
        code, data, _, _ = self.bg("setup")
        if code:
            print(f"bg setup failed: {data}", file=sys.stderr)
            return 1
        return 0

    def first_deploys(self, *extra: tuple[str, ...]) -> bool:
        """`bg deploy` 1.0.0 (then each of ``extra``), before any load: nothing is live yet."""
        for args in (("deploy", str(self.artifact("1.0.0"))), *extra):
            code, data, _, _ = self.bg(*args)
            if code:
                print(f"bg {' '.join(args)} failed: {data}", file=sys.stderr)
                return False
        return True

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """nginx runs inside; after, whatever happened, the slots, the release and nginx stop."""
        self.nginx.start()
        try:
            yield
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Stop both slots with bg's own runner scripts (any runner), then nginx."""
        from bluegreen import config as configuration
        from bluegreen.runners import runner_for

        if self.single_release is not None:
            self.app.stop(*self.single_release)
            self.single_release = None
        try:
            runner = runner_for(configuration.load(self.config))
            for slot in ("blue", "green"):
                subprocess.run(["sh", "-c", runner.stop_script(slot)], capture_output=True,
                               timeout=60, check=False)
        finally:
            self.nginx.stop()
