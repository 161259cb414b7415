"""Everything around `vagrant up` of the libvirt VM, and all of it undone after.

``prepare`` builds or finds the box, chooses KVM or TCG, creates the rehearsal's network
namespace and enters it (this thread: bg, vagrant and the load clients started from it run
there), and starts libvirtd/virtlogd in it. ``close`` removes what libvirt made (domain,
volumes, networks), stops the daemons it started, ends anything left in the namespace and
deletes it.

A namespace another run prepared (``BG_VM_NETNS``, e.g. the test tier's VM, booted once per
session) is joined instead: its daemons and namespace belong to that run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from bluegreen.vm import accel, box, libvirtd
from bluegreen.vm.netns import NetNamespace, exists

NETNS_VAR = "BG_VM_NETNS"
RUNDIR = Path("/run/bluegreen-vm")
# What a VM costs here, measured on a 2-core machine (vagrant up + provision, seconds).
EXPECT_UP = {"qemu": 300, "kvm": 60}


class VmError(RuntimeError):
    pass


class VmSession:
    def __init__(self) -> None:
        self.netns: NetNamespace | None = None
        self.libvirt: libvirtd.Libvirt | None = None
        self.box: box.Box | None = None
        self.accel: accel.Accel | None = None
        self.joined = False

    def prepare(self, vagrant_env: dict[str, str]) -> dict[str, str]:
        """Box, accelerator, namespace, daemons; the variables vagrant needs for them."""
        joined = os.environ.get(NETNS_VAR)
        if joined:
            if not exists(joined):
                raise VmError(f"{NETNS_VAR}={joined}: no such network namespace")
            self.netns = NetNamespace(joined)
            self.netns.enter()
            self.joined = True
            driver = os.environ.get("BG_VM_DRIVER", "qemu")
            self.accel = accel.Accel(driver, "chosen by the session that booted the VM")
            if not libvirtd.answering():
                raise VmError(f"{NETNS_VAR}={joined}: no libvirtd answers for it")
            return {NETNS_VAR: joined}
        if os.geteuid() != 0:
            raise VmError("the libvirt VM needs root (a network namespace, libvirtd)")
        if libvirtd.answering():
            raise VmError("a libvirtd already runs in this machine's own network namespace;"
                          " the VM's network must live in the rehearsal's own namespace",
                          )
        try:
            self.box = box.ensure(vagrant_env)
        except box.BoxError as exc:
            raise VmError(str(exc)) from exc
        kernel = (self.box.built or Path("/nonexistent")) / "vmlinuz"
        if not kernel.is_file():
            kernel = max(Path("/boot").glob("vmlinuz-*"), default=kernel)
        self.accel = accel.probe(kernel)
        name = f"bg-vm-{os.getpid()}"
        self.netns = NetNamespace(name)
        self.netns.create()
        self.netns.enter()
        self.libvirt = libvirtd.Libvirt(RUNDIR / name)
        try:
            self.libvirt.start()
        except (libvirtd.LibvirtError, OSError) as exc:
            raise VmError(str(exc)) from exc
        return {NETNS_VAR: name, "BG_VAGRANT_BOX": self.box.name,
                "BG_VM_DRIVER": self.accel.driver, "VAGRANT_DEFAULT_PROVIDER": "libvirt"}

    @property
    def emulated(self) -> bool:
        """TCG: the joined session's choice is not known here, so assume the slow one."""
        return self.accel is None or self.accel.emulated

    @property
    def expect_up(self) -> str:
        driver = self.accel.driver if self.accel is not None else "qemu"
        how = "emulated (TCG)" if driver != "kvm" else "KVM"
        return f"{how}: expect about {EXPECT_UP[driver] // 60} min, more on a busy machine"

    @property
    def notes(self) -> list[str]:
        out = []
        if self.box is not None:
            out.append(self.box.note)
        if self.accel is not None:
            out.append(f"libvirt driver {self.accel.driver}: {self.accel.why}")
        if self.netns is not None:
            out.append(f"network namespace {self.netns.name}"
                       + (" (joined)" if self.joined else ", libvirtd started in it"))
        return out

    def close(self) -> list[str]:
        """Undo prepare; what could not be undone."""
        problems: list[str] = []
        if self.libvirt is not None:
            problems += self.libvirt.remove_new()
            problems += self.libvirt.stop()
            self.libvirt = None
        if self.netns is not None:
            ns = self.netns
            if not self.joined:
                problems += _end_all(ns)
            ns.leave()
            if not self.joined:
                try:
                    ns.delete()
                except OSError as exc:
                    problems.append(f"ip netns del {ns.name}: {exc}")
            self.netns = None
        return problems


def _end_all(ns: NetNamespace) -> list[str]:
    """Anything still running in the namespace (dnsmasq, qemu, an ssh of vagrant's)."""
    me = os.getpid()

    def left() -> list[int]:  # a zombie is gone already; its parent has yet to reap it
        return [p for p in ns.pids() if p != me and libvirtd.alive(p)]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while left() and time.monotonic() < deadline:
            time.sleep(0.2)
    still = left()
    return [f"processes left in {ns.name}: {still}"] if still else []
