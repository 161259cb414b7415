"""The release's way to a host, fast and still checked: one read of the artifact checks it
and hashes it (every gzip member, padding and trailing bytes included), and the host's
receive + extract scripts (real sh, tar and hashers) refuse bytes whose sha256 differs,
with openssl or, without it, coreutils' sha256sum."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from bluegreen import artifact, releases
from bluegreen.errors import ArtifactError
from bluegreen.layout import Layout
from bluegreen.shell import ScriptExit


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "hello-1.0.0.tar.gz"
    path.write_bytes(data)
    return path


@pytest.mark.unit
def test_sha256_is_of_the_whole_file_the_check_read(tmp_path: Path) -> None:
    data = gzip.compress(_tar({"bin/server": os.urandom(3 << 20)}), mtime=0)
    path = _write(tmp_path, data)
    art = artifact.inspect(path, app="hello", version=None, need=("bin/server", "command"))
    assert (art.sha256, art.size, art.members) == (hashlib.sha256(data).hexdigest(), len(data), 1)


@pytest.mark.unit
def test_every_gzip_member_is_checked(tmp_path: Path) -> None:
    """tar -xzf reads concatenated members as one stream: the check must see them all."""
    body = _tar({"a": b"x" * 5000, "../evil": b"y"})
    data = gzip.compress(body[:4096]) + b"\0" * 10 + gzip.compress(body[4096:])
    with pytest.raises(ArtifactError, match=r"'\.\.'"):
        artifact.check_members(_write(tmp_path, data))


@pytest.mark.unit
@pytest.mark.parametrize("damage", ["truncated", "crc", "trailing"])
def test_damaged_gzip_is_refused(tmp_path: Path, damage: str) -> None:
    data = bytearray(gzip.compress(_tar({"bin/server": os.urandom(1 << 16)})))
    if damage == "truncated":
        data = data[:-100]
    elif damage == "crc":
        data[-6] ^= 0xFF  # the CRC32 in the trailer
    else:
        data += b"not gzip"
    with pytest.raises(ArtifactError, match=r"not a readable \.tar\.gz"):
        artifact.check_members(_write(tmp_path, bytes(data)))


def _path_without_openssl(tmp_path: Path) -> str:
    """A PATH with the tools the scripts use, but no openssl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "mv", "rm", "mkdir", "tar", "gzip", "chmod", "sha256sum"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.unit
@pytest.mark.parametrize("hasher", ["openssl", "sha256sum"])
def test_host_refuses_bytes_whose_sha256_differs(tmp_path: Path, hasher: str) -> None:
    if hasher == "openssl" and not shutil.which("openssl"):
        pytest.skip("no openssl here")
    paths = Layout(str(tmp_path / "app"))
    for d in paths.directories:
        Path(d).mkdir(parents=True, exist_ok=True)
    data = gzip.compress(_tar({"bin/server": b"#!/bin/sh\n"}))
    art = _write(tmp_path, data)
    env = {"PATH": os.environ["PATH"] if hasher == "openssl"
           else _path_without_openssl(tmp_path)}

    def ship(sha: str) -> subprocess.CompletedProcess[bytes]:
        script = (releases.receive_script(paths, "1.0.0") + "\n"
                  + releases.extract_script(paths, "1.0.0", sha))
        with art.open("rb") as stdin:
            return subprocess.run(["/bin/sh", "-c", script], stdin=stdin, env=env,
                                  capture_output=True, check=False)

    wrong = ship(hashlib.sha256(data + b"x").hexdigest())
    assert wrong.returncode == ScriptExit.SHA_MISMATCH, wrong
    assert b"checksum mismatch" in wrong.stdout
    assert not Path(paths.release("1.0.0")).exists()
    assert not list(Path(paths.uploads).iterdir())  # the refused upload is gone
    right = ship(hashlib.sha256(data).hexdigest())
    assert right.returncode == 0, right
    assert (Path(paths.release("1.0.0")) / "bin/server").read_bytes() == b"#!/bin/sh\n"
