"""How soon nginx's old workers stop accepting after a reload, for a non-root deploy user.

On a sandbox host shaped like Debian (tests/debian_host.py: system nginx, workers as
www-data, a `deploy` user with only the sudo rule of nginx/provision.sh), bg's reload script
runs over SSH, and a watcher here (root) times from the first new worker's fork to the moment
no old worker accepts (each exited or retitled "shutting down"). Three ways: as root (bg
signals with `kill`), as `deploy` (through the rule's bg-nginx-quit), and as `deploy` with
the helper removed (nginx's master signals them itself, 100 ms after the fork).

    python bench/early_quit.py [--runs 15]      # root; ~1 min
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bluegreen import nginx
from bluegreen.config import Config, load
from bluegreen.sandbox.hosts import Sandbox
from bluegreen.sandbox.provision import provision
from tests.debian_host import DEPLOY, DebianHost, children, settled_workers, shape, title


def _watch(master: int, old: list[int], out: list[float]) -> None:
    forked = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if forked is None and set(children(master)) - set(old):
            forked = time.monotonic()
        if forked is not None and all(not title(p).startswith("nginx: worker process")
                                      or "shutting down" in title(p) for p in old):
            out.append((time.monotonic() - forked) * 1000)
            return
        time.sleep(0.0005)


def one(host: DebianHost, config: Config, master: int, user: str) -> float:
    old = settled_workers(master)
    out: list[float] = []
    watcher = threading.Thread(target=_watch, args=(master, old, out))
    watcher.start()
    r = host.ssh(nginx.reload_script(config), user=user)
    watcher.join()
    if r.returncode != 0 or not out:
        raise SystemExit(f"reload as {user} failed: {r.stdout}{r.stderr}")
    return out[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bg-early-quit-"))
    workdir.chmod(0o711)  # sshd reads the deploy user's authorized_keys as that user
    sandbox = Sandbox(workdir / "sandbox", 1)
    try:
        sandbox.start()
        shape(sandbox.hosts[0])
        host = DebianHost(sandbox, sandbox.hosts[0], workdir)
        provision(host.host, user=DEPLOY)
        config = load(host.config(workdir / "bluegreen.toml"))
        master = int(host.root("cat /run/nginx.pid").stdout)
        for label, user in (("root, kill", "root"), ("deploy, bg-nginx-quit", DEPLOY),
                            ("deploy, no helper (nginx's own)", "")):
            if not user:
                host.root("rm /usr/local/sbin/bg-nginx-quit")
                user = DEPLOY
            ms = [one(host, config, master, user) for _ in range(args.runs)]
            print(f"{label:34} fork -> old workers stop accepting: median"
                  f" {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f},"
                  f" {args.runs} runs)", flush=True)
    finally:
        sandbox.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
