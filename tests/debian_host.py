"""A sandbox host shaped like a stock Debian 12 server, reached over SSH as a non-root user.

The host's private nginx is replaced by the system's, as Debian runs it: ``/usr/sbin/nginx``
with ``/etc/nginx/nginx.conf`` (``user www-data;``: master as root, workers as www-data, pid
``/run/nginx.pid``), Debian's ``sites-enabled/default`` with its ``default_server``, and a site
of the host's own (``shop.example``) beside it. A ``deploy`` user logs in with the sandbox's key;
sshd gives it Debian's default user PATH, which has no /usr/sbin. Everything written lives in
the host's mount namespace only: /etc, /var/log and /home are copy-on-write overlays (the ones
``bluegreen.sandbox.provision`` makes), /run and /var/lib/nginx are the host's own.

sshd reads a user's authorized_keys as that user, so the sandbox lives in a directory every
user may traverse (not pytest's 0700 tmp), removed after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bluegreen.sandbox import provision as sandbox_provision
from bluegreen.sandbox.config import DEFAULT_HEALTH, write_config
from bluegreen.sandbox.hosts import Sandbox, SandboxHost
from bluegreen.sandbox.netns import run
from tests.helpers import need
from tests.sandbox_fixtures import need_root

DEPLOY = "deploy"
# What sshd (compiled by Debian, no PAM env) gives a user other than root.
DEBIAN_USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
SHOP_HOST = "shop.example"

_SHAPE = r"""
set -e
base=$1 src=$2 user=$3
mkdir -p "$base/var-lib-nginx"
mount --bind "$base/var-lib-nginx" /var/lib/nginx
mount -t tmpfs -o mode=0755 "$src" /run
install -d -m 0755 /run/sshd
useradd --create-home --shell /bin/bash "$user"
# No password, yet not locked: sshd without PAM refuses a locked account ('!').
usermod --password '*' "$user"
# As on a real server (sudo warns on every call when the hostname does not resolve).
printf '127.0.1.1\t%s\n' "$(hostname)" >> /etc/hosts
cat > /etc/nginx/sites-available/shop <<'SITE'
server {
    listen 80;
    server_name shop.example;
    location / { return 200 "shop\n"; }
}
SITE
ln -s /etc/nginx/sites-available/shop /etc/nginx/sites-enabled/shop
/usr/sbin/nginx
"""


@dataclass
class DebianHost:
    sandbox: Sandbox
    host: SandboxHost
    workdir: Path

    @property
    def spec(self) -> str:
        return f"{DEPLOY}@{self.host.address}"

    def ssh(self, script: str, *, user: str = DEPLOY, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """``script`` run by ``user``'s login shell over the host's sshd."""
        argv = ["ssh", "-F", str(self.sandbox.ssh_config), "-l", user, self.host.netns, script]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def root(self, script: str) -> subprocess.CompletedProcess[str]:
        """``script`` run as root inside the host (not over SSH)."""
        return run(self.host.exec_argv(["sh", "-c", script]), check=False)

    def config(self, path: Path, **nginx: Any) -> Path:
        """A bluegreen.toml for the deploy user with every optional [nginx] key at its
        default (only the upstream file provision.sh includes), plus ``nginx``."""
        document = {
            "app": {"name": "hello", "root": "/srv/hello", "runner": "command",
                    "command": "bin/server", "stop_timeout": 10, "keep_releases": 3},
            "health": DEFAULT_HEALTH,
            "nginx": {"upstream_file": "/srv/hello/nginx/hello.bluegreen.conf", **nginx},
            "switch": {"drain_timeout": 10},
            "targets": {"debian": {"hosts": [self.spec],
                                   "identity_file": str(self.sandbox.identity_file),
                                   "known_hosts": str(self.sandbox.known_hosts)}},
        }
        return write_config(path, document)


# nginx's processes, read from /proc (the tests run as root, outside the host).


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def stat_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def freeze_after_fork(master: int, old: list[int], frozen: list[bool]) -> None:
    """SIGSTOP ``master`` once it has forked a worker not in ``old``; record whether every
    old worker was still accepting then (the master had not told them to quit yet)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if set(children(master)) - set(old):
            os.kill(master, signal.SIGSTOP)
            frozen.append(all(title(p) == "nginx: worker process" for p in old))
            return
        time.sleep(0.0005)


def settled_workers(master: int) -> list[int]:
    """The master's workers once no earlier generation is left (provisioning reloads)."""
    deadline = time.monotonic() + 10
    while True:
        kids = children(master)
        if kids and all(title(p) == "nginx: worker process" for p in kids):
            time.sleep(0.2)
            if children(master) == kids:
                return kids
        assert time.monotonic() < deadline, [title(p) for p in kids]
        time.sleep(0.05)


def shape(host: SandboxHost) -> None:
    """Turn a started sandbox host into the Debian server above (its private nginx stops)."""
    host.nginx.stop()
    base = host.confdir / "provision"
    tag = f"{host.mount_tag}-provision"  # the overlays provision() finds and reuses
    run(host.exec_argv(["sh", "-c", sandbox_provision._ISOLATE, "isolate", str(base), tag,
                        "/etc", "/var/log", "/home"]))
    run(host.exec_argv(["sh", "-c", _SHAPE, "shape", str(base), tag, DEPLOY]))


@pytest.fixture
def debian_host() -> Iterator[DebianHost]:
    need_root()
    need(shutil.which("sudo") is not None, "sudo is not installed (apt-get install -y sudo)")
    need(shutil.which("useradd") is not None, "useradd is missing (package passwd)")
    workdir = Path(tempfile.mkdtemp(prefix="bg-debian-host-"))
    workdir.chmod(0o711)
    sandbox = Sandbox(workdir / "sandbox", 1)
    try:
        sandbox.start()
        shape(sandbox.hosts[0])
        yield DebianHost(sandbox, sandbox.hosts[0], workdir)
    finally:
        sandbox.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
