"""Shared plumbing of the fleet and load-balancer tests: bg over SSH, ``--hosts`` on the CLI,
probes through nginx, and load (new connections only) with the project's load client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bluegreen.loadclient import Load, ok, outcome_name
from bluegreen.sandbox.hosts import SandboxHost
from tests.helpers import run_bg


def bg(config: Path, *args: str, check: bool = True, timeout: float = 180,
       extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """bg over SSH with the config's folder as $HOME (never the operator's real ~/.ssh)."""
    return run_bg(*args, config=config, env={**os.environ, **(extra_env or {})},
                  home=config.parent, timeout=timeout, check=check)


def bg_json(config: Path, *args: str) -> dict[str, Any]:
    """The ``result`` of bg's --json envelope."""
    data: dict[str, Any] = json.loads(bg(config, "--json", *args).stdout)["result"]
    return data


def status(config: Path) -> dict[str, Any]:
    """``bg status``'s result, problems or not (the envelope carries it either way)."""
    data: dict[str, Any] = json.loads(bg(config, "--json", "status", check=False).stdout)
    result: dict[str, Any] = data["result"]
    return result


def on_hosts(config: Path, only: Sequence[str], operation: str, artifact: Path | None = None
             ) -> dict[str, Any]:
    """``bg <operation> --hosts A,B [ARTIFACT]`` through the CLI; its JSON result."""
    args = [operation, "--hosts", ",".join(only)]
    if artifact is not None:
        args.append(str(artifact))
    return bg_json(config, *args)


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
