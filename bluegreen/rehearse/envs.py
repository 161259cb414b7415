"""Where a rehearsal runs: this machine, a sandbox of simulated hosts, or a Vagrant VM.

Each environment starts what it needs and says how bg reaches it (app root, nginx commands,
a target) and where the load goes (nginx endpoints); ``stop`` undoes all it started.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import BgError
from bluegreen.nginxconf import nginx_ident

LOW_PORT, HIGH_PORT = 10000, 20000  # below the ephemeral range (32768+), see DESIGN.md


class RehearsalError(BgError):
    """The rehearsal could not run (an environment that cannot start, bad input)."""


@dataclass
class Prepared:
    """How bg and the load reach a started environment."""

    name: str  # vagrant, sandbox or local
    hosts: int
    root: str  # the app's root on every host
    nginx: dict[str, str]  # the [nginx] keys bg needs (upstream_file, commands, probe, pid)
    endpoints: list[tuple[str, int]]  # nginx, as the load clients reach it
    slots: dict[str, int] | None = None  # ports to use instead of the config's
    target: dict[str, Any] | None = None  # [targets.rehearsal]; None: this machine
    first_contact: bool = False  # record the hosts' keys on the first bg command
    home: Path | None = None  # HOME for bg (a private ~/.ssh), None: the caller's
    # Lower bounds for [health] keys on a slow environment (an emulated VM), e.g. timeout.
    health_floor: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    access_log: str = ""  # [verify] access_log: where the site logs ("": under root)


def free_port(taken: set[int], low: int = LOW_PORT, high: int = HIGH_PORT) -> int:
    """A free TCP port on 127.0.0.1 in [low, high), not in ``taken``; added to it."""
    for _ in range(500):
        port = random.randint(low, high - 1)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RehearsalError(f"no free TCP port on 127.0.0.1 in [{low}, {high})")


class Environment:
    name = ""

    def start(self, app: str, workdir: Path) -> Prepared:
        raise NotImplementedError

    def stop(self, *, keep: bool) -> None:
        raise NotImplementedError


class LocalEnv(Environment):
    """This machine: a private nginx on 127.0.0.1 and two free ports; no root needed."""

    name = "local"

    def __init__(self, listen_port: int | None = None) -> None:
        self.listen_port = listen_port
        self._nginx: Any = None

    def start(self, app: str, workdir: Path) -> Prepared:
        from bluegreen.accesslog import format_directive
        from bluegreen.sandbox.nginx import NGINX_BIN, NginxServer

        if not os.access(NGINX_BIN, os.X_OK):
            raise RehearsalError(f"the local rehearsal needs nginx ({NGINX_BIN})",
                                 hint="apt-get install nginx-light")
        taken: set[int] = set()
        listen = self.listen_port or free_port(taken)
        taken.add(listen)
        blue, green = free_port(taken), free_port(taken)
        nginx = NginxServer(prefix=workdir / "nginx", listen=f"127.0.0.1:{listen}", app=app)
        nginx.render()
        # nginx refuses a site whose upstream is undefined; `bg setup` rewrites this file.
        Path(nginx.upstream_file).write_text(
            f"upstream {nginx_ident(app)}_live {{ server 127.0.0.1:{blue}; }}\n"
            f'map "" ${nginx_ident(app)}_slot {{ default "none"; }}\n'
            + format_directive(app))
        try:
            nginx.start()
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            raise RehearsalError(f"nginx did not start on 127.0.0.1:{listen}",
                                 detail=str(getattr(exc, "stderr", "") or exc)) from exc
        self._nginx = nginx
        return Prepared(
            name=self.name, hosts=1, root=str(workdir / "srv" / app),
            nginx={"upstream_file": nginx.upstream_file, "test_command": nginx.test_command,
                   "reload_command": nginx.reload_command, "pid_file": nginx.pid_file,
                   "probe_url": f"http://127.0.0.1:{listen}/"},
            endpoints=[("127.0.0.1", listen)], slots={"blue": blue, "green": green},
            access_log=nginx.access_log,
            notes=[f"nginx on 127.0.0.1:{listen}, slots :{blue} and :{green}"],
        )

    def stop(self, *, keep: bool) -> None:
        if self._nginx is not None and not keep:
            self._nginx.stop()


class SandboxEnv(Environment):
    """N simulated hosts (netns + sshd + nginx each) on this machine; needs root."""

    name = "sandbox"

    def __init__(self, count: int) -> None:
        self.count = count
        self._sandbox: Any = None

    def start(self, app: str, workdir: Path) -> Prepared:
        from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason

        if reason := require_root_or_skip_reason():
            raise RehearsalError(f"the sandbox rehearsal cannot run: {reason}",
                                 hint="use --local (no root needed) or --vagrant")
        try:
            sandbox = Sandbox(workdir / "sandbox", self.count, app=app)
        except ValueError as exc:
            raise RehearsalError(f"the sandbox cannot host this app: {exc}") from exc
        self._sandbox = sandbox
        sandbox.start()
        nginx = sandbox.hosts[0].nginx
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        return Prepared(
            name=self.name, hosts=self.count, root=f"/srv/{app}",
            nginx={"upstream_file": nginx.upstream_file, "test_command": nginx.test_command,
                   "reload_command": nginx.reload_command, "pid_file": nginx.pid_file,
                   "probe_url": "http://127.0.0.1:80/"},
            endpoints=[(h.address, 80) for h in sandbox.hosts],
            access_log=nginx.access_log,
            target={"hosts": [h.spec for h in sandbox.hosts], "parallel": 10,
                    "identity_file": str(sandbox.identity_file),
                    "known_hosts": str(sandbox.known_hosts)},
            home=home,
            notes=[f"{self.count} hosts: " + ", ".join(h.spec for h in sandbox.hosts)
                   + f" (started in {sandbox.startup_seconds or 0:.1f}s)"],
        )

    def stop(self, *, keep: bool) -> None:
        if self._sandbox is None:
            return
        if keep:
            self._sandbox.detach()
            print(f"kept: python -m bluegreen.sandbox.hosts down {self._sandbox.workdir}")
        else:
            self._sandbox.teardown()
