"""Hostile and broken input is refused with a clear error and changes nothing on any host.

Every case runs the real CLI against a deployed app behind a real nginx, and hashes the
app root and nginx's prefix (every path, mode, link target and byte) before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bluegreen import artifact
from bluegreen.errors import ArtifactError, ExitCode, StateError
from bluegreen.sandbox.sample import build_sample
from bluegreen.state import HostState
from tests.helpers import Workspace

CANARY = "/tmp/bg-hostile-canary"


def tree_digest(*roots: Path, skip: tuple[str, ...] = ("logs",)) -> dict[str, str]:
    """Path -> (type, mode, content hash or link target) for everything under ``roots``."""
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in [*dirnames, *filenames]:
                p = Path(dirpath, name)
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    what = "link:" + os.readlink(p)
                elif stat.S_ISREG(st.st_mode):
                    what = "file:" + hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    what = "dir"
                out[str(p)] = f"{what} {stat.S_IMODE(st.st_mode):o}"
    return out


@pytest.fixture
def live(workspace: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    """The workspace with 1.0.0 deployed and live."""
    workspace.bg("deploy", str(build_sample(tmp_path / "arts", "1.0.0")))
    assert "1.0.0" in workspace.get().text
    if os.path.exists(CANARY):
        os.unlink(CANARY)
    yield workspace


def refused(ws: Workspace, *args: str, code: int, words: str,
            before: Callable[[], None] | None = None) -> str:
    """Run bg; assert exit ``code``, ``words`` in the error, no traceback, nothing changed."""
    if before:
        before()
    roots = (ws.root, ws.nginx.prefix)
    digest = tree_digest(*roots)
    proc = ws.bg(*args, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert words in out, out
    assert "Traceback" not in out, out
    assert tree_digest(*roots) == digest, "a refused operation changed a host"
    assert "1.0.0" in ws.get().text  # the live version still answers through nginx
    assert not os.path.exists(CANARY), "injected shell ran"
    return out


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda t: t + "\n[app\n", "bluegreen.toml"),  # malformed TOML
    (lambda t: t + "\n[nginx.extra]\n", "unknown key nginx.extra"),
    (lambda t: t.replace("keep_releases = 3", "keep_releases = \"3\""),
     "app.keep_releases must be an integer"),
    (lambda t: t.replace("drain_timeout = 10", "drain_timeout = true"),
     "switch.drain_timeout must be a number"),
    (lambda t: t.replace('name = "hello"', f'name = "hello;touch {CANARY}"'),
     "app.name must be a name"),
    (lambda t: t.replace("[slots]\n", "[slots]\nbogus = 1\n"), "unknown key slots.bogus"),
    (lambda t: t + '\n[app.max_release_size]\n', "app"),
    (lambda t: t.replace("keep_releases = 3", 'max_release_size = "lots"'),
     "app.max_release_size must be a size"),
    (lambda t: t.replace("[hooks]", "") + '\n[hooks]\nbefore_switch = [""]\n',
     "hooks.before_switch[0]"),
])
def test_broken_config_is_refused(live: Workspace, tmp_path: Path,
                                  mutate: Callable[[str], str], words: str) -> None:
    good = live.config.read_text()
    art = build_sample(tmp_path / "arts", "2.0.0")
    live.config.write_text(mutate(good))
    try:
        refused(live, "deploy", str(art), code=ExitCode.USAGE, words=words)
    finally:
        live.config.write_text(good)


def test_port_clash_is_refused(live: Workspace, tmp_path: Path) -> None:
    good = live.config.read_text()
    blue, green = live.ports["blue"], live.ports["green"]
    live.config.write_text(good.replace(f"green = {green}", f"green = {blue}"))
    try:
        refused(live, "deploy", str(build_sample(tmp_path / "arts", "2.0.0")),
                code=ExitCode.USAGE, words="must be different ports")
    finally:
        live.config.write_text(good)


# ----------------------------------------------------------------------------- tarballs


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE
          ) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


HOSTILE_TARS: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "absolute": ([_file("/etc/bg-owned")], "absolute path"),
    "dotdot": ([_file("bin/../../escape")], "contains '..'"),
    # A link may point outside the release (a venv's bin/python3 -> /usr/bin/python3);
    # what is refused is writing through one, however it is dressed up.
    "symlink-out": ([_link("bin", "../../.."), _file("bin/x")], "outside the release"),
    "symlink-abs": ([_link("etc", "/etc"), _file("etc/cron.d/bg-owned")],
                    "outside the release"),
    "through-link": ([_link("d", "sub"), _file("d/x")], "through a link"),
    "link-under-link": ([_link("d", "/tmp"), _link("d/x", "/etc/passwd")], "through a link"),
    "link-chain": ([_link("a", "b"), _link("b", "/etc"), _file("a/passwd")], "through a link"),
    "dir-over-link": ([_link("etc", "/etc"), _dir("etc")], "replaces a link"),
    "file-over-link": ([_link("x", "/etc/passwd"), _file("x")], "replaces a link"),
    "hardlink-via-link": ([_link("l", "/etc"), _link("h", "l/passwd", tarfile.LNKTYPE)],
                          "through a link"),
    "hardlink-to-link": ([_link("l", "/etc/passwd"), _link("h", "l", tarfile.LNKTYPE)],
                         "through a link"),
    "sha-file-link": ([_link(".bg-sha256", "/etc/passwd")], "bg's own"),
    "root-link": ([_link("./", "/etc")], "the release itself a link"),
    "hardlink-out": ([_link("h", "../../etc/passwd", tarfile.LNKTYPE)], "hard link"),
    "hardlink-abs": ([_link("h", "/etc/shadow", tarfile.LNKTYPE)], "hard link"),
    "chardev": ([_special("null", tarfile.CHRTYPE)], "device"),
    "blockdev": ([_special("sda", tarfile.BLKTYPE)], "device"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "fifo"),
    "world-writable": ([_file("bin/server", b"#!/bin/sh\n", 0o777)], "world-writable"),
    "setuid": ([_file("bin/server", b"#!/bin/sh\n", 0o4755)], "setuid"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_members_refused(tmp_path: Path, case: str) -> None:
    members, words = HOSTILE_TARS[case]
    path = _tar(tmp_path / "hello-9.tar.gz", [_file("release.json", b"{}"), *members])
    with pytest.raises(ArtifactError, match=words):
        artifact.check_members(path)


@pytest.mark.unit
def test_bomb_refused_without_extracting(tmp_path: Path) -> None:
    # 16 MiB of zeros gzip to ~16 KiB; the limit is 4 MiB
    path = tmp_path / "hello-9.tar.gz"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 16 << 20
        tar.addfile(info, io.BytesIO(bytes(16 << 20)))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ArtifactError, match="max_release_size"):
        artifact.check_members(path, max_size=4 << 20)
    assert artifact.check_members(path, max_size=32 << 20) == 1


@pytest.mark.unit
def test_bomb_with_lying_headers_refused(tmp_path: Path) -> None:
    # the size in each header is small but the gzip stream holds far more (trailing junk
    # after the tar's end blocks): the counted stream catches it
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        info, data = _file("a", b"x")
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "hello-9.tar.gz"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(inner.getvalue())
        for _ in range(12):
            gz.write(bytes(1 << 20))
    with pytest.raises(ArtifactError, match="max_release_size"):
        artifact.check_members(path, max_size=2 << 20)


@pytest.mark.unit
@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "gzip-not-tar", "empty",
                                    "bad-crc"])
def test_broken_archives_refused(tmp_path: Path, damage: str) -> None:
    good = build_sample(tmp_path / "good", "1.0.0").read_bytes()
    path = tmp_path / "hello-9.tar.gz"
    if damage == "truncated":
        path.write_bytes(good[: len(good) * 2 // 3])
    elif damage == "not-gzip":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a tarball" * 50)
    elif damage == "gzip-not-tar":
        path.write_bytes(gzip.compress(b"hello, not a tar archive\n" * 100))
    elif damage == "empty":
        path.write_bytes(gzip.compress(bytes(10240)))
    else:
        data = bytearray(good)
        data[-8] ^= 0xFF  # the gzip trailer's CRC32
        path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        artifact.check_members(path)


@pytest.mark.parametrize("case", ["absolute", "symlink-out", "hardlink-out", "chardev",
                                  "world-writable", "symlink-abs", "dir-over-link",
                                  "sha-file-link", "hardlink-via-link"])
def test_hostile_tarball_changes_no_host(live: Workspace, tmp_path: Path, case: str) -> None:
    members, words = HOSTILE_TARS[case]
    path = _tar(tmp_path / "hello-6.6.6.tar.gz", [_file("release.json", b"{}"), *members])
    refused(live, "deploy", str(path), code=ExitCode.USAGE, words=words)


def test_bomb_over_configured_limit_changes_no_host(live: Workspace, tmp_path: Path) -> None:
    text = live.config.read_text()
    live.config.write_text(text.replace("keep_releases = 3",
                                        'keep_releases = 3\nmax_release_size = "2M"'))
    path = tmp_path / "hello-6.6.6.tar.gz"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 16 << 20
        tar.addfile(info, io.BytesIO(bytes(16 << 20)))
    refused(live, "deploy", str(path), code=ExitCode.USAGE, words="max_release_size")


def test_truncated_tarball_changes_no_host(live: Workspace, tmp_path: Path) -> None:
    good = build_sample(tmp_path / "good", "2.0.0").read_bytes()
    path = tmp_path / "hello-2.0.0.tar.gz"
    path.write_bytes(good[: len(good) // 2])
    refused(live, "deploy", str(path), code=ExitCode.USAGE, words="not a readable .tar.gz")


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("version", [
    f"1.0;touch {CANARY}", f"$(touch {CANARY})", f"`touch {CANARY}`", "1.0\nserver{}",
    '1.0";}', "..", "-rf", "1 0", "a" * 65,
])
def test_hostile_version_changes_no_host(live: Workspace, tmp_path: Path, version: str
                                         ) -> None:
    art = build_sample(tmp_path / "arts", "2.0.0")
    refused(live, "deploy", str(art), "--version", version, code=ExitCode.USAGE,
            words="invalid version")


def test_hostile_version_in_file_name_changes_no_host(live: Workspace, tmp_path: Path
                                                      ) -> None:
    art = build_sample(tmp_path / "arts", "2.0.0")
    hostile = art.with_name(f"hello-2.0;touch {CANARY.replace('/', '_')}.tar.gz")
    art.rename(hostile)
    refused(live, "deploy", str(hostile), code=ExitCode.USAGE, words="invalid version")


# ----------------------------------------------------------------------------- state.json

HOSTILE_STATES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"{\"live\": \"blue\", \"vers", "not a bg state file"),
    "binary": (b"\xff\xfe\x00garbage", "not a bg state file"),
    "list": (b"[1, 2, 3]", "not a JSON object"),
    "live-purple": (json.dumps({"live": "purple", "versions": {"blue": "1.0.0"}}).encode(),
                    "'live'"),
    "live-inject": (json.dumps({"live": f"blue;touch {CANARY}",
                                "versions": {"blue": "1.0.0"}}).encode(), "'live'"),
    "version-inject": (json.dumps({"live": "blue", "versions": {
        "blue": f"1.0.0$(touch {CANARY})", "green": None}}).encode(), "'versions.blue'"),
    "version-newline": (json.dumps({"live": "blue", "versions": {
        "blue": "1.0.0", "green": "2.0\nrm -rf /"}}).encode(), "'versions.green'"),
    "version-number": (json.dumps({"live": "blue", "versions": {"blue": 1}}).encode(),
                       "'versions.blue'"),
    "previous-inject": (json.dumps({"live": "blue", "versions": {"blue": "1.0.0"},
                                    "previous": f"`touch {CANARY}`"}).encode(), "'previous'"),
    "slot-key": (json.dumps({"live": "blue", "versions": {"blue": "1.0.0",
                                                          "../x": "1"}}).encode(),
                 "'versions'"),
    "versions-string": (json.dumps({"live": "blue", "versions": "blue"}).encode(),
                        "'versions'"),
    "unknown-key": (json.dumps({"live": "blue", "versions": {"blue": "1.0.0"},
                                "hook": "rm -rf /"}).encode(), "unknown key 'hook'"),
    "updated-inject": (json.dumps({"live": "blue", "versions": {"blue": "1.0.0"},
                                   "updated_at": "$(id)"}).encode(), "'updated_at'"),
    "format-9": (json.dumps({"format": 9, "live": None, "versions": {}}).encode(),
                 "format 9"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(HOSTILE_STATES))
def test_hostile_state_values_rejected(case: str) -> None:
    raw, words = HOSTILE_STATES[case]
    with pytest.raises(StateError) as err:
        HostState.from_json(raw, where="web1:/srv/hello/bg/state.json")
    assert "web1:/srv/hello/bg/state.json" in err.value.message
    assert words in err.value.message, err.value.message


@pytest.mark.unit
def test_good_state_still_reads() -> None:
    state = HostState(live="green", versions={"blue": "1.0.0", "green": "2.0.0+b7"},
                      previous="1.0.0", updated_at="2026-11-22T03:48:54.123+00:00")
    assert HostState.from_json(state.to_json(), where="x") == state
    assert HostState.from_json(b'{"live": null, "versions": {}}', where="x") == HostState()


@pytest.mark.parametrize("case", ["not-json", "version-inject", "live-inject",
                                  "previous-inject"])
def test_hostile_state_file_changes_no_host(live: Workspace, tmp_path: Path, case: str
                                            ) -> None:
    raw, words = HOSTILE_STATES[case]
    state = live.root / "bg" / "state.json"
    good = state.read_bytes()
    state.write_bytes(raw)
    try:
        art = build_sample(tmp_path / "arts", "2.0.0")
        out = refused(live, "deploy", str(art), code=ExitCode.STATE, words=words)
        assert str(state) in out
        out = refused(live, "rollback", code=ExitCode.STATE, words=words)
        refused(live, "status", code=ExitCode.STATE, words=words)
    finally:
        state.write_bytes(good)
    assert live.bg("status").returncode == 0
