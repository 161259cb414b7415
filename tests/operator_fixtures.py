"""Plumbing for the operator tests (CLI, init, check, logs, JSON): bg as a subprocess and
a local workspace whose nginx site is stock (no X-BG-Slot line, no probe_url)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Workspace, make_workspace, need, run_bg, serving

STOCK_SITE = """\
server {{
    listen {listen};
    location / {{
        proxy_pass http://{app}_live;
    }}
}}
"""


def bg(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_bg(*args, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def envelope(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON document of a --json run, checked against the documented schema."""
    doc: dict[str, Any] = json.loads(proc.stdout)
    problems = envelope_problems(doc)
    assert not problems, f"{problems}\n{proc.stdout}"
    return doc


def envelope_problems(doc: Any) -> list[str]:
    """Why ``doc`` is not a valid envelope (README, "JSON output"); [] when it is."""
    if not isinstance(doc, dict):
        return ["not an object"]
    out = []
    allowed = {"schema", "ok", "command", "result", "error"}
    if set(doc) - allowed:
        out.append(f"unknown keys {sorted(set(doc) - allowed)}")
    if doc.get("schema") != 1:
        out.append("schema must be 1")
    if not isinstance(doc.get("ok"), bool):
        out.append("ok must be a boolean")
    if not isinstance(doc.get("command"), str):
        out.append("command must be a string")
    if doc.get("ok") is True and ("result" not in doc or "error" in doc):
        out.append("ok: true needs result and no error")
    if doc.get("ok") is False:
        err = doc.get("error")
        if not isinstance(err, dict):
            out.append("ok: false needs an error object")
        else:
            for key, kind in (("message", str), ("hint", str), ("exit_code", int),
                              ("detail", str), ("kind", str)):
                if not isinstance(err.get(key), kind):
                    out.append(f"error.{key} must be {kind.__name__}")
            if "phase" in err and not isinstance(err.get("hosts"), dict):
                out.append("error.phase comes with error.hosts")
    return out


def stock_workspace(tmp: Path) -> Workspace:
    """A workspace whose site is a stock nginx proxy and whose config has no probe_url."""
    need(os.path.exists("/usr/sbin/nginx"), "nginx is not installed")
    ws = make_workspace(tmp)
    site = ws.nginx.prefix / "sites" / "hello.conf"
    site.write_text(STOCK_SITE.format(listen=f"127.0.0.1:{ws.listen_port}", app="hello"))
    text = ws.config.read_text()
    ws.config.write_text(re.sub(r"(?m)^probe_url = .*\n", "", text))
    return ws


@pytest.fixture
def stock(tmp_path: Path) -> Iterator[Workspace]:
    ws = stock_workspace(tmp_path)
    with serving(ws):
        yield ws
