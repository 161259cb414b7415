"""Wall time of `bg deploy` to 1, 4, 8 and 16 sandbox hosts over SSH, SSH round trips per
host, and the controller's own CPU time per host.

One sandbox (real netns hosts with their own sshd and nginx) is split into a group of
hosts per size. For each size: `bg setup`, a first deploy (nothing live yet), then
`--deploys` further deploys (upload, start, health, two-phase switch, drain, retire,
prune), each timed, the sizes taking turns. The CPU time
is the bg process's own (user + system, from getrusage of the waited-for child), divided
by the number of hosts. The sample app's own boot time (spawn to first healthy answer) is
measured beside it, so the cost of bg itself is visible. Goal on a 2-core machine: at most
1.5x the 1-host wall time at 8 hosts and 2x at 16.
Run as root: `python bench/deploy_hosts.py [--sizes 1 4 8 16] [--deploys 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason
from bluegreen.sandbox.sample import build_sample


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bg(config: Path, *args: str) -> dict[str, Any]:
    """Run bg; its JSON result, plus ``cpu_s``: the bg process's own CPU seconds."""
    env = {**os.environ, "HOME": str(config.parent)}
    env.pop("SSH_AUTH_SOCK", None)
    before = children_cpu()
    proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), "--json", *args],
                          capture_output=True, text=True, env=env, check=False)
    cpu = children_cpu() - before
    if proc.returncode != 0:
        raise SystemExit(f"bg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}"
                         f"\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)["result"]  # the --json envelope
    data["cpu_s"] = cpu
    return data


def app_boot_seconds(workdir: Path, runs: int = 5) -> float:
    """Median time from spawning the sample app to its first 200 on /health."""
    return statistics.median(app_boot_samples(workdir, runs))


def app_boot_samples(workdir: Path, runs: int, every: float = 0.005) -> list[float]:
    """Spawn the sample app ``runs`` times; each time until its first 200 on /health,
    asked every ``every`` seconds."""
    from untar import extract

    art = build_sample(workdir / "boot", "0.0.1")
    rel = workdir / "boot" / "rel"
    extract(art, rel)
    times = []
    for _ in range(runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.Popen([str(rel / "bin" / "server")], env={**os.environ,
                                "PORT": str(port)}, stdout=subprocess.DEVNULL)
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                        c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                        if b" 200 " in c.recv(64):
                            break
                except OSError:
                    time.sleep(every)
                if time.monotonic() - started > 10:
                    raise SystemExit("sample app did not boot in 10 s")
            times.append(time.monotonic() - started)
        finally:
            proc.terminate()
            proc.wait()
    return times


def measure(sizes: list[int], deploys: int, workdir: Path) -> list[dict[str, Any]]:
    """One sandbox split into a disjoint group of hosts per size; the deploys of the sizes
    are interleaved (round robin), so every size sees the same background load (this
    machine is shared: a size measured alone, minutes later, meets another load)."""
    with Sandbox(workdir / "sandbox", sum(sizes)) as sandbox:
        art = workdir / "art"
        groups, configs, firsts = {}, {}, {}
        rest = list(sandbox.hosts)
        for size in sizes:
            groups[size], rest = rest[:size], rest[size:]
            configs[size] = sandbox_config(sandbox, workdir / f"bluegreen-{size}.toml",
                                           target=f"hosts{size}", hosts=groups[size],
                                           parallel=size)
            bg(configs[size], "setup")
            firsts[size] = bg(configs[size], "deploy", str(build_sample(art, "1.0.0")))
        walls: dict[int, list[float]] = {n: [] for n in sizes}
        commands: dict[int, list[int]] = {n: [] for n in sizes}
        cpus: dict[int, list[float]] = {n: [] for n in sizes}
        last: dict[int, dict[str, Any]] = {}
        for i in range(deploys):
            artifact = str(build_sample(art, f"1.{i + 1}.0"))
            for size in sizes:
                started = time.monotonic()
                last[size] = bg(configs[size], "deploy", artifact)
                walls[size].append(time.monotonic() - started)
                commands[size].append(max(h["commands"] for h in last[size]["hosts"]))
                cpus[size].append(last[size]["cpu_s"] / size)
        return [{
            "hosts": size,
            "sandbox_start_s": sandbox.startup_seconds,
            "first_deploy_s": firsts[size]["seconds"],
            "deploy_wall_s": walls[size],
            "deploy_wall_median_s": statistics.median(walls[size]),
            "ssh_commands_per_host": commands[size],
            "controller_cpu_s_per_host": cpus[size],
            "steps_last_deploy": last[size]["steps"],
        } for size in sizes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--deploys", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    reason = require_root_or_skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bg-bench-") as tmp:
        workdir = Path(tmp)
        boot = app_boot_seconds(workdir)
        load_before = os.getloadavg()[0]
        results = measure(args.sizes, args.deploys, workdir)
        load_after = os.getloadavg()[0]
    base = results[0]["deploy_wall_median_s"]
    lines = [
        f"sample app boot time (spawn -> first healthy answer, median): {boot * 1000:.0f} ms",
        f"load average of this machine (2 cores, shared): {load_before:.1f} before,"
        f" {load_after:.1f} after",
        "",
        "| hosts | deploy wall (median) | vs 1 host | min | max | SSH round trips/host"
        " | controller CPU/host |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        w = r["deploy_wall_s"]
        lines.append(
            f"| {r['hosts']} | {r['deploy_wall_median_s']:.2f} s |"
            f" {r['deploy_wall_median_s'] / base:.2f}x | {min(w):.2f} s | {max(w):.2f} s |"
            f" {statistics.median(r['ssh_commands_per_host']):.0f} |"
            f" {statistics.median(r['controller_cpu_s_per_host']) * 1000:.0f} ms |"
        )
    report = "\n".join(lines)
    print(report)
    (args.out / "deploy_hosts.md").write_text(report + "\n")
    (args.out / "deploy_hosts.json").write_text(json.dumps(
        {"app_boot_s": boot, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
