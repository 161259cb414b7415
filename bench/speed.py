"""Speed of bg itself, each figure beside its floor, from one run (issue 11).

    python bench/speed.py [--runs 5] [--ssh] [--elixir] [--fleet] [--out bench/out]

Figures (median of --runs, at least 5):
  start-up     `bg --version`                 vs `python -c pass`
  status       `bg status`, local target       vs `python -c pass`
  switch       `bg switch` to a warm slot      vs the same switch by hand (rewrite the
               (local, private nginx)             upstream file, nginx -t, reload, one probe)
  deploy       `bg deploy` wall - app boot     vs the app's own boot (spawn -> first 200)
  deploy-ssh   `bg deploy` to one sandbox host vs one SSH round trip (--ssh; root)
  commands     commands per host for a deploy (`bg -v` prints them; each is a round trip
               over SSH)
  elixir       `bg deploy` of a real `mix release`,    vs the release's own graceful stop
               wall - the release's own boot          (SIGTERM -> exit; --elixir; builds
                                                      --runs releases, offline)
  fleet        `bg deploy` to 16 sandbox hosts             vs the same deploy to 1 host
               (--fleet; root; bench/deploy_hosts.py with sizes 1 and 16)
bluegreen's modules are byte-compiled first and PYTHONDONTWRITEBYTECODE is dropped, as
for an installed bg (pip compiles on install): compiling the sources on every run would
be measured otherwise. Writes <out>/speed.json. Everything runs on 127.0.0.1 or inside
the sandbox's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
TARGETS = {"version": 0.12, "status": 0.2, "switch": 0.3, "deploy": 0.5, "deploy_ssh": 0.8,
           "commands": 4, "elixir": 1.0, "fleet": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return free_port_below() if port >= 32768 else port


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


_GIVEN: set[int] = set()


def wall(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or ENV, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def bg(config: Path, *args: str, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "bluegreen", "-c", str(config), *args, env=env)


def log(text: str) -> None:
    print(f"[speed] {text}", file=sys.stderr, flush=True)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def app_boot(workdir: Path, runs: int) -> list[float]:
    """Spawn the sample app and wait for its first 200 on /health, ``runs`` times."""
    from deploy_hosts import app_boot_samples

    return app_boot_samples(workdir, runs, every=0.002)


class Local:
    """A private nginx and the sample app on this machine, driven by the real `bg`."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.listen = free_port_below()
        blue, green = free_port_below(), free_port_below()
        while green == blue:
            green = free_port_below()
        self.nginx = NginxServer(prefix=workdir / "nginx", listen=f"127.0.0.1:{self.listen}",
                                 app="hello")
        self.nginx.render()
        self.config = workdir / "bluegreen.toml"
        self.config.write_text(tomlwriter.dumps({
            "app": {"name": "hello", "root": str(workdir / "srv" / "hello"),
                    "runner": "command", "command": "bin/server", "stop_timeout": 10},
            "slots": {"blue": blue, "green": green},
            "health": {"interval": 0.02, "timeout": 1.0, "deadline": 15.0},
            "nginx": {"upstream_file": self.nginx.upstream_file,
                      "test_command": self.nginx.test_command,
                      "reload_command": self.nginx.reload_command,
                      "pid_file": self.nginx.pid_file},
            "switch": {"drain_timeout": 10.0},
        }))
        bg(self.config, "setup")
        self.nginx.start()

    def stop(self) -> None:
        for pidfile in (self.dir / "srv" / "hello" / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pidfile.read_text().strip()), 9)
        self.nginx.stop()

    def by_hand_switch(self, slot: str) -> float:
        """The floor: what a switch must do at least, done directly."""
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


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = args.runs
    out: dict[str, Any] = {"runs": n}
    py = [wall(lambda: run(sys.executable, "-c", "pass")) for _ in range(n)]
    version = [wall(lambda: run(sys.executable, "-m", "bluegreen", "--version"))
               for _ in range(n)]
    out["python_pass_s"], out["version_s"] = py, version

    log(f"start-up: python {median(py):.3f} s, bg --version {median(version):.3f} s")
    local = Local(workdir / "local")
    try:
        art = workdir / "art"
        bg(local.config, "deploy", str(build_sample(art, "1.0.0")))
        bg(local.config, "deploy", str(build_sample(art, "2.0.0")), "--keep-old")
        log("local stand deployed")
        out["status_s"] = [wall(lambda: bg(local.config, "status")) for _ in range(n)]
        out["switch_s"] = [wall(lambda: bg(local.config, "switch", "--keep-old"))
                           for _ in range(n)]
        live = json.loads(bg(local.config, "--json", "status").stdout)["result"]["hosts"][0]
        log(f"status {median(out['status_s']):.3f} s, switch {median(out['switch_s']):.3f} s")
        slots = [live["live"], "green" if live["live"] == "blue" else "blue"]
        out["switch_by_hand_s"] = [local.by_hand_switch(slots[i % 2]) for i in range(n)]
        local.by_hand_switch(slots[0])  # back to what state.json says is live
        log(f"by hand {median(out['switch_by_hand_s']):.3f} s")
        boot = app_boot(workdir, n)
        log(f"app boot {median(boot):.3f} s")
        deploys, commands = [], []
        for i in range(n):
            artifact = str(build_sample(art, f"3.{i}.0"))
            started = time.perf_counter()
            doc = json.loads(bg(local.config, "--json", "deploy", artifact).stdout)
            deploys.append(time.perf_counter() - started)
            commands.append(doc["result"]["hosts"][0]["commands"])
        out["app_boot_s"], out["deploy_local_s"] = boot, deploys
        out["deploy_local_commands"] = commands
    finally:
        local.stop()
    if args.ssh:
        out.update(measure_ssh(n, workdir))
    if args.elixir:
        out.update(measure_elixir(n, workdir))
    if args.fleet:
        out.update(measure_fleet(n, workdir))
    return out


def measure_elixir(n: int, workdir: Path) -> dict[str, Any]:
    """Deploys of a real `mix release` (a new version each time: upload, extract, boot,
    switch, retire), beside the release's own boot time."""
    from stand import Stand, elixir_app

    stand = Stand(elixir_app(), workdir / "elixir")
    if stand.prepare(log) != 0:
        raise SystemExit("the Elixir stand could not be prepared")
    walls = []
    with stand.serving():
        if not stand.first_deploys():
            raise SystemExit("the first Elixir deploy failed")
        for i in range(n):
            code, data, started, ended = stand.bg("deploy", str(stand.artifact(f"3.{i}.0")))
            if code:
                raise SystemExit(f"Elixir deploy failed: {data}")
            walls.append(ended - started)
    log(f"elixir boot {median(stand.boot_idle):.3f} s, stop {median(stand.stop_idle):.3f} s,"
        f" deploy {median(walls):.3f} s")
    return {"elixir_boot_s": stand.boot_idle, "elixir_stop_s": stand.stop_idle,
            "elixir_deploy_s": walls}


def measure_fleet(n: int, workdir: Path) -> dict[str, Any]:
    from deploy_hosts import measure as deploy_hosts

    one, sixteen = deploy_hosts([1, 16], n, workdir / "fleet")
    log(f"fleet: 1 host {one['deploy_wall_median_s']:.2f} s,"
        f" 16 hosts {sixteen['deploy_wall_median_s']:.2f} s")
    return {"fleet_1_s": one["deploy_wall_s"], "fleet_16_s": sixteen["deploy_wall_s"]}


def measure_ssh(n: int, workdir: Path) -> dict[str, Any]:
    from bluegreen.ops.core import open_hosts
    from bluegreen.sandbox.config import sandbox_config
    from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason

    reason = require_root_or_skip_reason()
    if reason:
        print(f"skipping SSH figures: {reason}", file=sys.stderr)
        return {}
    with Sandbox(workdir / "sandbox", 1) as sandbox:
        config = sandbox_config(sandbox, workdir / "bluegreen-ssh.toml", parallel=1)
        env = {**ENV, "HOME": str(config.parent)}
        env.pop("SSH_AUTH_SOCK", None)
        art = workdir / "art-ssh"
        bg(config, "setup", env=env)
        bg(config, "deploy", str(build_sample(art, "1.0.0")), env=env)
        deploys, commands = [], []
        for i in range(n):
            started = time.perf_counter()
            doc = json.loads(bg(config, "--json", "deploy", str(build_sample(art, f"1.{i + 1}.0")),
                                env=env).stdout)
            deploys.append(time.perf_counter() - started)
            commands.append(doc["result"]["hosts"][0]["commands"])
        cfg = load(config)
        (host,) = open_hosts(cfg, cfg.target(None))
        try:
            connect = wall(lambda: host.run("true"))
            trips = [wall(lambda: host.run("true")) for _ in range(n)]
        finally:
            host.close()
        return {"deploy_ssh_s": deploys, "deploy_ssh_commands": commands,
                "ssh_connect_and_first_command_s": connect, "ssh_round_trip_s": trips}


def report(m: dict[str, Any]) -> list[dict[str, Any]]:
    boot = median(m["app_boot_s"])
    rows = [
        ("bg --version", median(m["version_s"]), "python -c pass", median(m["python_pass_s"]),
         TARGETS["version"]),
        ("bg status (local)", median(m["status_s"]), "python -c pass",
         median(m["python_pass_s"]), TARGETS["status"]),
        ("bg switch, warm slot (local)", median(m["switch_s"]), "by hand",
         median(m["switch_by_hand_s"]), TARGETS["switch"]),
        ("bg deploy - app boot (local)", median(m["deploy_local_s"]) - boot, "app boot", boot,
         TARGETS["deploy"]),
        ("commands per host, deploy (local)", float(median(m["deploy_local_commands"])),
         "1 command", 1.0, TARGETS["commands"]),
    ]
    if "deploy_ssh_s" in m:
        rows += [
            ("bg deploy - app boot (1 SSH host)", median(m["deploy_ssh_s"]) - boot,
             "SSH round trip", median(m["ssh_round_trip_s"]), TARGETS["deploy_ssh"]),
            ("SSH round trips per host, deploy", float(median(m["deploy_ssh_commands"])),
             "1 round trip", 1.0, TARGETS["commands"]),
        ]
    if "elixir_deploy_s" in m:
        # A deploy boots the new release and waits for the old one to stop (retire is
        # synchronous), so the floor of deploy - boot is the release's own graceful stop:
        # OTP <= 25 sleeps 1 s in it (user_sup:terminate/2).
        eboot = median(m["elixir_boot_s"])
        rows.append(("Elixir deploy - release boot", median(m["elixir_deploy_s"]) - eboot,
                     "release stop", median(m["elixir_stop_s"]), TARGETS["elixir"]))
    out = [{"figure": f, "value": v, "floor_name": fn, "floor": fl, "ratio": v / fl,
            "target": t, "met": v <= t} for f, v, fn, fl, t in rows]
    if "fleet_16_s" in m:  # its target is a ratio: 16 hosts within 2x the time of 1 host
        one, sixteen = median(m["fleet_1_s"]), median(m["fleet_16_s"])
        out.append({"figure": "bg deploy, 16 SSH hosts", "value": sixteen,
                    "floor_name": "1 host", "floor": one, "ratio": sixteen / one,
                    "target": f"{TARGETS['fleet']:g}x", "met": sixteen / one <= TARGETS["fleet"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ssh", action="store_true", help="also one sandbox host (root)")
    parser.add_argument("--elixir", action="store_true", help="also a real mix release")
    parser.add_argument("--fleet", action="store_true", help="also 16 sandbox hosts (root)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    args.runs = max(5, args.runs)
    # What `pip install` does: bytecode on disk, not a compile of every module per run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "bluegreen")],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="bg-speed-") as tmp:
        m = measure(args, Path(tmp))
    rows = report(m)
    print(f"{'figure':<36} {'median':>9} {'floor':>22} {'ratio':>7} {'target':>8}")
    for r in rows:
        unit = "" if any(w in r["figure"] for w in ("commands", "trips", "/")) else " s"
        print(f"{r['figure']:<36} {r['value']:>7.3f}{unit:2} "
              f"{r['floor_name'] + ' ' + format(r['floor'], '.3f'):>22} {r['ratio']:>6.1f}x"
              f" {r['target']:>7}{'' if r['met'] else ' MISSED'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({"figures": rows, "samples": m}, indent=2))
    print(f"wrote {args.out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
