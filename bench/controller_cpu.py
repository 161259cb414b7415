"""The controller's own CPU per host: `bg deploy` of the sample release to 1, 4, 16 and 64
sandbox hosts over SSH, the bg process's user+system time (getrusage of the waited-for
child) divided by the hosts, and the marginal cost of one more host,
(cpu(n) - cpu(1)) / (n - 1), which leaves out what every invocation pays once (Python
start-up, imports, the config, the artifact check).

Each size has hosts of its own; the sizes take turns, so each meets the same load of this
shared machine. ``--parallel`` caps bg's connections at once (target ``parallel``); the
64-host deploy runs with at most that many (default 16) threads and SSH handshakes at once.
``--profile FILE``: cProfile (every thread, by its CPU clock) of one more deploy of the
largest size. ``--breakdown``: one more deploy of each size with each thread's CPU clock
read (no profiler): the further host's cost by thread kind (paramiko's transport threads,
the per-host workers, the main thread) and by step, as (cpu(n) - cpu(1)) / (n - 1).
``--py-spy FILE``: one more deploy of the largest size under py-spy (every thread).
Goal (issue 23): ≤ 25 ms per host at 16 hosts.
Run as root: `python bench/controller_cpu.py [--sizes 1 4 16 64] [--deploys 3]`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bluegreen
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason
from bluegreen.sandbox.sample import build_sample

from deploy_hosts import bg, children_cpu


def measure(workdir: Path, *, sizes: Sequence[int] = (1, 4, 16, 64), deploys: int = 3,
            parallel: int = 16, profile: Path | None = None, py_spy: Path | None = None,
            py_spy_bin: str = "py-spy", breakdown: dict[int, Any] | None = None,
            against: Path | None = None, old: dict[int, list[float]] | None = None
            ) -> dict[int, list[float]]:
    """bg's CPU seconds per deploy, by fleet size (run as root); ``breakdown``, when given,
    gets each size's CPU by thread kind and step (profile_threads.py's JSON). ``against``: a
    checkout of other code (its ``bluegreen`` first on PYTHONPATH) deployed in turns with
    this one, on the same hosts, each with a version of its own; its samples go to ``old``."""
    args = argparse.Namespace(sizes=list(sizes), deploys=deploys, parallel=parallel,
                              profile=profile, py_spy=py_spy, py_spy_bin=py_spy_bin)
    cpus: dict[int, list[float]] = {n: [] for n in args.sizes}
    with Sandbox(workdir / "sandbox", sum(args.sizes)) as sandbox:
        art = workdir / "art"
        configs: dict[int, Path] = {}
        rest = list(sandbox.hosts)
        for size in args.sizes:
            group, rest = rest[:size], rest[size:]
            configs[size] = sandbox_config(sandbox, workdir / f"bluegreen-{size}.toml",
                                           target=f"hosts{size}", hosts=group,
                                           parallel=min(size, args.parallel))
            bg(configs[size], "setup")
            bg(configs[size], "deploy", str(build_sample(art, "1.0.0")))
        for i in range(args.deploys):
            artifact = str(build_sample(art, f"1.{i + 1}.0"))
            for size in args.sizes:
                if against is None or old is None:
                    cpus[size].append(bg(configs[size], "deploy", artifact)["cpu_s"])
                    continue
                other = str(build_sample(art, f"1.{i + 1}.1"))
                turns = [(cpus, None, artifact), (old, against, other)]
                for samples, code, version in turns if i % 2 == 0 else turns[::-1]:
                    samples.setdefault(size, []).append(
                        _cpu_of(configs[size], code, "deploy", version))
        env = {**os.environ, "HOME": str(workdir)}
        env.pop("SSH_AUTH_SOCK", None)
        if breakdown is not None:
            for size in args.sizes:
                breakdown[size] = _by_thread(configs[size], build_sample(art, "7.0.0"), env)
        if args.profile:  # every thread, by its CPU clock (bench/profile_threads.py)
            size = max(args.sizes)
            subprocess.run([sys.executable, str(Path(__file__).with_name("profile_threads.py")),
                            str(args.profile),
                            "-c", str(configs[size]), "--json", "deploy",
                            str(build_sample(art, "8.0.0"))],
                           env=env, check=True, capture_output=True)
        if args.py_spy:
            config = configs[max(args.sizes)]
            subprocess.run([args.py_spy_bin, "record", "-r", "500", "-f", "raw", "-o",
                            str(args.py_spy), "--", sys.executable, "-m", "bluegreen", "-c",
                            str(config), "--json", "deploy",
                            str(build_sample(art, "9.0.0"))],
                           env=env, check=True, capture_output=True)
    return cpus


def _cpu_of(config: Path, code: Path | None, *args: str) -> float:
    """bg's CPU seconds for one command; ``code``: run that checkout's bluegreen instead."""
    if code is None:
        return float(bg(config, *args)["cpu_s"])
    env = {**os.environ, "HOME": str(config.parent), "PYTHONPATH": str(code)}
    env.pop("SSH_AUTH_SOCK", None)
    before = children_cpu()
    proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), "--json",
                           *args], capture_output=True, text=True, env=env, cwd="/",
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bg (from {code}) {' '.join(args)} failed:\n{proc.stdout}"
                         f"\n{proc.stderr}")
    return children_cpu() - before


def _by_thread(config: Path, artifact: Path, env: dict[str, str]) -> Any:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(Path(__file__).with_name("profile_threads.py")),
                        out.name, "-c", str(config), "--json", "deploy", str(artifact)],
                       env=env, check=True, capture_output=True)
        return json.loads(Path(out.name).read_text())


def breakdown_table(runs: dict[int, Any]) -> list[str]:
    """A further host's CPU (ms) by thread kind and by step, against the 1-host deploy."""
    if 1 not in runs or len(runs) < 2:
        return []
    sizes = sorted(n for n in runs if n > 1)
    rows: list[tuple[str, str | None, str]] = [("process", None, "process")]
    for group in ("threads", "steps"):
        names = sorted({k for d in runs.values() for k in d[group]},
                       key=lambda k: -float(runs[sizes[-1]][group].get(k, 0.0)))
        rows += [(f"{group[:-1]} {k}", group, k) for k in names]

    def get(run: Any, group: str | None, key: str) -> float:
        return float(run[key] if group is None else run[group].get(key, 0.0))

    lines = ["| CPU of a further host (ms) | " + " | ".join(f"{n} hosts" for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for label, kind, key in rows:
        cells = [(get(runs[n], kind, key) - get(runs[1], kind, key)) / (n - 1) * 1000
                 for n in sizes]
        lines.append(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return lines


def table(cpus: dict[int, list[float]]) -> list[str]:
    """The per-host table (also for `speed.py --controller-cpu`: ``measure`` then this)."""
    med = {n: statistics.median(v) for n, v in cpus.items()}
    one = med.get(1)
    lines = ["| hosts | bg CPU (median) | per host | marginal per host | runs |",
             "|---:|---:|---:|---:|---|"]
    for n in sorted(cpus):
        marginal = (f"{(med[n] - one) / (n - 1) * 1000:.0f} ms" if one is not None and n > 1
                    else "")
        runs = ", ".join(f"{c * 1000:.0f}" for c in cpus[n])
        lines.append(f"| {n} | {med[n] * 1000:.0f} ms | {med[n] / n * 1000:.1f} ms |"
                     f" {marginal} | {runs} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--deploys", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--against", type=Path,
                        help="a checkout of other code, deployed in turns with this one")
    parser.add_argument("--py-spy", type=Path)
    parser.add_argument("--py-spy-bin", default="py-spy")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    reason = require_root_or_skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # As users run it: bytecode compiled (this shell may set PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(Path(bluegreen.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="bg-cpu-") as tmp:
        runs: dict[int, Any] | None = {} if args.breakdown else None
        old: dict[int, list[float]] = {}
        cpus = measure(Path(tmp), sizes=args.sizes, deploys=args.deploys,
                       parallel=args.parallel, profile=args.profile, py_spy=args.py_spy,
                       py_spy_bin=args.py_spy_bin, breakdown=runs, against=args.against,
                       old=old)
    against = [f"the same against {args.against}, in turns:", *table(old), ""] if old else []
    report = "\n".join([f"load average (2 cores, shared): {os.getloadavg()[0]:.1f}", "",
                        *table(cpus), "", *against, *breakdown_table(runs or {})])
    print(report)
    (args.out / "controller_cpu.md").write_text(report + "\n")
    (args.out / "controller_cpu.json").write_text(json.dumps(
        {str(n): v for n, v in cpus.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
