"""Build real Elixir release tarballs of the ``hello`` test app, offline and cached.

The mix project lives in ``tests/fixtures/elixir_app`` (see its NOTES.md). Every build
copies it into a fresh temporary directory, so variants never share a ``_build`` and two
processes can build at once; finished tarballs land in a cache keyed by the fixture
sources, the knobs and the toolchain, so the second call with the same arguments is a copy.

Cache: ``$BG_TEST_CACHE`` or ``~/.cache/bluegreen-tests``, under ``elixir-releases/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "elixir_app"
APP = "hello"

# Bump when the build procedure itself changes, to invalidate old cache entries.
_RECIPE = "1"
# Mix needs a SemVer version; it also ends up in the tarball's file name.
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_LABEL = re.compile(r"^[0-9A-Za-z._-]*$")
_SKIP_DIRS = frozenset({"_build", "deps", ".elixir_ls"})
_SKIP_SUFFIXES = (".tar.gz", ".md", ".dump")
_BUILD_TIMEOUT = 600.0


class ReleaseBuildError(RuntimeError):
    """``mix release`` failed; the message carries its output."""


def elixir_available() -> bool:
    """True when ``mix`` and ``elixir`` are on PATH (a release can be built here)."""
    return shutil.which("mix") is not None and shutil.which("elixir") is not None


def extract(tarball: Path, dest: Path) -> None:
    """Unpack a release tarball into ``dest``, refusing members that would land outside it.

    ``extractall(filter=...)`` needs Python >= 3.11.4 (Debian 12 has 3.11.2) and the project
    supports 3.11, so without ``tarfile.data_filter`` the same checks are done here.
    """
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="tar")
            return
        root = dest.resolve()
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if not target.is_relative_to(root) or member.isdev():
                raise ValueError(f"{tarball}: refusing to extract {member.name!r}")
            if member.islnk() or member.issym():
                link = (target.parent / member.linkname) if member.issym() else (
                    root / member.linkname)
                if os.path.isabs(member.linkname) or not link.resolve().is_relative_to(root):
                    raise ValueError(f"{tarball}: link {member.name!r} points outside")
        tar.extractall(dest)  # every member was checked above


def cache_root() -> Path:
    """Where built tarballs are kept between runs."""
    base = os.environ.get("BG_TEST_CACHE") or str(Path.home() / ".cache" / "bluegreen-tests")
    return Path(base) / "elixir-releases"


def build_release(
    version: str,
    *,
    out_dir: Path,
    health_status: int = 200,
    boot_delay_ms: int = 0,
    name_suffix: str = "",
) -> Path:
    """Build (or take from the cache) ``hello-<version>.tar.gz`` and copy it into ``out_dir``.

    ``health_status`` is what ``GET /health`` answers (500 gives the "bad" variant),
    ``boot_delay_ms`` how long the app sleeps before its HTTP server starts (the "slow"
    variant). ``name_suffix`` is a free label (letters, digits, ``._-``) compiled into the
    build and shown in ``GET /`` as ``build=<label>``: it tells apart two builds of the same
    version, and it keys the cache. The returned file is always named exactly
    ``hello-<version>.tar.gz`` so a deploy tool can read the version from the name; give
    variants of one version different ``out_dir``\\ s.
    """
    if not _SEMVER.fullmatch(version):
        raise ValueError(f"version must be SemVer like 1.2.3, got {version!r}")
    if not 100 <= health_status <= 599:
        raise ValueError(f"health_status must be an HTTP status code, got {health_status}")
    if boot_delay_ms < 0:
        raise ValueError(f"boot_delay_ms must be >= 0, got {boot_delay_ms}")
    if not _LABEL.fullmatch(name_suffix):
        raise ValueError(f"name_suffix may hold only letters, digits and ._- : {name_suffix!r}")

    knobs = {
        "HELLO_VERSION": version,
        "HELLO_HEALTH_STATUS": str(health_status),
        "HELLO_BOOT_DELAY_MS": str(boot_delay_ms),
        "HELLO_BUILD_LABEL": name_suffix,
    }
    tar_name = f"{APP}-{version}.tar.gz"
    entry = cache_root() / _cache_key(knobs)
    cached = entry / tar_name
    if not cached.is_file():
        entry.mkdir(parents=True, exist_ok=True)
        with _locked(entry / ".lock"):
            if not cached.is_file():  # another process may have built it meanwhile
                _build_into(cached, knobs)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / tar_name
    _copy_atomic(cached, target)
    return target


def _fixture_files() -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(FIXTURE):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            files.append(Path(dirpath) / name)
    return files


def _toolchain_id() -> str:
    """Cheap fingerprint of the installed Elixir/Erlang (path and mtime, no subprocess)."""
    parts: list[str] = []
    for tool in ("mix", "elixir", "erl"):
        found = shutil.which(tool)
        if found is None:
            parts.append(f"{tool}:-")
            continue
        real = Path(found).resolve()
        parts.append(f"{tool}:{real}:{real.stat().st_mtime_ns}")
    return "|".join(parts)


def _cache_key(knobs: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe={_RECIPE}\ntoolchain={_toolchain_id()}\n".encode())
    for name in sorted(knobs):
        digest.update(f"{name}={knobs[name]}\n".encode())
    for path in _fixture_files():
        digest.update(path.relative_to(FIXTURE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{knobs['HELLO_VERSION']}-{digest.hexdigest()[:20]}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build_env(work: Path, knobs: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Nothing from a surrounding release, mix project or knob may leak in.
        if not key.startswith(("RELEASE_", "MIX_", "HEX_", "HELLO_", "ERL_", "ELIXIR_"))
    }
    home = work / "home"
    home.mkdir()
    env.update(
        {
            "HOME": str(home),
            "MIX_HOME": str(home / ".mix"),
            "HEX_HOME": str(home / ".hex"),
            "MIX_ENV": "prod",
            "HEX_OFFLINE": "1",
            "MIX_NO_DEPS": "1",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
    )
    env.update(knobs)
    return env


def _build_into(dest: Path, knobs: dict[str, str]) -> None:
    if not elixir_available():
        raise ReleaseBuildError("mix/elixir not found on PATH: cannot build the hello release")
    with tempfile.TemporaryDirectory(prefix="hello-build-") as tmp:
        work = Path(tmp)
        src = work / "src"
        shutil.copytree(
            FIXTURE,
            src,
            ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.tar.gz", "erl_crash.dump"),
        )
        try:
            proc = subprocess.run(
                ["mix", "release", "--overwrite", "--quiet"],
                cwd=src,
                env=_build_env(work, knobs),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ReleaseBuildError(f"mix release timed out after {_BUILD_TIMEOUT}s") from exc
        built = src / "_build" / "prod" / dest.name
        if proc.returncode != 0 or not built.is_file():
            raise ReleaseBuildError(
                f"mix release failed (exit {proc.returncode}) for {knobs}:\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        _copy_atomic(built, dest)


def _copy_atomic(src: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
