"""KVM or TCG: KVM only when a probe shows that a kernel boots under it here.

Seen on the machines this project runs on: /dev/kvm opens and KVM_CREATE_VM succeeds, yet every
guest hangs right after the kernel is loaded ("Probing EDD"). So the answer is never taken from
/dev/kvm alone: the probe boots the box's own kernel under KVM with no disk and no initrd and
waits, for a few seconds only, for the kernel to reach its panic about the missing root file
system, which is far past where those guests hang. Anything else (no /dev/kvm, no QEMU, a
timeout, another message) means TCG, which is slow but always boots.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 12.0  # a KVM guest reaches the panic in about a second
REACHED = (b"VFS: Unable to mount root", b"Kernel panic")


@dataclass(frozen=True)
class Accel:
    driver: str  # vagrant-libvirt's libvirt.driver: "kvm" or "qemu" (TCG)
    why: str

    @property
    def emulated(self) -> bool:
        return self.driver != "kvm"


def probe(kernel: Path, timeout: float = PROBE_TIMEOUT, *, kvm: str = "/dev/kvm") -> Accel:
    """Boot ``kernel`` under KVM for at most ``timeout`` seconds."""
    forced = os.environ.get("BG_VM_DRIVER")
    if forced in ("kvm", "qemu"):
        return Accel(forced, f"BG_VM_DRIVER={forced}")
    if not os.access(kvm, os.R_OK | os.W_OK):
        return Accel("qemu", f"no usable {kvm}: TCG (emulation)")
    qemu = shutil.which(QEMU)
    if qemu is None:
        return Accel("qemu", f"{QEMU} is not installed")
    if not kernel.is_file():
        return Accel("qemu", f"no kernel to probe KVM with ({kernel}): TCG")
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 loglevel=7"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen = b""
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while (left := started + timeout - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                seen = (seen + chunk)[-65536:]
                if any(mark in seen for mark in REACHED):
                    took = time.monotonic() - started
                    return Accel("kvm", f"a kernel booted under KVM in {took:.1f}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return Accel("qemu", f"KVM did not boot a kernel in {timeout:.0f}s (last: {last[0][:80]!r}):"
                         " TCG (emulation)")


def main() -> int:
    """``python -m bluegreen.vm.accel KERNEL``: prints kvm or qemu (for the Vagrantfile)."""
    import sys

    kernel = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/nonexistent")
    accel = probe(kernel)
    print(accel.driver)
    print(accel.why, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
