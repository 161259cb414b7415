"""Extract a tarball the benchmarks built themselves, on every Python bg supports.

``TarFile.extractall(filter="data")`` exists from Python 3.11.4 (and 3.12); Debian 12's
3.11.2 raises TypeError on the keyword. There the members are checked by hand the same
way the "data" filter would refuse them (absolute paths, ``..``, links leaving the
directory, devices), then extracted.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path


def extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = os.path.realpath(dest)
        for m in tar.getmembers():
            _check(m, root)
        tar.extractall(dest)


def _check(member: tarfile.TarInfo, root: str) -> None:
    target = os.path.realpath(os.path.join(root, member.name))
    inside = target == root or target.startswith(root + os.sep)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ValueError(f"{member.name}: not a file, directory or link")
    if member.name.startswith("/") or not inside:
        raise ValueError(f"{member.name}: outside {root}")
    if member.issym() or member.islnk():
        base = os.path.dirname(target) if member.issym() else root
        link = os.path.realpath(os.path.join(base, member.linkname))
        if member.linkname.startswith("/") or not (link == root
                                                   or link.startswith(root + os.sep)):
            raise ValueError(f"{member.name}: links outside {root}")
