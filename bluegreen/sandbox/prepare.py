"""What one sandbox host needs before its init starts: a host key and sshd_config, an nginx
prefix whose site nginx accepts before bg's first deploy, and its links."""

from __future__ import annotations

from pathlib import Path

from bluegreen.accesslog import format_directive
from bluegreen.nginxconf import nginx_ident
from bluegreen.sandbox import network
from bluegreen.sandbox.host import SandboxHost
from bluegreen.sandbox.sshd import SshdConfig, keygen


def prepare_host(host: SandboxHost, *, authorized_keys: Path, switch: str | None) -> None:
    """Write the host's files, connect it to this machine and, if any, to the ``switch``."""
    host.confdir.mkdir(parents=True, exist_ok=True)
    host.hostdir.mkdir(parents=True, exist_ok=True)
    keygen(host.host_key, f"{host.netns}-host")
    sshd_config = SshdConfig(
        address=host.address, port=22, host_key=host.host_key,
        pid_file=host.sshd_pid_file, authorized_keys=authorized_keys,
    )
    host.sshd_config.write_text(sshd_config.render())
    host.nginx.render()
    app = host.nginx.app
    placeholder = host.nginx.prefix / "conf.d" / f"{app}.bluegreen.conf"
    if not placeholder.exists():
        # nginx refuses a site whose upstream is undefined; bg replaces this on deploy.
        placeholder.write_text(
            f"upstream {nginx_ident(app)}_live {{ server 127.0.0.1:4001; }}\n"
            f'map "" ${nginx_ident(app)}_slot {{ default "none"; }}\n'
            + format_directive(app)
        )
    network.connect(host)
    if switch is not None:
        network.join_switch(host, switch)
