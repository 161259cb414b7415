"""The Vagrant environment: `vagrant up`, `vagrant ssh-config` into a bg target, and back.

The VM is provisioned by nginx/provision.sh, the script that also provisions a sandbox host,
so both environments are the same server. bg reaches the VM over SSH like any host: the
VM's key is recorded on the first contact (``--accept-new-host-keys``, as `vagrant ssh` does)
into the rehearsal's own known_hosts, and verified on every command after.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from bluegreen.rehearse.envs import Environment, Prepared, RehearsalError
from bluegreen.resources import resource_dir
from bluegreen.vagrant import VagrantHost, parse_ssh_config

UP_TIMEOUT = 1800.0
# The Vagrantfile forwards the VM's port 80 here when the VM is reached through 127.0.0.1
# (VirtualBox's NAT); a provider with a routable VM address (libvirt) is reached on port 80.
FORWARDED_HTTP_PORT = 8080


def find_vagrantfile(cwd: Path | None = None) -> Path:
    """The user's Vagrantfile (in the current directory), else the one shipped with bg."""
    here = (cwd or Path.cwd()) / "Vagrantfile"
    if here.is_file():
        return here
    shipped = resource_dir("nginx").parent / "Vagrantfile"
    if shipped.is_file():
        return shipped
    raise RehearsalError("no Vagrantfile here and none shipped with bg",
                         hint="copy the Vagrantfile of bg's repository next to bluegreen.toml")


class VagrantEnv(Environment):
    name = "vagrant"

    def __init__(self, vagrantfile: Path | None = None) -> None:
        self.vagrantfile = vagrantfile
        self.started = False
        self._env: dict[str, str] = {}

    def _vagrant(self, *args: str, timeout: float = 120.0, show: bool = False
                 ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["vagrant", *args], env=self._env, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr if show else subprocess.PIPE,
                stderr=sys.stderr if show else subprocess.PIPE)
        except FileNotFoundError as exc:
            raise RehearsalError("vagrant is not installed", hint="apt-get install vagrant"
                                 ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RehearsalError(f"vagrant {args[0]} did not finish in {timeout:.0f}s") from exc

    def state(self) -> str:
        """The machine's state from `vagrant status --machine-readable` (e.g. running)."""
        proc = self._vagrant("status", "--machine-readable")
        for line in proc.stdout.splitlines():
            parts = line.split(",")
            if len(parts) >= 4 and parts[2] == "state":
                return parts[3]
        return "unknown"

    def start(self, app: str, workdir: Path) -> Prepared:
        vagrantfile = self.vagrantfile or find_vagrantfile()
        self._env = {**os.environ, "VAGRANT_CWD": str(vagrantfile.parent), "BG_APP": app}
        before = self.state()
        print(f"vagrant: {vagrantfile} (machine {before})", file=sys.stderr, flush=True)
        if before != "running":
            self.started = True
            print("vagrant up: boots and provisions the VM (minutes the first time)",
                  file=sys.stderr, flush=True)
            up = self._vagrant("up", timeout=UP_TIMEOUT, show=True)
            if up.returncode != 0:
                raise RehearsalError(f"vagrant up failed (exit {up.returncode})",
                                     hint="`vagrant status` and `vagrant up` show why")
        proc = self._vagrant("ssh-config")
        if proc.returncode != 0:
            raise RehearsalError("vagrant ssh-config failed", detail=proc.stderr.strip())
        vm = parse_ssh_config(proc.stdout)[0]
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        sudo = "" if vm.user == "root" else "sudo -n "
        return Prepared(
            name=self.name, hosts=1, root=f"/srv/{app}",
            nginx={"upstream_file": f"/srv/{app}/nginx/{app}.bluegreen.conf",
                   "test_command": f"{sudo}nginx -t", "reload_command": f"{sudo}nginx -s reload",
                   "pid_file": "/run/nginx.pid", "probe_url": "http://127.0.0.1/"},
            endpoints=[http_endpoint(vm)],
            target={"hosts": [vm.spec], "identity_file": vm.identity_file,
                    "known_hosts": str(workdir / "known_hosts")},
            first_contact=True, home=home,
            notes=[f"VM {vm.name}: {vm.spec}" + (" (started here)" if self.started else
                                                  " (already running; left running)")],
        )

    def stop(self, *, keep: bool) -> None:
        if not self.started or not self._env:
            return
        if keep:
            print("kept: the VM runs on (`vagrant destroy` removes it)", file=sys.stderr)
            return
        proc = self._vagrant("destroy", "-f", timeout=600.0)
        if proc.returncode != 0:
            raise RehearsalError("vagrant destroy failed", detail=proc.stderr.strip())


def http_endpoint(vm: VagrantHost) -> tuple[str, int]:
    """Where the VM's nginx answers from here."""
    try:
        loopback = ipaddress.ip_address(vm.hostname).is_loopback
    except ValueError:
        loopback = vm.hostname == "localhost"
    if loopback:
        return "127.0.0.1", int(os.environ.get("BG_REHEARSE_HTTP_PORT", FORWARDED_HTTP_PORT))
    return vm.hostname, 80
