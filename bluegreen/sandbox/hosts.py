"""Simulated hosts on this machine, each like a small real server: the Sandbox's lifecycle.

Host N is a network namespace ``bgsbx<N>`` (address 10.231.N.2, reached from here over a veth
pair whose outside end is 10.231.N.1) plus private mount and UTS namespaces in which a directory
under the sandbox's workdir is bind-mounted at ``/srv`` and the hostname is ``bgsbx<N>``. Inside
run an sshd on 10.231.N.2:22 and an nginx whose prefix is ``/srv/nginx``. Whatever is started
over that sshd inherits the namespaces, so every host's slots bind 127.0.0.1:4001 and 4002 as in
production without colliding. With ``shared_network=True`` the hosts also share a bridge
(10.232.0.N, see ``network.py``), for a load-balancer tier in front of app hosts. Used by the
SSH tests and by ``bg rehearse``.

The parts: ``netns.py`` (tools, namespaces, killing), ``sshd.py`` (the one sshd harness),
``host.py`` (one host and its launch), ``prepare.py`` (one host's files and links before its
launch), ``network.py`` (links and the bridge), this module (many hosts: claim, start,
describe, attach, tear down) and its command line.

Needs root, iproute2, util-linux (unshare, nsenter), OpenSSH's sshd and nginx. Traffic only ever
goes to the addresses of namespaces created here.

    python -m bluegreen.sandbox.hosts up 3 /tmp/sbx   # start; described in /tmp/sbx/sandbox.json
    python -m bluegreen.sandbox.hosts up 3 /tmp/sbx --shared-network   # hosts joined by a bridge
    python -m bluegreen.sandbox.hosts down /tmp/sbx   # stop everything that file describes
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import Popen
from types import TracebackType

from bluegreen.sandbox import network
from bluegreen.sandbox.host import SandboxHost, spawn, wait_up
from bluegreen.sandbox.netns import (
    SandboxError,
    kill_netns_processes,
    link_exists,
    netns_exists,
    netns_pids,
    read_pid,
    run,
    try_run,
)
from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer
from bluegreen.sandbox.prepare import prepare_host
from bluegreen.sandbox.sshd import (
    SSHD_BIN,
    UNSAFE_PATH,
    ClientEntry,
    keygen,
    known_hosts_line,
    ssh_config_text,
    write_authorized_keys,
)

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxHost",
    "main",
    "netns_pids",
    "require_root_or_skip_reason",
]

NETNS_PREFIX = "bgsbx"
MAX_INDEX = 250
READY_TIMEOUT = 20.0
DESCRIPTION = "sandbox.json"
_INSIDE_NGINX = "/srv/nginx"
_APP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def require_root_or_skip_reason() -> str | None:
    """Why sandbox hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "sandbox hosts need root (network and mount namespaces)"
    tools = ("ip", "unshare", "nsenter", "ssh-keygen")
    missing = [tool for tool in tools if not shutil.which(tool)]
    missing += [binary for binary in (SSHD_BIN, NGINX_BIN) if not os.access(binary, os.X_OK)]
    if missing:
        return "sandbox hosts need " + ", ".join(missing)
    return None


class Sandbox:
    """``count`` simulated hosts sharing one client key; a context manager that tears down."""

    def __init__(
        self,
        workdir: Path,
        count: int,
        *,
        app: str = "hello",
        ready_timeout: float = READY_TIMEOUT,
        sshd_bin: str = SSHD_BIN,
        shared_network: bool = False,
    ) -> None:
        workdir = Path(workdir).absolute()
        if not 1 <= count <= MAX_INDEX:
            raise ValueError(f"count must be within 1..{MAX_INDEX}, not {count}")
        if not _APP_NAME.fullmatch(app):
            raise ValueError(f"app name {app!r} must be letters, digits and _ (an nginx variable)")
        if UNSAFE_PATH.search(str(workdir)):
            raise ValueError(f"workdir {workdir} contains whitespace, a quote, % or #")
        self.workdir = workdir
        self.count = count
        self.app = app
        self.ready_timeout = ready_timeout
        self.sshd_bin = sshd_bin
        self.shared_network = shared_network
        self.identity_file = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.ssh_config = workdir / "ssh_config"
        self.authorized_keys = workdir / "authorized_keys"
        self.hosts: list[SandboxHost] = []
        self.startup_seconds: float | None = None
        self._inits: dict[str, Popen[bytes]] = {}
        self._lock = threading.RLock()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    @property
    def switch(self) -> str | None:
        """The namespace of the shared network's bridge, named after the first host (None
        without a shared network)."""
        if not self.shared_network or not self.hosts:
            return None
        return network.switch_name(self.hosts[0].index)

    def ssh_argv(self, host: SandboxHost, *command: str) -> list[str]:
        """An OpenSSH command line for ``host`` (OpenSSH ignores $HOME, hence ``-F``)."""
        return ["ssh", "-F", str(self.ssh_config), host.netns, *command]

    def start(self) -> None:
        """Create every host and wait until its sshd and nginx answer; on failure, tear down."""
        with self._lock:
            if self.hosts:
                raise SandboxError(f"the sandbox in {self.workdir} is already started")
            began = time.monotonic()
            atexit.register(self.teardown)
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
                # sshd refuses to start without its privilege separation directory.
                Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
                keygen(self.identity_file, "bg-sandbox-client")
                write_authorized_keys(self.authorized_keys, self.identity_file)
                self._allocate()
                if self.switch is not None:
                    network.create_switch(self.switch)
                with ThreadPoolExecutor(max_workers=min(len(self.hosts), 16)) as pool:
                    key_lines = list(pool.map(self._start_host, self.hosts))
                self.known_hosts.write_text("".join(key_lines))
                self.ssh_config.write_text(self._render_ssh_config())
            except BaseException:
                self.teardown()
                raise
            self.startup_seconds = time.monotonic() - began

    def teardown(self, *, term_wait: float = 3.0, kill_wait: float = 5.0) -> None:
        """Kill everything in the hosts' networks, delete links and namespaces (the switch's
        too; with the hosts' go every mount made inside them). Idempotent."""
        with self._lock:
            atexit.unregister(self.teardown)
            if not self.hosts:
                return
            names = [host.netns for host in self.hosts]
            inits = {pid for host in self.hosts if (pid := read_pid(host.init_pid_file))}
            survivors = kill_netns_processes(
                names, spare=inits, term_wait=term_wait, kill_wait=kill_wait
            )
            problems: list[str] = []
            for proc in self._inits.values():
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    problems.append(f"init {proc.pid} did not exit")
            self._inits = {}
            problems += network.disconnect(self.hosts, self.switch)
            for host in self.hosts:
                if netns_exists(host.netns):
                    problems += try_run(["ip", "netns", "del", host.netns])
            self.hosts = []
            (self.workdir / DESCRIPTION).unlink(missing_ok=True)
            if survivors:
                problems.append(f"processes survived SIGKILL: {sorted(survivors)}")
            if problems:
                raise SandboxError("sandbox teardown was incomplete", detail="\n".join(problems))

    def detach(self) -> None:
        """Keep the hosts running after this process exits (``down`` stops them later)."""
        atexit.unregister(self.teardown)

    @classmethod
    def attach(cls, workdir: Path) -> Sandbox:
        """The sandbox described by ``workdir/sandbox.json`` (written by :meth:`start`)."""
        try:
            data = json.loads((Path(workdir) / DESCRIPTION).read_text())
        except FileNotFoundError as exc:
            raise SandboxError(f"no sandbox is described in {workdir}") from exc
        sandbox = cls(
            Path(data["workdir"]), int(data["count"]), app=str(data["app"]),
            shared_network=bool(data.get("shared_network", False)),
        )
        sandbox.hosts = [sandbox._host(int(entry["index"])) for entry in data["hosts"]]
        if sandbox.ssh_config.exists():
            for host in sandbox.hosts:
                host.ssh_config = sandbox.ssh_config
        return sandbox

    def describe(self) -> dict[str, object]:
        return {
            "workdir": str(self.workdir),
            "count": self.count,
            "app": self.app,
            "shared_network": self.shared_network,
            "switch": self.switch,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "hosts": [
                {
                    "index": h.index,
                    "netns": h.netns,
                    "address": h.address,
                    "shared_address": h.shared_address,
                    "srv": str(h.hostdir),
                }
                for h in self.hosts
            ],
        }

    def _host(self, index: int) -> SandboxHost:
        base = self.workdir / f"host{index}"
        hostdir = base / "srv"
        return SandboxHost(
            index=index,
            netns=f"{NETNS_PREFIX}{index}",
            address=network.own_address(index),
            hostdir=hostdir,
            nginx=NginxServer(
                prefix=hostdir / "nginx", listen="80", app=self.app, inside=_INSIDE_NGINX
            ),
            confdir=base / "sshd",
            shared_address=network.shared_address(index) if self.shared_network else None,
        )

    def _allocate(self) -> None:
        """Claim free indexes; ``ip netns add`` is the atomic claim another sandbox can lose."""
        listed = run(["ip", "netns", "list"]).stdout.splitlines()
        taken = {line.split()[0] for line in listed if line.strip()}
        index = 0
        while len(self.hosts) < self.count:
            index += 1
            if index > MAX_INDEX:
                raise SandboxError(f"no free sandbox index left in 1..{MAX_INDEX}")
            name = f"{NETNS_PREFIX}{index}"
            left_behind = network.switch_name(index) in taken or link_exists(f"bgs{index}a")
            if name in taken or left_behind:
                continue  # claimed, or left behind by a sandbox that was killed
            proc = run(["ip", "netns", "add", name], check=False)
            if proc.returncode != 0:
                if "File exists" in proc.stderr:
                    continue  # a concurrent sandbox claimed it between the listing and now
                raise SandboxError(f"ip netns add {name} failed", detail=proc.stderr.strip())
            self.hosts.append(self._host(index))
            (self.workdir / DESCRIPTION).write_text(json.dumps(self.describe(), indent=2) + "\n")

    def _start_host(self, host: SandboxHost) -> str:
        """Bring one host up; returns its known_hosts line."""
        host.ssh_config = self.ssh_config
        prepare_host(host, authorized_keys=self.authorized_keys, switch=self.switch)
        proc = spawn(host, sshd_bin=self.sshd_bin)
        self._inits[host.netns] = proc
        wait_up(host, proc, self.ready_timeout)
        return known_hosts_line([host.netns, host.address], host.host_key)

    def _render_ssh_config(self) -> str:
        return ssh_config_text(
            (
                ClientEntry(
                    names=[host.netns, host.address],
                    hostname=host.address,
                    identity_file=self.identity_file,
                    known_hosts=self.known_hosts,
                )
                for host in self.hosts
            ),
            header=f"ssh -F {self.ssh_config} bgsbxN  (or root@10.231.N.2)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.sandbox.hosts")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start COUNT hosts and leave them running")
    up.add_argument("count", type=int)
    up.add_argument("workdir", type=Path)
    up.add_argument("--app", default="hello")
    up.add_argument("--shared-network", action="store_true",
                    help="also join the hosts on a bridge (10.232.0.N), e.g. for LBs")
    down = sub.add_parser("down", help="stop the hosts described in WORKDIR/sandbox.json")
    down.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    reason = require_root_or_skip_reason()
    if reason:
        parser.error(reason)
    try:
        if args.command == "up":
            sandbox = Sandbox(
                args.workdir, args.count, app=args.app, shared_network=args.shared_network
            )
            sandbox.start()
            sandbox.detach()
            print(f"{args.count} hosts up in {sandbox.startup_seconds:.2f}s")
            for host in sandbox.hosts:
                shared = f"  shared {host.shared_address}" if host.shared_address else ""
                print(f"  {host.netns}  {host.spec}{shared}  /srv = {host.hostdir}")
            print(f"ssh -F {sandbox.ssh_config} {sandbox.hosts[0].netns}")
        else:
            Sandbox.attach(args.workdir).teardown()
    except SandboxError as exc:
        print(f"error: {exc.message}\n{exc.detail}".rstrip())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
