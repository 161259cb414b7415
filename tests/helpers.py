"""Shared test plumbing: bg as a subprocess, the skip-or-fail rule, free ports, a real nginx +
bg workspace on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluegreen.rehearse.envs import free_port as envs_free_port
from bluegreen.sandbox.config import (
    DEFAULT_APP,
    DEFAULT_HEALTH,
    Fragment,
    merge,
    parse_fragment,
    write_config,
)
from bluegreen.sandbox.nginx import NginxServer

REQUIRE_ROOT = os.environ.get("BG_REQUIRE_ROOT_TESTS") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip when ``condition`` fails, or fail when CI demands every test run
    (``BG_REQUIRE_ROOT_TESTS=1``): tests that need root, tools or Elixir never vanish there."""
    if condition:
        return
    if REQUIRE_ROOT:
        pytest.fail(f"required test cannot run: {reason} (BG_REQUIRE_ROOT_TESTS=1)")
    pytest.skip(reason)


def bg_argv(*args: str, config: Path | None = None) -> list[str]:
    """bg's command line as a subprocess: this interpreter, so this checkout's package."""
    return [sys.executable, "-m", "bluegreen", *(("-c", str(config)) if config else ()), *args]


def run_bg(*args: str, config: Path | None = None, cwd: Path | None = None,
           env: Mapping[str, str] | None = None, home: Path | None = None,
           timeout: float = 180, check: bool = False) -> subprocess.CompletedProcess[str]:
    """bg run to its end, its output captured. ``home`` replaces $HOME and drops the SSH
    agent, so SSH never reads or writes the operator's real ~/.ssh. ``check``: a non-zero
    exit is an AssertionError showing both streams."""
    environ = dict(os.environ if env is None else env)
    if home is not None:
        environ["HOME"] = str(home)
        environ.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run(bg_argv(*args, config=config), capture_output=True, text=True,
                          cwd=cwd, env=environ, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"bg {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


_GIVEN: set[int] = set()


def free_port(low: int = 20000, high: int = 30000) -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range, never one this process handed
    out before: a test takes several ports before anything listens on them, so "free" alone
    gave one workspace the same port for nginx and a slot (CI, test_canary)."""
    return envs_free_port(_GIVEN, low, high + 1)


@dataclass
class Workspace:
    dir: Path
    config: Path
    nginx: NginxServer
    root: Path
    ports: dict[str, int]
    listen_port: int

    def bg(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_bg(*args, config=self.config, cwd=self.dir, timeout=timeout, check=check)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.bg("--json", "status", check=False).stdout)["result"]
        return data

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}/"

    def get(self) -> httpx.Response:
        return httpx.get(self.url, headers={"Connection": "close"}, timeout=5)

    def upstream(self) -> bytes:
        return Path(self.nginx.upstream_file).read_bytes()


def make_workspace(tmp: Path, *, extra: Fragment = "", app_section: Fragment = "",
                   health: Fragment = "") -> Workspace:
    """bg's config and a private nginx in ``tmp``. ``app_section`` and ``health`` replace the
    default keys of ``[app]`` (beyond name, root, ...) and ``[health]``; ``extra`` adds or
    overrides tables. Each may be a mapping or a TOML fragment; the file is written by
    ``bluegreen.tomlwriter``, so paths are escaped."""
    listen = free_port()
    blue, green = free_port(), free_port()
    nginx = NginxServer(prefix=tmp / "nginx", listen=f"127.0.0.1:{listen}", app="hello")
    nginx.render()
    root = tmp / "srv" / "hello"
    document: dict[str, Any] = {
        "app": {
            "name": "hello",
            "root": root,
            "keep_releases": 3,
            "stop_timeout": 10,
            **parse_fragment(app_section or DEFAULT_APP, "app_section"),
        },
        "slots": {"blue": blue, "green": green},
        "health": parse_fragment(health or DEFAULT_HEALTH, "health"),
        "nginx": {
            "upstream_file": nginx.upstream_file,
            "test_command": nginx.test_command,
            "reload_command": nginx.reload_command,
            "probe_url": f"http://127.0.0.1:{listen}/",
            "pid_file": nginx.pid_file,
        },
        "switch": {"drain_timeout": 10},
        "verify": {"access_log": nginx.access_log},
    }
    config = write_config(
        tmp / "bluegreen.toml", merge(document, parse_fragment(extra, "extra"))
    )
    return Workspace(tmp, config, nginx, root, {"blue": blue, "green": green}, listen)


@contextlib.contextmanager
def serving(ws: Workspace) -> Iterator[Workspace]:
    """``ws`` set up by bg, its nginx started; every slot and nginx stopped afterwards."""
    ws.bg("setup")
    ws.nginx.start()
    try:
        yield ws
    finally:
        stop_workspace(ws)


def stop_workspace(ws: Workspace) -> None:
    """Stop every slot bg started in the workspace, then its nginx."""
    for pidfile in (ws.root / "run").glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pidfile.read_text().strip()), signal.SIGKILL)
    ws.nginx.stop()
