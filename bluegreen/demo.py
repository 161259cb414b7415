"""`bg demo`: the whole cycle on this machine, under load, with real nginx.

It builds the sample app, starts a private nginx on 127.0.0.1, and runs deploy v1,
deploy v2, a broken v3 (refused by the health gate), rollback and switch while clients
keep requesting through nginx; then it prints what each operation cost and whether any
request failed. Nothing outside the demo directory is touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer
from bluegreen.sandbox.sample import build_sample


@dataclass
class Load:
    """New-connection clients through nginx, counting every answer; bounded in time."""

    url: str
    clients: int = 4
    limit: float = 300.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = httpx.get(self.url, headers={"Connection": "close"}, timeout=5)
                good = r.status_code == 200
                what = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                good, what = False, type(exc).__name__
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(what)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.ok, self.failed

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _config(workdir: Path, nginx: NginxServer, port: int, blue: int, green: int) -> Path:
    path = workdir / "bluegreen.toml"
    path.write_text(textwrap.dedent(f"""\
        [app]
        name = "hello"
        root = "{workdir / 'srv' / 'hello'}"
        runner = "command"
        command = "bin/server"
        env_file = ".env.demo"
        keep_releases = 3

        [slots]
        blue = {blue}
        green = {green}

        [health]
        interval = 0.1
        deadline = 5.0

        [nginx]
        upstream_file = "{nginx.upstream_file}"
        test_command = "{nginx.test_command}"
        reload_command = "{nginx.reload_command}"
        probe_url = "http://127.0.0.1:{port}/"
        pid_file = "{nginx.pid_file}"

        [switch]
        drain_timeout = 10
        """))
    env = workdir / ".env.demo"
    env.write_text("GREETING=hello\nDEMO_SECRET=not-printed-anywhere\n")
    env.chmod(0o600)
    return path


def run_demo(workdir: Path, *, port: int = 18080, blue: int = 14001, green: int = 14002,
             keep: bool = False) -> int:
    if not Path(NGINX_BIN).exists():
        print(f"bg demo needs nginx ({NGINX_BIN}): apt-get install nginx-light", file=sys.stderr)
        return 2
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    nginx = NginxServer(prefix=workdir / "nginx", listen=f"127.0.0.1:{port}", app="hello")
    nginx.render()
    config = _config(workdir, nginx, port, blue, green)
    art = workdir / "artifacts"
    v1 = build_sample(art, "1.0.0")
    v2 = build_sample(art, "2.0.0")
    v3 = build_sample(art, "3.0.0", health_status=500)

    def bg(*args: str) -> tuple[int, float]:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), *args],
                              check=False)
        return proc.returncode, time.monotonic() - started

    print(f"bg demo in {workdir}: nginx on 127.0.0.1:{port}, slots :{blue} and :{green}\n")
    rows: list[tuple[str, int, float, int, int, str]] = []
    try:
        code, _ = bg("setup")
        if code:
            return code
        nginx.start()
        code, _ = bg("deploy", str(v1))
        if code:
            return code
        expect = {"deploy 2.0.0": 0, "deploy 3.0.0 (unhealthy)": 3, "rollback": 0, "switch": 0}
        steps = [("deploy 2.0.0", ("deploy", str(v2))),
                 ("deploy 3.0.0 (unhealthy)", ("deploy", str(v3))),
                 ("rollback", ("rollback",)),
                 ("switch", ("switch",))]
        with Load(f"http://127.0.0.1:{port}/") as load:
            time.sleep(0.5)
            for title, args in steps:
                before = load.snapshot()
                print(f"\n$ bg {' '.join(a if '/' not in a else Path(a).name for a in args)}",
                      flush=True)
                code, seconds = bg(*args)
                after = load.snapshot()
                live = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.strip()
                rows.append((title, code, seconds, after[0] - before[0], after[1] - before[1],
                             live))
            time.sleep(0.5)
        print("\n" + _table(rows))
        total_failed = sum(r[4] for r in rows)
        as_expected = all(code == expect[title] for title, code, *_ in rows)
        verdict = "PASS" if total_failed == 0 and as_expected else "FAIL"
        print(f"\n{verdict}: {load.ok} requests answered, {load.failed} failed"
              f" ({', '.join(sorted(set(load.errors))) or 'no errors'});"
              " the unhealthy 3.0.0 was refused and never served")
        print(f"state and journal: {workdir / 'srv/hello/bg'}")
        return 0 if verdict == "PASS" else 1
    finally:
        if not keep:
            subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), "--json",
                            "status"], capture_output=True, check=False)
            _stop_slots(workdir / "srv" / "hello" / "run")
            nginx.stop()


def _stop_slots(run_dir: Path) -> None:
    import contextlib
    import os
    import signal

    for pidfile in run_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pidfile.read_text().strip()), signal.SIGTERM)


def _table(rows: list[tuple[str, int, float, int, int, str]]) -> str:
    head = f"{'operation':<26} {'exit':>4} {'seconds':>8} {'requests':>9} {'failed':>7}  serving"
    lines = [head, "-" * len(head)]
    for title, code, seconds, ok, failed, live in rows:
        lines.append(f"{title:<26} {code:>4} {seconds:>8.2f} {ok + failed:>9} {failed:>7}  {live}")
    return "\n".join(lines)
