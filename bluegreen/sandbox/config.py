"""A bluegreen.toml for the apps on sandbox hosts (used by the tests, bench and rehearsal).

The document is built as data and written with :func:`bluegreen.tomlwriter.dumps`, so every
path is escaped. Callers may still pass raw TOML fragments (``app_section``, ``health``,
``extra``); they are parsed with ``tomllib`` and merged into the data, never pasted as text.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bluegreen.sandbox.host import SandboxHost
from bluegreen.sandbox.hosts import Sandbox
from bluegreen.tomlwriter import dumps

DEFAULT_APP: dict[str, Any] = {"runner": "command", "command": "bin/server"}
DEFAULT_HEALTH: dict[str, Any] = {"interval": 0.1, "timeout": 1.0, "deadline": 15.0}

Fragment = str | Mapping[str, Any]


def parse_fragment(fragment: Fragment, what: str) -> dict[str, Any]:
    """``fragment`` as data: a mapping as is, a string parsed as TOML."""
    if not isinstance(fragment, str):
        return dict(fragment)
    try:
        return tomllib.loads(fragment)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} is not valid TOML: {exc}\n{fragment}") from exc


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, tables recursively (``extra`` wins on conflicts)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as TOML (read back once: bg must be able to load what is written)."""
    text = dumps(document)
    tomllib.loads(text)
    path.write_text(text)
    return path


def sandbox_config(
    sandbox: Sandbox,
    path: Path,
    *,
    target: str = "sandbox",
    app_section: Fragment = DEFAULT_APP,
    health: Fragment = DEFAULT_HEALTH,
    extra: Fragment = "",
    parallel: int = 10,
    known_hosts: Path | None = None,
    hosts: Sequence[SandboxHost] | None = None,
    lbs: Sequence[SandboxHost] = (),
) -> Path:
    """Write a config whose target ``target`` lists every sandbox host.

    ``app_section`` and ``health`` are the keys of ``[app]`` (beyond name, root, keep_releases,
    stop_timeout) and ``[health]``; ``extra`` adds or overrides whole tables.

    A load-balancer tier: ``lbs`` become the target's ``lbs`` and the app hosts are ``hosts``
    (default: every other host); each app host with a shared address (``shared_network=True``)
    is mapped to it in ``[targets.<target>.addresses]``, so the LBs proxy over the bridge.
    """
    nginx = sandbox.hosts[0].nginx
    apps = list(hosts) if hosts is not None else [h for h in sandbox.hosts if h not in lbs]
    document: dict[str, Any] = {
        "app": {
            "name": sandbox.app,
            "root": f"/srv/{sandbox.app}",
            "keep_releases": 3,
            "stop_timeout": 10,
            **parse_fragment(app_section, "app_section"),
        },
        "health": parse_fragment(health, "health"),
        "nginx": {
            "upstream_file": nginx.upstream_file,
            "test_command": nginx.test_command,
            "reload_command": nginx.reload_command,
            "probe_url": "http://127.0.0.1:80/",
            "pid_file": nginx.pid_file,
        },
        "switch": {"drain_timeout": 10},
        "verify": {"access_log": nginx.access_log},
        "targets": {
            target: _target_table(sandbox, apps, lbs, parallel=parallel, known_hosts=known_hosts)
        },
    }
    return write_config(path, merge(document, parse_fragment(extra, "extra")))


def _target_table(sandbox: Sandbox, apps: Sequence[SandboxHost], lbs: Sequence[SandboxHost], *,
                 parallel: int, known_hosts: Path | None) -> dict[str, Any]:
    """A ``[targets.NAME]`` table for the sandbox's ``apps``, behind ``lbs`` if any: each app
    host with a shared address is reached by the LBs over the bridge."""
    tier: dict[str, Any] = {}
    if lbs:
        tier["lbs"] = [h.spec for h in lbs]
        tier["addresses"] = {h.spec: h.shared_address for h in apps if h.shared_address}
    return {
        "hosts": [h.spec for h in apps],
        "parallel": parallel,
        "identity_file": sandbox.identity_file,
        "known_hosts": known_hosts or sandbox.known_hosts,
        **tier,
    }
