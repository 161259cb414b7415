"""Simulated hosts on this machine, each like a small real server.

Host N is a network namespace ``bgsbx<N>`` (address 10.231.N.2, reached from here over a veth
pair whose outside end is 10.231.N.1) plus private mount and UTS namespaces in which a directory
under the sandbox's workdir is bind-mounted at ``/srv`` and the hostname is ``bgsbx<N>``. Inside
run an sshd on 10.231.N.2:22 and an nginx whose prefix is ``/srv/nginx``. Whatever is started
over that sshd inherits the namespaces, so every host's slots bind 127.0.0.1:4001 and 4002 as in
production without colliding. Used by the SSH tests and by ``bg rehearse``.

Needs root, iproute2, util-linux (unshare, nsenter), OpenSSH's sshd and nginx. Traffic only ever
goes to the 10.231.N.2 addresses of namespaces created here.

    python -m bluegreen.sandbox.hosts up 3 /tmp/sbx   # start; described in /tmp/sbx/sandbox.json
    python -m bluegreen.sandbox.hosts down /tmp/sbx   # stop everything that file describes
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from subprocess import DEVNULL, STDOUT, Popen
from types import TracebackType
from typing import Any

from bluegreen.errors import BgError
from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer

NETNS_PREFIX = "bgsbx"
MAX_INDEX = 250
SSHD_BIN = "/usr/sbin/sshd"
READY_TIMEOUT = 20.0
DESCRIPTION = "sandbox.json"
_INSIDE_NGINX = "/srv/nginx"
_APP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# sshd_config has no quoting that covers every option (and expands %), so refuse such paths.
_UNSAFE_PATH = re.compile(r"[\s\"'%#\\]")

# Each host's init, as on a real server: the subreaper of everything started in the host, so an
# exited slot is reaped at once (this machine's PID 1 may reap orphans late, and meanwhile
# `kill -0` finds the zombie alive). It runs the launch script, records its exit status, then
# reaps until SIGTERM arrives and nothing is left. Its pid anchors the host's namespaces.
_INIT = """\
# bluegreen sandbox host init
import ctypes, os, signal, subprocess, sys, time
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1] + ".tmp", "w") as status:
    status.write(str(code))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    try:
        os.wait()
    except ChildProcessError:
        if stopping:
            break
        time.sleep(0.1)
"""
_UNSHARE = ["unshare", "--mount", "--uts", "--propagation", "private"]
# Unmounting the /run/netns copy keeps a host from pinning other sandboxes' namespaces.
_LAUNCH = """\
set -e
hostname {hostname}
umount -R -l /run/netns 2>/dev/null || true
mount --bind {hostdir} /srv
# Shell start-up files of a fresh server: the controller's own (e.g. pyenv init, ~170 ms)
# would otherwise run before every command sshd executes. Only the files are covered, so
# the programs under the controller's home stay reachable.
mkdir -p {home}
home_dir=$(getent passwd root | cut -d: -f6)
for f in .bashrc .profile .bash_profile .bash_login; do
  if [ -f "$home_dir/$f" ]; then
    if [ -f "/etc/skel/$f" ]; then cp "/etc/skel/$f" {home}/$f; else : > {home}/$f; fi
    mount --bind {home}/$f "$home_dir/$f"
  fi
done
{nginx}
{sshd}
"""
_SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
# bg opens many channels at once (commands, SFTP, forwarded HTTP probes), often in parallel.
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
LogLevel ERROR
"""
_SSH_CONFIG = """\
Host {name} {address}
    HostName {address}
    User root
    IdentityFile {identity}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
"""


class SandboxError(BgError):
    """The sandbox could not be built or torn down; ``detail`` carries the tool's output."""


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


@dataclass
class SandboxHost:
    """One simulated host. ``hostdir`` is its /srv as seen from here."""

    index: int
    netns: str
    address: str
    hostdir: Path
    nginx: NginxServer
    confdir: Path  # sshd's config, host key, pid file and log: kept out of /srv, bg never sees them

    @property
    def spec(self) -> str:
        return f"root@{self.address}"

    @property
    def veth(self) -> str:
        """The outside end of the host's veth pair (the inside end ends in ``b``)."""
        return f"bgs{self.index}a"

    @property
    def init_pid_file(self) -> Path:
        return self.confdir / "init.pid"

    @property
    def launch_status(self) -> Path:
        return self.confdir / "launch.status"

    @property
    def sshd_pid_file(self) -> Path:
        return self.confdir / "sshd.pid"

    @property
    def sshd_config(self) -> Path:
        return self.confdir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.confdir / "ssh_host_ed25519_key"

    def srv(self, path_inside: str) -> Path:
        """Where ``/srv/...`` on the host is from here."""
        inside = PurePosixPath(path_inside)
        if ".." in inside.parts or not inside.is_relative_to("/srv"):
            raise ValueError(f"{path_inside!r} is not a path under /srv")
        return self.hostdir.joinpath(*inside.relative_to("/srv").parts)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the host: its network, its /srv, its hostname."""
        pid = self._anchor_pid()
        enter = ["nsenter", "-t", str(pid), "-m", "-u", "--"]
        return ["ip", "netns", "exec", self.netns, *enter, *argv]

    def _anchor_pid(self) -> int:
        """A live process in the host's namespaces: its init, else sshd, else nginx's master.

        Checked against the host's network namespace, so a recycled pid never sends a command
        into another machine's /srv.
        """
        own = next(iter(_netns_keys([self.netns])), None)
        candidates = (_read_pid(self.init_pid_file), _read_pid(self.sshd_pid_file))
        for pid in (*candidates, self.nginx.master_pid()):
            if pid is not None and own is not None and _netns_key_of(pid) == own:
                return pid
        raise SandboxError(f"{self.netns}: no init, sshd or nginx runs in it; the host is down")


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
    ) -> None:
        workdir = Path(workdir).absolute()
        if not 1 <= count <= MAX_INDEX:
            raise ValueError(f"count must be within 1..{MAX_INDEX}, not {count}")
        if not _APP_NAME.fullmatch(app):
            raise ValueError(f"app name {app!r} must be letters, digits and _ (an nginx variable)")
        if _UNSAFE_PATH.search(str(workdir)):
            raise ValueError(f"workdir {workdir} contains whitespace, a quote, % or #")
        self.workdir = workdir
        self.count = count
        self.app = app
        self.ready_timeout = ready_timeout
        self.sshd_bin = sshd_bin
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
                _keygen(self.identity_file, "bg-sandbox-client")
                self.authorized_keys.write_text(_pub(self.identity_file))
                self._allocate()
                with ThreadPoolExecutor(max_workers=min(len(self.hosts), 16)) as pool:
                    key_lines = list(pool.map(self._start_host, self.hosts))
                self.known_hosts.write_text("".join(key_lines))
                self.ssh_config.write_text(self._render_ssh_config())
            except BaseException:
                self.teardown()
                raise
            self.startup_seconds = time.monotonic() - began

    def teardown(self, *, term_wait: float = 3.0, kill_wait: float = 5.0) -> None:
        """Kill everything in the hosts' networks, delete links and namespaces. Idempotent."""
        with self._lock:
            atexit.unregister(self.teardown)
            if not self.hosts:
                return
            names = [host.netns for host in self.hosts]
            inits = {pid for host in self.hosts if (pid := _read_pid(host.init_pid_file))}
            survivors = _kill_netns_processes(
                names, spare=inits, term_wait=term_wait, kill_wait=kill_wait
            )
            problems: list[str] = []
            for proc in self._inits.values():
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    problems.append(f"init {proc.pid} did not exit")
            self._inits = {}
            for host in self.hosts:
                if Path("/sys/class/net", host.veth).exists():
                    problems += _try(["ip", "link", "del", host.veth])
                if Path("/run/netns", host.netns).exists():
                    problems += _try(["ip", "netns", "del", host.netns])
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
        sandbox = cls(Path(data["workdir"]), int(data["count"]), app=str(data["app"]))
        sandbox.hosts = [sandbox._host(int(entry["index"])) for entry in data["hosts"]]
        return sandbox

    def describe(self) -> dict[str, object]:
        return {
            "workdir": str(self.workdir),
            "count": self.count,
            "app": self.app,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "hosts": [
                {"index": h.index, "netns": h.netns, "address": h.address, "srv": str(h.hostdir)}
                for h in self.hosts
            ],
        }

    def _host(self, index: int) -> SandboxHost:
        base = self.workdir / f"host{index}"
        hostdir = base / "srv"
        return SandboxHost(
            index=index,
            netns=f"{NETNS_PREFIX}{index}",
            address=f"10.231.{index}.2",
            hostdir=hostdir,
            nginx=NginxServer(
                prefix=hostdir / "nginx", listen="80", app=self.app, inside=_INSIDE_NGINX
            ),
            confdir=base / "sshd",
        )

    def _allocate(self) -> None:
        """Claim free indexes; ``ip netns add`` is the atomic claim another sandbox can lose."""
        listed = _run(["ip", "netns", "list"]).stdout.splitlines()
        taken = {line.split()[0] for line in listed if line.strip()}
        index = 0
        while len(self.hosts) < self.count:
            index += 1
            if index > MAX_INDEX:
                raise SandboxError(f"no free sandbox index left in 1..{MAX_INDEX}")
            name = f"{NETNS_PREFIX}{index}"
            if name in taken or Path("/sys/class/net", f"bgs{index}a").exists():
                continue
            proc = _run(["ip", "netns", "add", name], check=False)
            if proc.returncode != 0:
                if "File exists" in proc.stderr:
                    continue  # a concurrent sandbox claimed it between the listing and now
                raise SandboxError(f"ip netns add {name} failed", detail=proc.stderr.strip())
            self.hosts.append(self._host(index))
            (self.workdir / DESCRIPTION).write_text(json.dumps(self.describe(), indent=2) + "\n")

    def _start_host(self, host: SandboxHost) -> str:
        """Bring one host up; returns its known_hosts line."""
        host.confdir.mkdir(parents=True, exist_ok=True)
        host.hostdir.mkdir(parents=True, exist_ok=True)
        _keygen(host.host_key, f"{host.netns}-host")
        host.sshd_config.write_text(self._render_sshd_config(host))
        host.nginx.render()
        placeholder = host.nginx.prefix / "conf.d" / f"{self.app}.bluegreen.conf"
        if not placeholder.exists():
            # nginx refuses a site whose upstream is undefined; bg replaces this on deploy.
            placeholder.write_text(
                f"upstream {self.app}_live {{ server 127.0.0.1:4001; }}\n"
                f'map "" ${self.app}_slot {{ default "none"; }}\n'
            )
        i, outside, inside = host.index, host.veth, f"bgs{host.index}b"
        outside_cmds = [
            f"link add {outside} type veth peer name {inside} netns {host.netns}",
            f"addr add 10.231.{i}.1/30 dev {outside}",
            f"link set {outside} up",
        ]
        inside_cmds = [f"addr add {host.address}/30 dev {inside}", f"link set {inside} up"]
        _run(["ip", "-batch", "-"], stdin="\n".join(outside_cmds) + "\n")
        _run(
            ["ip", "-n", host.netns, "-batch", "-"],
            stdin="\n".join(inside_cmds) + "\nlink set lo up\n",
        )
        sshd = [self.sshd_bin, "-f", str(host.sshd_config), "-E", str(host.confdir / "sshd.log")]
        script = _LAUNCH.format(
            hostname=host.netns,
            hostdir=shlex.quote(str(host.hostdir)),
            home=shlex.quote(str(host.confdir / "home")),
            nginx=host.nginx.start_command,
            sshd=shlex.join(sshd),
        )
        host.launch_status.unlink(missing_ok=True)
        # `ip netns exec` and `unshare` exec without forking, so the Popen's pid is the init's.
        argv = ["ip", "netns", "exec", host.netns, *_UNSHARE, sys.executable, "-I", "-S", "-c"]
        argv += [_INIT, str(host.launch_status), "sh", "-c", script]
        with (host.confdir / "init.log").open("wb") as log:
            proc = Popen(argv, stdin=DEVNULL, stdout=log, stderr=STDOUT, start_new_session=True)
        self._inits[host.netns] = proc
        host.init_pid_file.write_text(f"{proc.pid}\n")
        self._wait_launched(host, proc)
        self._wait_ready(host)
        return f"{host.netns},{host.address} {_pub(host.host_key)}"

    def _wait_launched(self, host: SandboxHost, proc: Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not host.launch_status.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SandboxError(
                    f"{host.netns}: its init did not run the launch script",
                    detail=_tail(host.confdir / "init.log"),
                )
            time.sleep(0.01)
        code = host.launch_status.read_text().strip()
        if code != "0":
            raise SandboxError(
                f"{host.netns}: starting nginx and sshd failed (exit {code})",
                detail=_tail(host.confdir / "init.log"),
            )

    def _wait_ready(self, host: SandboxHost) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            ready = (
                _read_pid(host.sshd_pid_file) is not None
                and _tcp_open(host.address, 22)
                and _http_answers(host.address, 80)
            )
            if ready:
                return
            if time.monotonic() > deadline:
                logs = [host.confdir / "sshd.log", host.nginx.prefix / "logs" / "error.log"]
                tails = "\n".join(_tail(path) for path in logs)
                raise SandboxError(
                    f"{host.netns}: sshd or nginx not answering after {self.ready_timeout}s",
                    detail=tails,
                )
            time.sleep(0.02)

    def _render_sshd_config(self, host: SandboxHost) -> str:
        return _SSHD_CONFIG.format(
            address=host.address,
            host_key=host.host_key,
            pid_file=host.sshd_pid_file,
            authorized_keys=self.authorized_keys,
        )

    def _render_ssh_config(self) -> str:
        head = f"# ssh -F {self.ssh_config} bgsbxN  (or root@10.231.N.2)\n"
        return head + "".join(
            _SSH_CONFIG.format(
                name=host.netns,
                address=host.address,
                identity=self.identity_file,
                known_hosts=self.known_hosts,
            )
            for host in self.hosts
        )


def _run(
    argv: list[str], *, stdin: str | None = None, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    devnull = DEVNULL if stdin is None else None
    kwargs: dict[str, Any] = {"capture_output": True, "text": True, "timeout": timeout}
    proc = subprocess.run(argv, input=stdin, stdin=devnull, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SandboxError(
            f"{shlex.join(argv)} failed (exit {proc.returncode})",
            detail=(proc.stdout + proc.stderr).strip(),
        )
    return proc


def _try(argv: list[str]) -> list[str]:
    """Run ``argv``; its failure as a one-item list (teardown goes on regardless)."""
    proc = _run(argv, check=False)
    return [] if proc.returncode == 0 else [f"{shlex.join(argv)}: {proc.stderr.strip()}"]


def _keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _pub(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_answers(address: str, port: int) -> bool:
    """Any HTTP status line. A raw socket, so no proxy settings from the environment apply."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: sandbox\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path}: missing)"
    return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])


def _netns_keys(names: Sequence[str]) -> dict[tuple[int, int], str]:
    keys: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
        except FileNotFoundError:
            continue
        keys[(st.st_dev, st.st_ino)] = name
    return keys


def _netns_key_of(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None  # exited, or a zombie
    return (st.st_dev, st.st_ino)


def netns_pids(names: Sequence[str]) -> dict[int, str]:
    """pid -> namespace name for processes in the named network namespaces (``ip netns pids``)."""
    keys = _netns_keys(names)
    found: dict[int, str] = {}
    if keys:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                name = keys.get(_netns_key_of(int(entry)) or (0, 0))
                if name is not None:
                    found[int(entry)] = name
    return found


def _signal_if_inside(pid: int, key: tuple[int, int], sig: signal.Signals) -> None:
    """Signal ``pid`` only if it is still in the namespace: a pidfd pins it against pid reuse."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _netns_key_of(pid) == key:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _kill_netns_processes(
    names: Sequence[str], *, spare: set[int], term_wait: float, kill_wait: float
) -> set[int]:
    """SIGTERM all; after ``term_wait`` SIGKILL all but ``spare`` (the inits, which reap the
    rest), and halfway through ``kill_wait`` those too. Returns the pids still there at the end.
    """
    keys = {name: key for key, name in _netns_keys(names).items()}
    began = time.monotonic()
    termed: set[int] = set()
    while True:
        pids = netns_pids(names)
        elapsed = time.monotonic() - began
        if not pids or elapsed > term_wait + kill_wait:
            return set(pids)
        for pid, name in pids.items():
            if elapsed > term_wait + kill_wait / 2 or (elapsed > term_wait and pid not in spare):
                _signal_if_inside(pid, keys[name], signal.SIGKILL)
            elif pid not in termed:
                _signal_if_inside(pid, keys[name], signal.SIGTERM)
                termed.add(pid)
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.sandbox.hosts")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start COUNT hosts and leave them running")
    up.add_argument("count", type=int)
    up.add_argument("workdir", type=Path)
    up.add_argument("--app", default="hello")
    down = sub.add_parser("down", help="stop the hosts described in WORKDIR/sandbox.json")
    down.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    reason = require_root_or_skip_reason()
    if reason:
        parser.error(reason)
    try:
        if args.command == "up":
            sandbox = Sandbox(args.workdir, args.count, app=args.app)
            sandbox.start()
            sandbox.detach()
            print(f"{args.count} hosts up in {sandbox.startup_seconds:.2f}s")
            for host in sandbox.hosts:
                print(f"  {host.netns}  {host.spec}  /srv = {host.hostdir}")
            print(f"ssh -F {sandbox.ssh_config} {sandbox.hosts[0].netns}")
        else:
            Sandbox.attach(args.workdir).teardown()
    except SandboxError as exc:
        print(f"error: {exc.message}\n{exc.detail}".rstrip())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
