"""A real nginx in a private prefix: for `bg rehearse`, the sandbox hosts and the tests."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from bluegreen.nginx import nginx_ident, parse_nginx_version
from bluegreen.resources import resource_dir

NGINX_BIN = "/usr/sbin/nginx"


def installed_version(nginx_bin: str = NGINX_BIN) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return parse_nginx_version(out.stderr + out.stdout)


@dataclass
class NginxServer:
    """nginx serving one bg-managed app.

    ``prefix`` is where the files are written from here; ``inside`` is the same directory
    as the nginx process sees it (different for a sandbox host whose /srv is a bind mount).
    """

    prefix: Path
    listen: str
    app: str
    inside: str | None = None
    workers: int = 2
    nginx_bin: str = NGINX_BIN

    @property
    def access_log(self) -> str:
        """Where the site logs the app's requests for bg (its `[verify] access_log`): in
        nginx's own prefix, so nothing of the app's root exists before `bg setup`."""
        return f"{self.root}/logs/{self.app}-access.log"

    @property
    def root(self) -> str:
        return self.inside or str(self.prefix)

    @property
    def upstream_file(self) -> str:
        return f"{self.root}/conf.d/{self.app}.bluegreen.conf"

    @property
    def pid_file(self) -> str:
        return f"{self.root}/run/nginx.pid"

    def argv(self, *extra: str) -> list[str]:
        return [self.nginx_bin, "-p", self.root, "-c", f"{self.root}/conf/nginx.conf", *extra]

    @property
    def test_command(self) -> str:
        return shlex.join(self.argv("-q", "-t"))

    @property
    def reload_command(self) -> str:
        return shlex.join(self.argv("-s", "reload"))

    @property
    def start_command(self) -> str:
        return shlex.join(self.argv())

    def render(self) -> None:
        """Write the main config and the site; bg writes the upstream file itself."""
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(resource_dir("nginx")),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        for sub in ("conf", "conf.d", "sites", "logs", "run", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        user = "root" if os.geteuid() == 0 else None
        version = installed_version(self.nginx_bin)
        main = env.get_template("nginx.conf.j2").render(
            prefix=self.root, workers=self.workers, user=user,
            keepalive_min_timeout=version is not None and version >= (1, 27, 4),
        )
        (self.prefix / "conf" / "nginx.conf").write_text(main)
        # The site's {{ app }} stands in nginx names (see bluegreen.scaffold.render_site).
        site = env.get_template("site.conf.j2").render(app=nginx_ident(self.app),
                                                       listen=self.listen,
                                                       access_log=self.access_log)
        (self.prefix / "sites" / f"{self.app}.conf").write_text(site)

    def master_pid(self) -> int | None:
        try:
            pid = int((self.prefix / "run" / "nginx.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> None:
        subprocess.run(self.argv(), check=True, capture_output=True)
        deadline = time.monotonic() + 5
        while self.master_pid() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx in {self.prefix} did not write its pid file")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
