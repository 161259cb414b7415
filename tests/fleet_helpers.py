"""Shared plumbing of the fleet and load-balancer tests: bg over SSH, ``--hosts`` in-process,
probes through nginx, and load (new connections only) with the project's load client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bluegreen import config as configuration
from bluegreen.loadclient import Load, ok, outcome_name
from bluegreen.ops import deploy as ops
from bluegreen.ops.core import Context, OperationResult, open_hosts
from bluegreen.ops.deploy import DryRun
from bluegreen.sandbox.hosts import SandboxHost


def bg(config: Path, *args: str, check: bool = True, timeout: float = 180,
       extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(extra_env or {})}
    env["HOME"] = str(config.parent)  # never the operator's real ~/.ssh
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run([sys.executable, "-m", "bluegreen", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"bg {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def bg_json(config: Path, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bg(config, "--json", *args).stdout)
    return data


def status(config: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bg(config, "--json", "status", check=False).stdout)
    return data


def on_hosts(config: Path, only: Sequence[str], operation: str, artifact: Path | None = None
             ) -> OperationResult:
    """``bg <operation> --hosts ...``, called in-process: the same ops API the CLI's --hosts
    flag calls (``open_hosts(only=...)``)."""
    cfg = configuration.load(config)
    target = cfg.target(None)
    ctx = Context(config=cfg, target=target, hosts=open_hosts(cfg, target, only=only))
    try:
        if operation == "deploy":
            assert artifact is not None
            result = ops.deploy(ctx, artifact)
        else:
            result = ops.rollback(ctx)
    finally:
        ctx.close()
    assert not isinstance(result, DryRun)
    return result


def get(address: str, port: int = 80, path: str = "/") -> tuple[int, str, dict[str, str]]:
    """One request on a new connection (no proxy settings apply): status, body, headers."""
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    status_line, *header_lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), body.strip(), headers


def through(host: SandboxHost) -> str:
    """What the app answers through ``host``'s nginx (asserting HTTP 200)."""
    code, body, _ = get(host.address)
    assert code == 200, body
    return body


def new_connections(endpoints: Sequence[str], clients: int, limit: float) -> Load:
    """Clients sending GETs on a new connection each, spread over ``endpoints`` (port 80),
    paced and bounded in time."""
    return Load([(a, 80) for a in endpoints], clients={"close": clients}, rate=50.0,
                limit=limit)


def failures(load: Load) -> list[str]:
    return [outcome_name(r[2]) for rows in load.records.values() for r in rows if not ok(r[2])]
