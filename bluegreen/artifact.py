"""Release artifacts: version, checksum, and a safety check of every tar member.

The archive is checked here, on the controller, before anything leaves it; the host then
verifies the sha256 of what arrived and extracts it with tar into a fresh directory.
Since the host extracts exactly the bytes that were checked, a hostile archive never
reaches a host's filesystem.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bluegreen.artifactio import BLOCK, Counted, Gunzip, Hashed, TooBig
from bluegreen.errors import ArtifactError
from bluegreen.releases import SHA_FILE

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


DEFAULT_MAX_SIZE = 2 * 1024**3
# Mode bits a release member may not carry: bg extracts as the deploy user (often root,
# and then tar keeps the archive's modes), so these would land on the host as they are.
_FORBIDDEN_MODE = 0o6002  # setuid, setgid, world-writable


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def check_members(path: Path, *, max_size: int = DEFAULT_MAX_SIZE,
                  need: tuple[str, str] | None = None) -> int:
    """Refuse anything that could write outside the release directory, or unpack to more
    than ``max_size`` bytes; return the member count (see :func:`_scan`)."""
    return _scan(path, max_size=max_size, need=need)[0]


def _scan(path: Path, *, max_size: int = DEFAULT_MAX_SIZE,
          need: tuple[str, str] | None = None) -> tuple[int, str, int]:
    """Check the archive (:func:`check_members`); return its member count, and the sha256
    and size of the bytes that were checked.

    The archive is read once as a stream and never extracted: a decompression bomb is
    refused as soon as its declared sizes, or the bytes gunzip produced, pass the limit.
    ``need``: (path, why) of the executable the app starts, which the release must hold.
    """
    # Headers, padding and the end blocks add up to more than the members' sizes: allow
    # them, so the limit means "the files of the release".
    stream_limit = max_size + max_size // 8 + (1 << 20)
    try:
        with path.open("rb", buffering=0) as raw:
            hashed = Hashed(raw)
            counted = Counted(Gunzip(hashed), stream_limit)  # type: ignore[arg-type]
            reader = io.BufferedReader(counted, buffer_size=BLOCK)
            count, tree = _check_stream(path, reader, max_size)
            # Read to the end: a truncated or corrupt gzip tail fails here, not on the host.
            while reader.read(BLOCK):
                pass
    except TooBig:
        raise ArtifactError(
            f"{path.name} unpacks to more than [app] max_release_size ({_human(max_size)});"
            " refusing the archive",
            hint="raise [app] max_release_size if this release really is that large",
        ) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{path} is not a readable .tar.gz: {exc}") from exc
    if count == 0:
        raise ArtifactError(f"{path} is an empty archive")
    if need is not None:
        _require(path, tree, need)
    return count, hashed.digest.hexdigest(), hashed.size


@dataclass
class _Tree:
    """What the archive holds, by normalized name: enough to find a file through links."""

    symlinks: dict[str, str] = field(default_factory=dict)  # name -> target
    hardlinks: dict[str, str] = field(default_factory=dict)  # name -> target
    files: dict[str, int] = field(default_factory=dict)  # regular file -> mode

    def link_of(self, name: str) -> str | None:
        """``name`` as a link: "'name' -> 'target'" (None: no link)."""
        for table in (self.symlinks, self.hardlinks):
            if name in table:
                return f"{name!r} -> {table[name]!r}"
        return None


def _outside(link: str, target: str) -> bool:
    return target.startswith("/") or _escapes(posixpath.join(posixpath.dirname(link), target))


def _check_stream(path: Path, reader: IO[bytes], max_size: int) -> tuple[int, _Tree]:
    """Refuse what tar could write outside the release. Links may point anywhere (a Python
    venv's ``bin/python3 -> /usr/bin/python3``): nothing is ever written THROUGH one (no
    member under a link, none replacing one, no hard link through one), and hard links out
    of the release, absolute names, ``..``, devices and fifos stay refused."""
    tree = _Tree()
    count = 0
    total = 0
    with tarfile.open(fileobj=reader, mode="r|", bufsize=BLOCK) as tar:
        for m in tar:
            count += 1
            where = f"{path.name}: member {m.name!r}"
            total += max(m.size, 0)
            if total > max_size:
                raise TooBig
            parts = _check_name(where, m)
            norm = "/".join(parts)
            # Writing under (or over) a link planted earlier in the archive could land anywhere.
            for i in range(1, len(parts) + 1):
                link = tree.link_of("/".join(parts[:i]))
                if link is not None:
                    how = "replaces" if i == len(parts) else "is written through"
                    raise ArtifactError(f"{where} {how} a link ({link}"
                                        f"{_where_to(tree, parts[:i])}); refusing the archive")
            if norm == SHA_FILE:  # bg writes its checksum there after extracting
                raise ArtifactError(f"{where} is bg's own {SHA_FILE}; refusing the archive")
            if not parts and (m.issym() or m.islnk()):
                raise ArtifactError(f"{where} would make the release itself a link;"
                                    " refusing the archive")
            if m.issym():
                tree.symlinks[norm] = m.linkname
            elif m.islnk():
                tree.hardlinks[norm] = _hardlink_target(where, m.linkname, tree)
            elif m.isfile():
                tree.files[norm] = m.mode
    return count, tree


def _where_to(tree: _Tree, parts: list[str]) -> str:
    name = "/".join(parts)
    target = tree.symlinks.get(name)
    return ", outside the release" if target is not None and _outside(name, target) else ""


def _check_name(where: str, m: tarfile.TarInfo) -> list[str]:
    """The member's path parts; refuses names, types and modes tar must never write."""
    name = m.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArtifactError(f"{where} has an absolute path; refusing the archive")
    if "\n" in name or "\x00" in name:
        raise ArtifactError(f"{where} has a control character in its name; refusing the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"{where} contains '..'; refusing the archive")
    if m.isdev() or m.isfifo():
        raise ArtifactError(f"{where} is a device or fifo; refusing the archive")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        raise ArtifactError(f"{where} has an unsupported type; refusing the archive")
    if not m.issym() and m.mode & _FORBIDDEN_MODE:
        raise ArtifactError(
            f"{where} has mode {m.mode:o} (setuid, setgid or world-writable);"
            " refusing the archive",
            hint="fix the modes in the build (e.g. chmod -R go-w,ug-s)",
        )
    return parts


def _hardlink_target(where: str, target: str, tree: _Tree) -> str:
    """A hard link's target: inside the release, and never reached through a link."""
    if target.startswith("/") or _escapes(target) or ".." in target.split("/"):
        raise ArtifactError(
            f"{where} is a hard link to {target!r}, outside the release; refusing the archive")
    tparts = [p for p in target.split("/") if p not in ("", ".")]
    for i in range(1, len(tparts) + 1):
        if tree.link_of("/".join(tparts[:i])) is not None:
            raise ArtifactError(f"{where} is a hard link to {target!r}, through a link;"
                                " refusing the archive")
    return "/".join(tparts)


def _find(tree: _Tree, name: str) -> int | None:
    """The mode of the regular file at ``name``, following the archive's own links; -1
    when a link leads outside the release (nothing to check here), None when there is none."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for _ in range(40):  # as the kernel's limit on nested links
        for i in range(1, len(parts) + 1):
            here = "/".join(parts[:i])
            target = tree.symlinks.get(here)
            if target is None:
                continue
            if _outside(here, target):
                return -1
            rest = posixpath.join(posixpath.dirname(here), target, *parts[i:])
            parts = [p for p in posixpath.normpath(rest).split("/") if p not in ("", ".")]
            break
        else:
            full = "/".join(parts)
            full = tree.hardlinks.get(full, full)
            return tree.files.get(full)
    return None


def _require(path: Path, tree: _Tree, need: tuple[str, str]) -> None:
    """Refuse a release without the executable the app's command starts."""
    name, why = need
    mode = _find(tree, name)
    if mode == -1 or (mode is not None and mode & 0o111):
        return
    if mode is not None:
        raise ArtifactError(f"{path.name}: {name} is not executable (mode {mode:o}); it is"
                            f" what {why} runs", hint=f"chmod +x {name} before packing")
    clean = "/".join(p for p in name.split("/") if p not in ("", "."))
    nested = sorted(f for f in tree.files if f.endswith("/" + clean))
    hint = (f"the archive has {nested[0]}: pack the files at its root"
            f" (tar -C {nested[0][: -len(clean) - 1]} -czf ... .)" if nested
            else f"build the release with {name} in it, or change {why.split(' = ')[0]}")
    raise ArtifactError(f"{path.name} has no {name}, which {why} runs; nothing was uploaded",
                        hint=hint)


def inspect(path: Path, *, app: str, version: str | None,
            max_size: int = DEFAULT_MAX_SIZE, need: tuple[str, str] | None = None) -> Artifact:
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
    members, sha256, size = _scan(path, max_size=max_size, need=need)
    return Artifact(path=path, version=version, sha256=sha256, size=size, members=members)
