"""A large release over SSH: `bg deploy` of a release with an incompressible payload to one
sandbox host, beside its floor (OpenSSH `scp` of the same tarball, then `tar -xzf` of it on
the host, in one shell: the least any tool could do), runs taking turns so both meet the
same load of this shared machine. Also `bg deploy` of the plain sample (no payload) over
SSH minus the app's boot, beside the bare SSH round trip.

Where the time goes: the deploy's own step lines (check artifact, upload+extract+start),
and ``--profile FILE``: one extra deploy under cProfile (the controller's side only).
Goal (issue 23): big deploy ≤ 1.5x the floor; small deploy minus app boot ≤ 0.6 s.
Run as root: `python bench/big_release.py [--mb 150] [--runs 7]`.
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import bluegreen
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import Sandbox, SandboxHost, require_root_or_skip_reason
from bluegreen.sandbox.sample import build_sample

from deploy_hosts import app_boot_seconds, bg


def big_release(out: Path, version: str, mb: int) -> Path:
    """The sample release plus ``mb`` MiB of random bytes (gzip cannot shrink them)."""
    small = build_sample(out / "small", version)
    path = out / f"hello-{version}.tar.gz"
    payload = out / "payload.bin"
    if not payload.exists():
        with payload.open("wb") as fh:
            for _ in range(mb):
                fh.write(os.urandom(1 << 20))
    with tarfile.open(small) as src, path.open("wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        dst.add(payload, arcname="assets/payload.bin")
    return path


def floor(sandbox: Sandbox, host: SandboxHost, art: Path) -> float:
    """scp of the tarball, then tar -xzf on the host into a fresh directory."""
    remote = f"/tmp/floor-{art.name}"
    started = time.monotonic()
    subprocess.run(["scp", "-q", "-F", str(sandbox.ssh_config), str(art),
                    f"{host.netns}:{remote}"], check=True)
    subprocess.run(sandbox.ssh_argv(host, f"rm -rf /tmp/floor-x && mkdir /tmp/floor-x &&"
                                          f" tar -xzf {remote} -C /tmp/floor-x"), check=True)
    took = time.monotonic() - started
    subprocess.run(sandbox.ssh_argv(host, f"rm -rf /tmp/floor-x {remote}"), check=True)
    return took


def bare_round_trip(sandbox: Sandbox, host: SandboxHost) -> float:
    started = time.monotonic()
    subprocess.run(sandbox.ssh_argv(host, "true"), check=True)
    return time.monotonic() - started


def steps(result: dict[str, Any]) -> dict[str, float]:
    return {s["name"]: s["seconds"] for s in result.get("steps", [])
            if isinstance(s, dict) and "seconds" in s}


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with Sandbox(workdir / "sandbox", 1) as sandbox:
        host = sandbox.hosts[0]
        config = sandbox_config(sandbox, workdir / "bluegreen.toml", target="one",
                                parallel=1)
        bg(config, "setup")
        bg(config, "deploy", str(build_sample(workdir / "art", "0.0.1")))
        rows: dict[str, list[float]] = {"floor": [], "big": [], "ssh_true": [], "small": []}
        last: dict[str, Any] = {}
        for i in range(args.runs):
            art = big_release(workdir / "art", f"1.{i}.0", args.mb)
            rows["floor"].append(floor(sandbox, host, art))
            started = time.monotonic()
            last["big"] = bg(config, "deploy", str(art))
            rows["big"].append(time.monotonic() - started)
            art.unlink()
            rows["ssh_true"].append(bare_round_trip(sandbox, host))
            small = build_sample(workdir / "art", f"2.{i}.0")
            started = time.monotonic()
            last["small"] = bg(config, "deploy", str(small))
            rows["small"].append(time.monotonic() - started)
        if args.profile:
            art = big_release(workdir / "art", "9.0.0", args.mb)
            env = {**os.environ, "HOME": str(config.parent)}
            env.pop("SSH_AUTH_SOCK", None)
            subprocess.run([sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m",
                            "bluegreen", "-c", str(config), "--json", "deploy", str(art)],
                           env=env, check=True, capture_output=True)
        size = (workdir / "art" / "payload.bin").stat().st_size
    return {"rows": rows, "last_steps": {k: v.get("steps") for k, v in last.items()},
            "payload_bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=150)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    reason = require_root_or_skip_reason()
    if reason or not shutil.which("scp"):
        print(f"cannot run: {reason or 'no scp'}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # As users run it: bytecode compiled (this shell may set PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(Path(bluegreen.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="bg-big-") as tmp:
        boot = app_boot_seconds(Path(tmp))
        data = measure(args, Path(tmp))
    rows = data["rows"]
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratios = [b / f for b, f in zip(rows["big"], rows["floor"], strict=True)]
    lines = [
        f"load average (2 cores, shared): {os.getloadavg()[0]:.1f};"
        f" sample app boot {boot * 1000:.0f} ms (median)",
        "",
        "| measure | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("floor", f"floor: scp + tar -xzf ({args.mb} MiB)"),
                       ("big", f"bg deploy, {args.mb} MiB release"),
                       ("ssh_true", "ssh host true (OpenSSH)"),
                       ("small", "bg deploy, sample release")):
        v = rows[key]
        lines.append(f"| {label} | {med[key]:.2f} s | {min(v):.2f} s | {max(v):.2f} s |")
    lines += [
        "",
        f"big deploy / floor, per run: median {statistics.median(ratios):.2f}x"
        f" ({', '.join(f'{r:.2f}' for r in ratios)})",
        f"small deploy minus app boot: {med['small'] - boot:.2f} s",
        "steps of the last big deploy: " + json.dumps(data["last_steps"]["big"]),
    ]
    report = "\n".join(lines)
    print(report)
    (args.out / "big_release.md").write_text(report + "\n")
    (args.out / "big_release.json").write_text(json.dumps({**data, "boot_s": boot}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
