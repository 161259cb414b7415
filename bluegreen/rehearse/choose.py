"""Which environment a rehearsal runs in: the one asked for, or the best one available."""

from __future__ import annotations

import os
import shutil
import subprocess

from bluegreen.rehearse.envs import Environment, LocalEnv, RehearsalError, SandboxEnv
from bluegreen.rehearse.vagrantenv import VagrantEnv


def vagrant_provider() -> tuple[str, str] | None:
    """The provider a VM can boot with here and how long a rehearsal on it takes, or None.

    VirtualBox when installed. libvirt when vagrant-libvirt, libvirtd and QEMU are installed,
    bg runs as root (the VM lives in a network namespace of the rehearsal's own) and no
    libvirtd already runs (it would be in this machine's own namespace): QEMU's TCG boots
    where KVM does not, so such a machine can always boot the VM, slowly.
    """
    if shutil.which("vagrant") is None:
        return None
    forced = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
    if shutil.which("VBoxManage") and forced in (None, "virtualbox"):
        return "virtualbox", "a few minutes"
    if forced not in (None, "libvirt"):
        return None
    from bluegreen.vm import libvirtd

    needed = ("virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img")
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in needed) \
            or libvirtd.answering():
        return None
    try:
        plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "vagrant-libvirt" not in plugins:
        return None
    return "libvirt", ("about 10 minutes under emulation (TCG), less with KVM; building the"
                       " box first adds about 3 minutes once")


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

    found = vagrant_provider()
    if found is not None:
        provider, expect = found
        return VagrantEnv(), (f"a VM can boot here (vagrant with {provider}); expect"
                              f" {expect}")
    why = ("vagrant is not installed" if shutil.which("vagrant") is None
           else "vagrant has no provider that can boot a VM here (no VirtualBox; no"
                " vagrant-libvirt with QEMU and root)")
    reason = require_root_or_skip_reason()
    if reason is None:
        return SandboxEnv(hosts), f"{why}; running as root, so {hosts} simulated hosts"
    return LocalEnv(), f"{why}; {reason}, so this machine with a private nginx"
