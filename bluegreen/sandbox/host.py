"""One simulated host: what it is (:class:`SandboxHost`) and how it is launched.

A host is a network namespace plus private mount and UTS namespaces, entered through a small
init that runs the launch script (hostname, /srv bind mount, nginx, sshd) and then reaps.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from subprocess import DEVNULL, STDOUT, Popen

from bluegreen.sandbox.netns import (
    SandboxError,
    http_answers,
    netns_key_of,
    netns_keys,
    read_pid,
    run,
    tail,
)
from bluegreen.sandbox.nginx import NginxServer
from bluegreen.sandbox.sshd import answers_ssh, sshd_argv

_TMPFS_SIZE = re.compile(r"[1-9][0-9]{0,9}[kmg]?")

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


@dataclass
class SandboxHost:
    """One simulated host. ``hostdir`` is its /srv as seen from here."""

    index: int
    netns: str
    address: str
    hostdir: Path
    nginx: NginxServer
    confdir: Path  # sshd's config, host key, pid file and log: kept out of /srv, bg never sees them
    ssh_config: Path | None = None  # the sandbox's OpenSSH client config, once written
    # Reachable from every other host of a sandbox with a shared network, else None.
    shared_address: str | None = None

    @property
    def spec(self) -> str:
        return f"root@{self.address}"

    @property
    def veth(self) -> str:
        """The outside end of the host's veth pair (the inside end ends in ``b``)."""
        return f"bgs{self.index}a"

    @property
    def shared_veth(self) -> str:
        """The host's port on the shared bridge, in the switch namespace (inside: ``...b``)."""
        return f"bgl{self.index}a"

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

    @property
    def mount_tag(self) -> str:
        """Names the mounts made in this host (in /proc/*/mountinfo), unique to this sandbox:
        a later host with the same index gets another tag."""
        return f"{self.netns}-{hashlib.sha256(str(self.hostdir).encode()).hexdigest()[:8]}"

    @property
    def tmpfs_source(self) -> str:
        """The device name of this host's tmpfs mounts, as /proc/*/mountinfo shows it."""
        return f"{self.mount_tag}-tmpfs"

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

    def ssh_argv(self, *command: str) -> list[str]:
        """An OpenSSH command line for this host (OpenSSH ignores $HOME, hence ``-F``)."""
        if self.ssh_config is None:
            raise SandboxError(f"{self.netns}: the sandbox has not written its ssh_config yet")
        return ["ssh", "-F", str(self.ssh_config), self.netns, *command]

    def mount_tmpfs(self, path_inside: str, *, size: str = "8m") -> None:
        """A ``size``-byte tmpfs (``8m``, ``512k``) at ``path_inside`` under /srv, in this host's
        mount namespace only: commands over its SSH see a small disk that fills; this machine and
        the other hosts still see the directory beneath. Gone with the host at teardown."""
        if not _TMPFS_SIZE.fullmatch(size):
            raise ValueError(f"tmpfs size {size!r} must be a number with an optional k, m or g")
        target = self.srv(path_inside)
        target.mkdir(parents=True, exist_ok=True)
        inside = str(PurePosixPath(path_inside))
        options = f"size={size},mode=0755"
        run(self.exec_argv(["mount", "-t", "tmpfs", "-o", options, self.tmpfs_source, inside]))

    def unmount(self, path_inside: str) -> None:
        """Undo :meth:`mount_tmpfs` early (teardown does not need it)."""
        self.srv(path_inside)
        run(self.exec_argv(["umount", str(PurePosixPath(path_inside))]))

    def _anchor_pid(self) -> int:
        """A live process in the host's namespaces: its init, else sshd, else nginx's master.

        Checked against the host's network namespace, so a recycled pid never sends a command
        into another machine's /srv.
        """
        own = next(iter(netns_keys([self.netns])), None)
        candidates = (read_pid(self.init_pid_file), read_pid(self.sshd_pid_file))
        for pid in (*candidates, self.nginx.master_pid()):
            if pid is not None and own is not None and netns_key_of(pid) == own:
                return pid
        raise SandboxError(f"{self.netns}: no init, sshd or nginx runs in it; the host is down")


def spawn(host: SandboxHost, *, sshd_bin: str) -> Popen[bytes]:
    """Start the host's init, which starts nginx and sshd; :func:`wait_up` waits for them.

    The network, sshd_config and host key must exist. The init's pid is also written to
    ``host.init_pid_file`` so a later process can find the host's namespaces.
    """
    sshd = sshd_argv(host.sshd_config, host.confdir / "sshd.log", sshd_bin=sshd_bin)
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
    host.init_pid_file.write_text(f"{proc.pid}\n")
    return proc


def wait_up(host: SandboxHost, proc: Popen[bytes], timeout: float) -> None:
    """Until the launch script succeeded and sshd and nginx answer on the host's address."""
    _wait_launched(host, proc, timeout)
    _wait_ready(host, timeout)


def _wait_launched(host: SandboxHost, proc: Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not host.launch_status.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SandboxError(
                f"{host.netns}: its init did not run the launch script",
                detail=tail(host.confdir / "init.log"),
            )
        time.sleep(0.01)
    code = host.launch_status.read_text().strip()
    if code != "0":
        raise SandboxError(
            f"{host.netns}: starting nginx and sshd failed (exit {code})",
            detail=tail(host.confdir / "init.log"),
        )


def _wait_ready(host: SandboxHost, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = (
            read_pid(host.sshd_pid_file) is not None
            and answers_ssh(host.address, 22, timeout=0.5)
            and http_answers(host.address, 80)
        )
        if ready:
            return
        if time.monotonic() > deadline:
            logs = [host.confdir / "sshd.log", host.nginx.prefix / "logs" / "error.log"]
            raise SandboxError(
                f"{host.netns}: sshd or nginx not answering after {timeout}s",
                detail="\n".join(tail(path) for path in logs),
            )
        time.sleep(0.02)
