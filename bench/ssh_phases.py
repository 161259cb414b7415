"""What SSH itself costs the controller per host, in-process, phase by phase: SshHost(),
the connection (TCP, key exchange, host-key check, auth), four commands, three HTTP probes
through the host, a second of an idle connection, close. All hosts at once, `--parallel`
threads, as a deploy works; the process's CPU (getrusage) per host, and the part spent on
paramiko's transport threads (their CPU clocks). The rest of a deploy's per-host cost
(planning, scripts, parsing, the health gate) is `controller_cpu.py --breakdown`'s.
Run as root: `python bench/ssh_phases.py [--hosts 16] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason
from bluegreen.ssh import SshHost

Phase = tuple[str, Callable[[SshHost], object]]
PHASES: list[Phase] = [
    ("open (TCP, kex, host key, auth)", lambda h: h.open()),
    ("4 commands", lambda h: [h.run("true") for _ in range(4)]),
    ("3 HTTP probes", lambda h: [h.http_probe("http://127.0.0.1:80/", timeout=5)
                                 for _ in range(3)]),
    ("1 s idle", lambda h: time.sleep(1)),
    ("close", lambda h: h.close()),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _transport_cpu(hosts: list[SshHost]) -> float:
    total = 0.0
    for h in hosts:
        transport = h._conn.transport
        if transport is not None and transport.ident is not None and transport.is_alive():
            total += time.clock_gettime(time.pthread_getcpuclockid(transport.ident))
    return total


def measure(sandbox: Sandbox, rounds: int, parallel: int) -> dict[str, list[tuple[float, float]]]:
    """Per phase, each round's (process CPU, transport-thread CPU) in ms per host."""
    out: dict[str, list[tuple[float, float]]] = {}
    with ThreadPoolExecutor(parallel) as pool:
        for _ in range(rounds):
            started = _cpu()
            hosts = [SshHost(h.spec, identity_file=str(sandbox.identity_file),
                             known_hosts=str(sandbox.known_hosts)) for h in sandbox.hosts]
            out.setdefault("SshHost()", []).append(((_cpu() - started) * 1000 / len(hosts), 0))
            for name, fn in PHASES:
                cpu, transport = _cpu(), _transport_cpu(hosts)
                list(pool.map(fn, hosts))
                spent_transport = 0.0 if name == "close" else _transport_cpu(hosts) - transport
                out.setdefault(name, []).append(((_cpu() - cpu) * 1000 / len(hosts),
                                                 spent_transport * 1000 / len(hosts)))
            time.sleep(1.2)  # closed transports' threads end
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=16)
    args = parser.parse_args()
    reason = require_root_or_skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bg-ssh-") as tmp:
        os.environ["HOME"] = tmp  # no ~/.ssh/config of this machine's user
        os.environ.pop("SSH_AUTH_SOCK", None)
        with Sandbox(Path(tmp) / "sandbox", args.hosts) as sandbox:
            phases = measure(sandbox, args.rounds, args.parallel)
    print(f"load average (2 cores, shared): {os.getloadavg()[0]:.1f}\n")
    print("| phase, all hosts at once | CPU per host (median) | of it, transport thread |")
    print("|---|---:|---:|")
    for name, runs in phases.items():
        print(f"| {name} | {statistics.median(r[0] for r in runs):.2f} ms |"
              f" {statistics.median(r[1] for r in runs):.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
