"""Wall time of `bg deploy` to 1, 4 and 8 sandbox hosts over SSH, and SSH commands per host.

Each size gets a fresh sandbox (real netns hosts with their own sshd and nginx). For each
size: `bg setup`, a first deploy (nothing live yet), then `--deploys` further deploys
(upload, start, health, two-phase switch, drain, retire, prune), each timed. The sample
app's own boot time (spawn to first healthy answer) is measured beside it, so the cost of
bg itself is visible. Run as root: `python bench/deploy_hosts.py [--sizes 1 4 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
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


def bg(config: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "HOME": str(config.parent)}
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), "--json", *args],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bg {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}"
                         f"\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)["result"]  # the --json envelope
    return data


def app_boot_seconds(workdir: Path, runs: int = 5) -> float:
    """Median time from spawning the sample app to its first 200 on /health."""
    import tarfile

    art = build_sample(workdir / "boot", "0.0.1")
    rel = workdir / "boot" / "rel"
    with tarfile.open(art) as tar:
        tar.extractall(rel, filter="data")
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
                    time.sleep(0.005)
                if time.monotonic() - started > 10:
                    raise SystemExit("sample app did not boot in 10 s")
            times.append(time.monotonic() - started)
        finally:
            proc.terminate()
            proc.wait()
    return statistics.median(times)


def measure(size: int, deploys: int, workdir: Path) -> dict[str, Any]:
    with Sandbox(workdir / f"sandbox-{size}", size) as sandbox:
        config = sandbox_config(sandbox, workdir / f"bluegreen-{size}.toml", parallel=size)
        art = workdir / "art"
        bg(config, "setup")
        first = bg(config, "deploy", str(build_sample(art, "1.0.0")))
        walls, commands = [], []
        for i in range(deploys):
            started = time.monotonic()
            result = bg(config, "deploy", str(build_sample(art, f"1.{i + 1}.0")))
            walls.append(time.monotonic() - started)
            commands.append(max(h["commands"] for h in result["hosts"]))
        return {
            "hosts": size,
            "sandbox_start_s": sandbox.startup_seconds,
            "first_deploy_s": first["seconds"],
            "deploy_wall_s": walls,
            "deploy_wall_median_s": statistics.median(walls),
            "ssh_commands_per_host": commands,
            "steps_last_deploy": result["steps"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--deploys", type=int, default=5)
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
        results = [measure(n, args.deploys, workdir) for n in args.sizes]
    base = results[0]["deploy_wall_median_s"]
    lines = [
        f"sample app boot time (spawn -> first healthy answer, median): {boot * 1000:.0f} ms",
        "",
        "| hosts | deploy wall (median) | vs 1 host | min | max | SSH commands/host |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        w = r["deploy_wall_s"]
        lines.append(
            f"| {r['hosts']} | {r['deploy_wall_median_s']:.2f} s |"
            f" {r['deploy_wall_median_s'] / base:.2f}x | {min(w):.2f} s | {max(w):.2f} s |"
            f" {statistics.median(r['ssh_commands_per_host']):.0f} |"
        )
    report = "\n".join(lines)
    print(report)
    (args.out / "deploy_hosts.md").write_text(report + "\n")
    (args.out / "deploy_hosts.json").write_text(json.dumps(
        {"app_boot_s": boot, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
