"""A private nginx laid out like Debian's /etc/nginx, for the site and two-app tests.

``PREFIX/nginx.conf`` is Debian's own (read from /etc/nginx/nginx.conf when present) with
its paths moved under the prefix: it includes ``conf.d/*.conf`` and ``sites-enabled/*``;
``sites-enabled/default`` is Debian's default site, ``listen PORT default_server`` (a test
port instead of 80), root /var/www/html ("Welcome to nginx!"); the pid file is
``PREFIX/run/nginx.pid``; workers run as www-data when the tests run as root. bg's
upstream files go to ``conf.d/`` and the site `bg init` wrote beside the default in
``sites-enabled/``, as a user following the README does.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bluegreen.sandbox.nginx import NGINX_BIN
from tests.helpers import free_port, need

# Debian 12's nginx.conf without its comments, used where /etc/nginx is not Debian's.
DEBIAN_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 768;
}

http {
\tsendfile on;
\ttcp_nopush on;
\ttypes_hash_max_size 2048;
\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;
\tssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE
\tssl_prefer_server_ciphers on;
\taccess_log /var/log/nginx/access.log;
\tgzip on;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
"""

DEBIAN_DEFAULT_SITE = """\
# Default server configuration
#
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;

\troot /var/www/html;

\t# Add index.php to the list if you are using PHP
\tindex index.html index.htm index.nginx-debian.html;

\tserver_name _;

\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""


def _debian(path: str, fallback: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return fallback


@dataclass
class DebianNginx:
    prefix: Path
    port: int  # where Debian's default site listens (80 on a real server)

    def argv(self, *extra: str) -> list[str]:
        return [NGINX_BIN, "-p", f"{self.prefix}/", "-c", str(self.prefix / "nginx.conf"),
                *extra]

    @property
    def test_command(self) -> str:
        return shlex.join(self.argv("-t"))

    @property
    def reload_command(self) -> str:
        return shlex.join(self.argv("-s", "reload"))

    @property
    def pid_file(self) -> Path:
        return self.prefix / "run" / "nginx.pid"

    @property
    def default_site(self) -> Path:
        return self.prefix / "sites-enabled" / "default"

    def render(self) -> None:
        p = self.prefix
        for sub in ("conf.d", "sites-available", "sites-enabled", "run", "logs", "tmp"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        conf = _debian("/etc/nginx/nginx.conf", DEBIAN_CONF)
        # Dynamic modules load from nginx's own prefix: not part of what is tested here.
        conf = re.sub(r"(?m)^include /etc/nginx/modules-enabled/.*\n", "", conf)
        conf = conf.replace("/etc/nginx/", f"{p}/").replace("/run/nginx.pid", str(self.pid_file))
        conf = conf.replace("/var/log/nginx/", f"{p}/logs/")
        if os.geteuid() != 0:
            conf = re.sub(r"(?m)^user .*\n", "", conf)
        temp = "".join(f"\t{k}_temp_path {p}/tmp/{k};\n"
                       for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = conf.replace("http {\n", "http {\n" + temp, 1)
        (p / "nginx.conf").write_text(conf)
        (p / "mime.types").write_text(_debian("/etc/nginx/mime.types",
                                              "types { text/html html; }\n"))
        site = _debian("/etc/nginx/sites-available/default", DEBIAN_DEFAULT_SITE)
        site = re.sub(r"(?m)^(\s*listen\s+)80(\s)", rf"\g<1>{self.port}\2", site)
        site = re.sub(r"(?m)^(\s*listen\s+)\[::\]:80(\s)", rf"\1[::1]:{self.port}\2", site)
        (p / "sites-available" / "default").write_text(site)
        self.default_site.symlink_to(p / "sites-available" / "default")

    def enable(self, site: Path, name: str) -> Path:
        """Put a site into sites-enabled, as the README says (a copy)."""
        path = self.prefix / "sites-enabled" / name
        path.write_text(site.read_text())
        return path

    def master_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start(self) -> None:
        subprocess.run(self.argv(), check=True, capture_output=True)
        deadline = time.monotonic() + 5
        while self.master_pid() is None:
            assert time.monotonic() < deadline, "nginx did not write its pid file"
            time.sleep(0.02)

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.master_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)

    def get(self, host: str = "localhost", path: str = "/") -> httpx.Response:
        """A request to the sites' port, as a browser asking for ``host`` sends it."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}",
                         headers={"Host": host, "Connection": "close"}, timeout=5)


@pytest.fixture
def debian_nginx(tmp_path: Path) -> Iterator[DebianNginx]:
    need(Path(NGINX_BIN).exists(), "nginx is not installed")
    server = DebianNginx(tmp_path / "etc-nginx", free_port())
    server.render()
    try:
        yield server
    finally:
        server.stop()
