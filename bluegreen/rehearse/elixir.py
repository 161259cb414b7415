"""The Elixir sample: a real `mix release` of a tiny OTP app, built here, offline.

The mix project (``hello``: OTP's ``:inets`` httpd on 127.0.0.1:$PORT, ``/health``, no Hex
dependency) is the one the tests use, tests/fixtures/elixir_app (``bluegreen/_data/elixir_app``
in an installed package). Each build copies it into a fresh directory (mix does not track
the environment knobs, so a shared ``_build`` would mix variants) and the tarball is cached
under ``$XDG_CACHE_HOME/bluegreen/elixir-sample`` by sources, knobs and toolchain.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bluegreen.rehearse.envs import RehearsalError
from bluegreen.resources import resource_dir

APP = "hello"
BUILD_TIMEOUT = 600.0
_SKIP = ("_build", "deps", ".elixir_ls")


def project_dir() -> Path:
    installed = resource_dir("nginx").parent / "elixir_app"  # bluegreen/_data/elixir_app
    for candidate in (installed, resource_dir("nginx").parent / "tests/fixtures/elixir_app"):
        if (candidate / "mix.exs").is_file():
            return candidate
    raise RehearsalError("the Elixir sample's mix project is missing from this install")


def available() -> str | None:
    """Why the Elixir sample cannot be built here, or None."""
    missing = [tool for tool in ("mix", "elixir") if shutil.which(tool) is None]
    return f"--app elixir needs {' and '.join(missing)} (apt-get install elixir)" if missing \
        else None


def _sources(project: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(project):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.endswith((".tar.gz", ".md", ".dump"))]
    return files


def _key(project: Path, knobs: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for tool in ("mix", "elixir", "erl"):
        found = shutil.which(tool)
        real = Path(found).resolve() if found else None
        digest.update(f"{tool}:{real}:{real.stat().st_mtime_ns if real else 0}\n".encode())
    for name in sorted(knobs):
        digest.update(f"{name}={knobs[name]}\n".encode())
    for path in _sources(project):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{knobs['HELLO_VERSION']}-{digest.hexdigest()[:20]}"


def build_release(version: str, out_dir: Path, *, health_status: int = 200) -> Path:
    """``out_dir/hello-<version>.tar.gz``, built with `mix release` (or from the cache)."""
    if reason := available():
        raise RehearsalError(reason)
    project = project_dir()
    knobs = {"HELLO_VERSION": version, "HELLO_HEALTH_STATUS": str(health_status),
             "HELLO_BOOT_DELAY_MS": "0", "HELLO_BUILD_LABEL": ""}
    name = f"{APP}-{version}.tar.gz"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache / "bluegreen" / "elixir-sample" / _key(project, knobs) / name
    if not cached.is_file():
        _build(project, knobs, cached)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, out_dir / name)
    return out_dir / name


def _build(project: Path, knobs: dict[str, str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bg-mix-") as tmp:
        work = Path(tmp)
        src = work / "src"
        shutil.copytree(project, src, ignore=shutil.ignore_patterns(*_SKIP, "*.tar.gz"))
        home = work / "home"
        home.mkdir()
        # Nothing of a surrounding release or mix project leaks in; no network (no Hex).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RELEASE_", "MIX_", "HEX_", "HELLO_", "ERL_", "ELIXIR_"))}
        env.update({"HOME": str(home), "MIX_HOME": str(home / ".mix"),
                    "HEX_HOME": str(home / ".hex"), "MIX_ENV": "prod", "HEX_OFFLINE": "1",
                    "MIX_NO_DEPS": "1", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **knobs})
        try:
            proc = subprocess.run(["mix", "release", "--overwrite", "--quiet"], cwd=src, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RehearsalError(f"mix release took over {BUILD_TIMEOUT:.0f}s") from exc
        built = src / "_build" / "prod" / dest.name
        if proc.returncode != 0 or not built.is_file():
            raise RehearsalError(f"mix release failed (exit {proc.returncode})",
                                 detail=(proc.stdout + proc.stderr)[-3000:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dest = dest.with_name(dest.name + f".{os.getpid()}.tmp")
        shutil.copyfile(built, tmp_dest)
        os.replace(tmp_dest, dest)
