"""The Vagrant environment: `vagrant up`, `vagrant ssh-config` into a bg target, and back.

The VM is provisioned by nginx/provision.sh, the script that also provisions a sandbox host,
so both environments are the same server. bg reaches the VM over SSH like any host: the
VM's key is recorded on the first contact (``--accept-new-host-keys``, as `vagrant ssh` does)
into the rehearsal's own known_hosts, and verified on every command after.

With the libvirt provider, :class:`bluegreen.vm.session.VmSession` does what surrounds
`vagrant up` (the box, KVM or TCG, the network namespace bg, vagrant and the load run in,
libvirtd); Vagrant's progress lines are kept out of bg's output.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bluegreen.rehearse.envs import Environment, Prepared, RehearsalError
from bluegreen.resources import resource_dir
from bluegreen.vagrant import VagrantHost, parse_ssh_config
from bluegreen.vm.session import VmError, VmSession

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_NOISE = re.compile(rb"^\s*(?:\S+:\s*)?Progress: \d+%|^\s*$")

UP_TIMEOUT = 1800.0
EMULATED_HEALTH = {"timeout": 8.0, "deadline": 180.0}
# An emulated guest's sshd can take over 10 s for a key exchange when the machine is busy.
EMULATED_CONNECT_TIMEOUT = 90.0
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
        self.vm: VmSession | None = None
        self.up_seconds: float | None = None

    def _vagrant(self, *args: str, timeout: float = 120.0, show: bool = False
                 ) -> subprocess.CompletedProcess[str]:
        if show:
            return self._shown(args, timeout)
        try:
            return subprocess.run(
                ["vagrant", *args], env=self._env, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL, capture_output=True)
        except FileNotFoundError as exc:
            raise RehearsalError("vagrant is not installed", hint="apt-get install vagrant"
                                 ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RehearsalError(f"vagrant {args[0]} did not finish in {timeout:.0f}s") from exc

    def _shown(self, args: tuple[str, ...], timeout: float
               ) -> subprocess.CompletedProcess[str]:
        """vagrant's output on stderr, less its progress lines (redrawn with CR)."""
        try:
            proc = subprocess.Popen(["vagrant", *args], env=self._env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise RehearsalError("vagrant is not installed", hint="apt-get install vagrant"
                                 ) from exc
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            for raw in proc.stdout:
                for piece in _ANSI.sub(b"", raw).split(b"\r"):
                    if not _NOISE.match(piece):
                        sys.stderr.write(piece.decode(errors="replace").rstrip() + "\n")
                sys.stderr.flush()
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise RehearsalError(f"vagrant {args[0]} did not finish in {timeout:.0f}s") from exc
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", "")

    def provider(self) -> str:
        """The provider `vagrant up` will use: VAGRANT_DEFAULT_PROVIDER, else VirtualBox when
        installed, else libvirt when the plugin is."""
        forced = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
        if forced:
            return forced
        if shutil.which("VBoxManage"):
            return "virtualbox"
        plugins = self._vagrant("plugin", "list")
        return "libvirt" if "vagrant-libvirt" in plugins.stdout else "virtualbox"

    def state(self) -> str:
        """The machine's state from `vagrant status --machine-readable` (e.g. running)."""
        proc = self._vagrant("status", "--machine-readable")
        for line in proc.stdout.splitlines():
            parts = line.split(",")
            if len(parts) >= 4 and parts[2] == "state":
                return parts[3]
        return "unknown"

    def start(self, app: str, workdir: Path) -> Prepared:
        """Boot the VM unless it runs already; it is the rehearsal's one host, over SSH."""
        vagrantfile = self.vagrantfile or find_vagrantfile()
        self._env = {**os.environ, "VAGRANT_CWD": str(vagrantfile.parent), "BG_APP": app}
        notes = self._boot(vagrantfile)
        proc = self._vagrant("ssh-config")
        if proc.returncode != 0:
            raise RehearsalError("vagrant ssh-config failed", detail=proc.stderr.strip())
        vm = parse_ssh_config(proc.stdout)[0]
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        sudo = "" if vm.user == "root" else "sudo -n "
        emulated = self.vm is not None and self.vm.emulated
        target: dict[str, object] = {"hosts": [vm.spec], "identity_file": vm.identity_file,
                                     "known_hosts": str(workdir / "known_hosts")}
        if emulated:
            target["connect_timeout"] = EMULATED_CONNECT_TIMEOUT
        return Prepared(
            name=self.name, hosts=1, root=f"/srv/{app}",
            nginx={"upstream_file": f"/srv/{app}/nginx/{app}.bluegreen.conf",
                   "test_command": f"{sudo}nginx -t", "reload_command": f"{sudo}nginx -s reload",
                   "pid_file": "/run/nginx.pid", "probe_url": "http://127.0.0.1/"},
            endpoints=[http_endpoint(vm)],
            target=target, first_contact=True, home=home,
            # Emulation (TCG): one answer of a slot through SSH can take seconds.
            health_floor=EMULATED_HEALTH if emulated else {},
            notes=[f"VM {vm.name}: {vm.spec}" + (" (started here)" if self.started else
                                                  " (already running; left running)"),
                   *notes],
        )

    def _boot(self, vagrantfile: Path) -> list[str]:
        """`vagrant up` unless the machine runs (libvirt: in a VM session prepared first);
        returns what to tell about it."""
        notes: list[str] = []
        if self.provider() == "libvirt":
            self.vm = VmSession()
            try:
                self._env.update(self.vm.prepare(self._env))
            except VmError as exc:
                raise RehearsalError(f"the VM cannot boot here: {exc}") from exc
            notes += self.vm.notes
            for note in self.vm.notes:
                print(f"vm: {note}", file=sys.stderr, flush=True)
        before = self.state()
        print(f"vagrant: {vagrantfile} (machine {before})", file=sys.stderr, flush=True)
        if before != "running":
            self.started = True
            expect = self.vm.expect_up if self.vm is not None else "minutes the first time"
            print(f"vagrant up: boots and provisions the VM ({expect})",
                  file=sys.stderr, flush=True)
            began = time.monotonic()
            up = self._vagrant("up", timeout=UP_TIMEOUT, show=True)
            self.up_seconds = time.monotonic() - began
            if up.returncode != 0:
                raise RehearsalError(f"vagrant up failed (exit {up.returncode})",
                                     hint="`vagrant status` and `vagrant up` show why")
            notes.append(f"vagrant up (boot + provision) took {self.up_seconds:.0f}s")
        return notes

    def stop(self, *, keep: bool) -> None:
        problems: list[str] = []
        if self.started and self._env:
            if keep:
                print("kept: the VM runs on (`vagrant destroy` removes it)", file=sys.stderr)
                if self.vm is not None and not self.vm.joined:
                    print(f"  in network namespace {self._env.get('BG_VM_NETNS')}, with"
                          " libvirtd started there", file=sys.stderr)
                return
            proc = self._vagrant("destroy", "-f", timeout=600.0)
            if proc.returncode != 0:
                problems.append(f"vagrant destroy failed: {proc.stderr.strip()[-500:]}")
        if self.vm is not None and not keep:
            problems += self.vm.close()
            self.vm = None
        if problems:
            raise RehearsalError("; ".join(problems))


def http_endpoint(vm: VagrantHost) -> tuple[str, int]:
    """Where the VM's nginx answers from here."""
    try:
        loopback = ipaddress.ip_address(vm.hostname).is_loopback
    except ValueError:
        loopback = vm.hostname == "localhost"
    if loopback:
        return "127.0.0.1", int(os.environ.get("BG_REHEARSE_HTTP_PORT", FORWARDED_HTTP_PORT))
    return vm.hostname, 80
