"""bench/speed.py's local stands: a private nginx and the sample app on this machine,
driven by the real `bg`, in two shapes of config (issue 23):

* ``stock``: what a user has: ``[nginx] pid_file`` left at its default (``/run/nginx.pid``,
  which names no master of this nginx, so bg finds it the way it must on a stock server:
  ``nginx -T``'s ``pid``), and ``probe_url`` set through the user's own site (the switch
  is confirmed there too). Everything else at its default but the private nginx's
  ``test_command``/``reload_command`` and the health poll (see ``SHARED``).
* ``tuned``: bg's own bench config of issue 11: ``pid_file`` set, no ``probe_url``.

Each figure is measured pairwise with its floor (bg, floor, bg, floor, ...) so that the
ratio holds while the shared machine's speed drifts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from bluegreen import nginx as bg_nginx
from bluegreen import tomlwriter
from bluegreen.config import load
from bluegreen.sandbox.nginx import NginxServer
from bluegreen.sandbox.sample import build_sample

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
SHAPES = ("stock", "tuned")
# Both shapes poll health every 20 ms: at the default 0.5 s the deploy figure would
# measure the poll interval, not bg. A switch, `bg status` and start-up never poll.
SHARED: dict[str, Any] = {"health": {"interval": 0.02, "timeout": 1.0, "deadline": 15.0}}


def log(text: str) -> None:
    print(f"[speed] {text}", file=sys.stderr, flush=True)


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or ENV, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def bg(config: Path, *args: str, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "bluegreen", "-c", str(config), *args, env=env)


def wall(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


_GIVEN: set[int] = set()


def free_port_below() -> int:
    """A free port below the ephemeral range, never one handed out before."""
    for port in range(21000 + 37 * len(_GIVEN), 32000, 7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            if port in _GIVEN:
                continue
            _GIVEN.add(port)
            return port
    raise SystemExit("no free port below 32768")


def shape_config(shape: str, workdir: Path, server: NginxServer, blue: int, green: int,
                 listen: int) -> dict[str, Any]:
    n: dict[str, Any] = {"upstream_file": server.upstream_file,
                         "test_command": server.test_command,
                         "reload_command": server.reload_command}
    if shape == "tuned":
        n["pid_file"] = server.pid_file
    else:
        n["probe_url"] = f"http://127.0.0.1:{listen}/health"
    return {"app": {"name": "hello", "root": str(workdir / "srv" / "hello"),
                    "runner": "command", "command": "bin/server"},
            "slots": {"blue": blue, "green": green}, "nginx": n, **SHARED}


class Local:
    """A private nginx and the sample app on this machine, set up and deployed twice."""

    def __init__(self, workdir: Path, shape: str) -> None:
        self.dir, self.shape = workdir, shape
        self.listen = free_port_below()
        blue, green = free_port_below(), free_port_below()
        self.nginx = NginxServer(prefix=workdir / "nginx", listen=f"127.0.0.1:{self.listen}",
                                 app="hello")
        self.nginx.render()
        self.config = workdir / "bluegreen.toml"
        self.config.write_text(tomlwriter.dumps(
            shape_config(shape, workdir, self.nginx, blue, green, self.listen)))
        bg(self.config, "setup")
        self.nginx.start()
        self.art = workdir / "art"
        bg(self.config, "deploy", str(build_sample(self.art, "1.0.0")))
        bg(self.config, "deploy", str(build_sample(self.art, "2.0.0")), "--keep-old")

    def stop(self) -> None:
        for pidfile in (self.dir / "srv" / "hello" / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pidfile.read_text().strip()), 9)
        self.nginx.stop()

    def live(self) -> str:
        doc = json.loads(bg(self.config, "--json", "status").stdout)
        return str(doc["result"]["hosts"][0]["live"])

    def by_hand_switch(self, slot: str) -> float:
        """The floor: what a switch must do at least, done directly (rewrite the upstream,
        nginx -t, reload, probe until the new slot answers)."""
        config = load(self.config)
        content = bg_nginx.render_upstream(config, slot=slot, version="x")
        test = self.nginx.test_command.split()
        reload = self.nginx.reload_command.split()
        url = config.nginx.probe_server_url + config.health.path
        deadline = time.monotonic() + 10
        started = time.perf_counter()
        Path(config.nginx.upstream_file).write_text(content)
        subprocess.run(test, check=True, capture_output=True)
        subprocess.run(reload, check=True, capture_output=True)
        with httpx.Client(timeout=2) as client:
            while client.get(url, headers={"Connection": "close"}).headers.get(
                    "X-BG-Slot") != slot:
                if time.monotonic() > deadline:
                    raise SystemExit(f"nginx did not switch to {slot} by hand")
                time.sleep(0.002)
        return time.perf_counter() - started

    def measure(self, n: int) -> dict[str, Any]:
        """status and switch, each run beside its floor; deploys of new versions."""
        out: dict[str, Any] = {"status_s": [], "status_floor_s": [], "switch_s": [],
                               "switch_by_hand_s": []}
        for _ in range(n):
            out["status_s"].append(wall(lambda: bg(self.config, "status")))
            out["status_floor_s"].append(wall(lambda: run(sys.executable, "-c", "pass")))
        live = self.live()
        for _ in range(n):
            out["switch_s"].append(wall(lambda: bg(self.config, "switch", "--keep-old")))
            live = "green" if live == "blue" else "blue"
            # there and back, so bg's state stays true: the floor is the mean of the two
            other = "green" if live == "blue" else "blue"
            there = self.by_hand_switch(other)
            out["switch_by_hand_s"].append((there + self.by_hand_switch(live)) / 2)
        deploys, commands = [], []
        for i in range(n):
            artifact = str(build_sample(self.art, f"3.{i}.0"))
            started = time.perf_counter()
            doc = json.loads(bg(self.config, "--json", "deploy", artifact).stdout)
            deploys.append(time.perf_counter() - started)
            commands.append(doc["result"]["hosts"][0]["commands"])
        out["deploy_local_s"], out["deploy_local_commands"] = deploys, commands
        log(f"{self.shape}: status {statistics.median(out['status_s']):.3f} s, switch "
            f"{statistics.median(out['switch_s']):.3f} s (by hand "
            f"{statistics.median(out['switch_by_hand_s']):.3f} s), deploy "
            f"{statistics.median(deploys):.3f} s")
        return out


def measure_shapes(n: int, workdir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for shape in SHAPES:
        local = Local(workdir / shape, shape)
        try:
            out[shape] = local.measure(n)
        finally:
            local.stop()
    return out
