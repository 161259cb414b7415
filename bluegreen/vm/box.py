"""The Vagrant box the VM boots: the public ``debian/bookworm64`` when it is installed, else
the box vm/build-box.sh builds from Debian's packages (cached by its inputs), added to Vagrant
under a configurable name. ``BG_VAGRANT_BOX`` names the box to use."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bluegreen.resources import resource_dir

PUBLIC = "debian/bookworm64"
OURS = "bluegreen/bookworm64"
BUILD_TIMEOUT = 1800.0


class BoxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Box:
    name: str
    built: Path | None  # our build (its directory holds vmlinuz for the KVM probe)
    note: str


def script() -> Path:
    return resource_dir("vm") / "build-box.sh"


def installed(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Boxes Vagrant has for libvirt: name -> the box's info.json (``vagrant box list -i``)."""
    proc = subprocess.run(["vagrant", "box", "list", "-i", "--machine-readable"], env=env,
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)
    boxes: dict[str, dict[str, str]] = {}
    name, provider = "", ""
    for line in proc.stdout.splitlines():
        parts = line.split(",", 4)
        if len(parts) < 4:
            continue
        kind, rest = parts[2], parts[3:]
        if kind == "box-name":
            name, provider = rest[0], ""
        elif kind == "box-provider":
            provider = rest[0]
            if provider == "libvirt":
                boxes.setdefault(name, {})
        elif kind == "box-info" and provider == "libvirt" and len(rest) == 2:
            boxes.setdefault(name, {})[rest[0]] = rest[1]
    return boxes


def build(say: bool = True) -> Path:
    """Our box file, built now unless the cache holds it (progress on stderr)."""
    try:
        proc = subprocess.run(["sh", str(script())], capture_output=False, text=True,
                              stdout=subprocess.PIPE, stderr=sys.stderr if say else
                              subprocess.DEVNULL, timeout=BUILD_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BoxError(f"vm/build-box.sh took over {BUILD_TIMEOUT:.0f}s") from exc
    path = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or path is None or not path.is_file():
        raise BoxError(f"vm/build-box.sh failed (exit {proc.returncode})")
    return path


def key() -> str:
    return subprocess.run(["sh", str(script()), "--key"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def ensure(env: dict[str, str]) -> Box:
    """The box to boot, built and added when needed."""
    boxes = installed(env)
    wanted = os.environ.get("BG_VAGRANT_BOX") or (PUBLIC if PUBLIC in boxes else OURS)
    if wanted == PUBLIC:
        return Box(PUBLIC, None, f"box {PUBLIC}" + ("" if PUBLIC in boxes else
                                                    " (Vagrant downloads it)"))
    info = boxes.get(wanted)
    if info is not None and "bg_box_key" not in info:
        return Box(wanted, None, f"box {wanted} (installed, not built by bg)")
    box_file = build()
    if info is not None and info.get("bg_box_key") == key():
        return Box(wanted, box_file.parent, f"box {wanted} (built from Debian's packages,"
                                            f" {box_file.parent})")
    proc = subprocess.run(["vagrant", "box", "add", "--force", "--name", wanted,
                           str(box_file)], env=env, capture_output=True, text=True,
                          timeout=600, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BoxError(f"vagrant box add {wanted} failed: {proc.stderr.strip()[-500:]}")
    return Box(wanted, box_file.parent,
               f"box {wanted} (built from Debian's packages, added from {box_file})")
