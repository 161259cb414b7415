"""A bluegreen.toml for the apps on sandbox hosts (used by the tests, bench and rehearsal)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bluegreen.sandbox.hosts import Sandbox


def sandbox_config(
    sandbox: Sandbox,
    path: Path,
    *,
    target: str = "sandbox",
    app_section: str = 'runner = "command"\ncommand = "bin/server"',
    health: str = "interval = 0.1\ntimeout = 1.0\ndeadline = 15.0",
    extra: str = "",
    parallel: int = 10,
    known_hosts: Path | None = None,
) -> Path:
    """Write a config whose target ``target`` lists every sandbox host."""
    nginx = sandbox.hosts[0].nginx
    hosts = ", ".join(f'"{h.spec}"' for h in sandbox.hosts)
    path.write_text(
        textwrap.dedent(f"""\
            [app]
            name = "{sandbox.app}"
            root = "/srv/{sandbox.app}"
            keep_releases = 3
            stop_timeout = 10
            """)
        + app_section
        + "\n\n[health]\n"
        + health
        + textwrap.dedent(f"""

            [nginx]
            upstream_file = "{nginx.upstream_file}"
            test_command = "{nginx.test_command}"
            reload_command = "{nginx.reload_command}"
            probe_url = "http://127.0.0.1:80/"
            pid_file = "{nginx.pid_file}"

            [switch]
            drain_timeout = 10

            [targets.{target}]
            hosts = [{hosts}]
            parallel = {parallel}
            identity_file = "{sandbox.identity_file}"
            known_hosts = "{known_hosts or sandbox.known_hosts}"
            """)
        + extra
    )
    return path
