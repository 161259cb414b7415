"""Release artifacts: version, checksum, and a safety check of every tar member.

The archive is checked here, on the controller, before anything leaves it; the host then
verifies the sha256 of what arrived and extracts it with tar into a fresh directory.
Since the host extracts exactly the bytes that were checked, a hostile archive never
reaches a host's filesystem.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bluegreen.errors import ArtifactError

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
SUFFIXES = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class Artifact:
    path: Path
    version: str
    sha256: str
    size: int
    members: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def version_from_name(path: Path, app: str) -> str | None:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            prefix = f"{app}-"
            if stem.startswith(prefix) and len(stem) > len(prefix):
                return stem[len(prefix) :]
    return None


def check_version(version: str) -> str:
    if not VERSION_RE.match(version) or version in (".", ".."):
        raise ArtifactError(
            f"invalid version {version!r}: use letters, digits, '.', '_', '+' and '-'"
            " (at most 64, starting with a letter or digit)"
        )
    return version


def _escapes(path: str) -> bool:
    norm = posixpath.normpath(path)
    return norm == ".." or norm.startswith("../") or norm.startswith("/")


def check_members(path: Path) -> int:
    """Refuse anything that could write outside the release directory; return the count."""
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path} is not a readable .tar.gz: {exc}") from exc
    links: set[str] = set()
    count = 0
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArtifactError(f"{path} is damaged: {exc}") from exc
        for m in members:
            count += 1
            name = m.name
            where = f"{path.name}: member {name!r}"
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
                raise ArtifactError(f"{where} has an absolute path; refusing the archive")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if ".." in parts:
                raise ArtifactError(f"{where} contains '..'; refusing the archive")
            if m.isdev() or m.isfifo():
                raise ArtifactError(f"{where} is a device or fifo; refusing the archive")
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise ArtifactError(f"{where} has an unsupported type; refusing the archive")
            norm = "/".join(parts)
            # Writing through a link planted earlier in the archive could land anywhere.
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in links:
                    raise ArtifactError(f"{where} is written through a link; refusing the archive")
            if m.issym():
                target = m.linkname
                resolved = posixpath.join(posixpath.dirname(norm), target)
                if target.startswith("/") or _escapes(resolved):
                    raise ArtifactError(
                        f"{where} is a link to {target!r}, outside the release;"
                        " refusing the archive"
                    )
                tparts = [p for p in target.split("/") if p not in ("", ".")]
                base = [p for p in posixpath.dirname(norm).split("/") if p]
                for i in range(len(tparts)):
                    step = posixpath.normpath("/".join([*base, *tparts[: i + 1]]))
                    if step in links:
                        raise ArtifactError(
                            f"{where} is a link through another link; refusing the archive"
                        )
                links.add(norm)
            if m.islnk():
                target = m.linkname
                if target.startswith("/") or _escapes(target) or ".." in target.split("/"):
                    raise ArtifactError(
                        f"{where} is a hard link to {target!r}, outside the release;"
                        " refusing the archive"
                    )
                links.add(norm)
    if count == 0:
        raise ArtifactError(f"{path} is an empty archive")
    return count


def inspect(path: Path, *, app: str, version: str | None) -> Artifact:
    """Everything bg needs to know about an artifact; raises ArtifactError when unusable."""
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    if not path.name.endswith(SUFFIXES):
        raise ArtifactError(f"artifact {path} must be a .tar.gz")
    if version is None:
        version = version_from_name(path, app)
        if version is None:
            raise ArtifactError(
                f"cannot tell the version of {path.name}",
                hint=f"name it {app}-<version>.tar.gz or pass --version",
            )
    check_version(version)
    members = check_members(path)
    return Artifact(
        path=path,
        version=version,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        members=members,
    )
