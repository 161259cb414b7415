"""Which environment a rehearsal runs in: the one asked for, or the best one available."""

from __future__ import annotations

import os
import shutil
import subprocess

from bluegreen.rehearse.envs import Environment, LocalEnv, RehearsalError, SandboxEnv
from bluegreen.rehearse.vagrantenv import VagrantEnv


def vagrant_provider() -> str | None:
    """The provider a VM could boot with here, or None (VirtualBox, or libvirt with KVM)."""
    if shutil.which("vagrant") is None:
        return None
    forced = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
    if shutil.which("VBoxManage") and forced in (None, "virtualbox"):
        return "virtualbox"
    if os.path.exists("/dev/kvm") and shutil.which("virsh") and forced in (None, "libvirt"):
        try:
            plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True,
                                     text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        if "vagrant-libvirt" in plugins:
            return "libvirt"
    return None


def choose(vagrant: bool, sandbox: bool, local: bool, hosts: int) -> tuple[Environment, str]:
    """The environment asked for, or the best available one, and why."""
    if sum((vagrant, sandbox, local)) > 1:
        raise RehearsalError("choose one of --vagrant, --sandbox and --local")
    if vagrant:
        return VagrantEnv(), "asked for with --vagrant"
    if sandbox:
        return SandboxEnv(hosts), "asked for with --sandbox"
    if local:
        return LocalEnv(), "asked for with --local"
    from bluegreen.sandbox.hosts import require_root_or_skip_reason

    provider = vagrant_provider()
    if provider is not None:
        return VagrantEnv(), f"vagrant with a working provider ({provider}) is installed"
    why = ("vagrant is not installed" if shutil.which("vagrant") is None
           else "vagrant has no working provider here (no VirtualBox, no libvirt with KVM)")
    reason = require_root_or_skip_reason()
    if reason is None:
        return SandboxEnv(hosts), f"{why}; running as root, so {hosts} simulated hosts"
    return LocalEnv(), f"{why}; {reason}, so this machine with a private nginx"
