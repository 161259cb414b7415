"""``runner = "systemd"``: Elixir releases as instances of ``<app>@.service`` (instance = slot).

systemd supervises the node; bg starts and stops instances and installs the template unit
(rendered here from templates/systemd-unit.service.j2, which stops the node with SIGTERM).
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.config import AppConfig
from bluegreen.layout import Layout
from bluegreen.resources import resource_dir
from bluegreen.runners.base import BIND_LOOPBACK
from bluegreen.runners.elixir import ElixirRunner, cookie_script
from bluegreen.shell import q


@dataclass(frozen=True)
class SystemdRunner:
    """Slots as instances of the template unit ``<app>@.service`` (instance = slot)."""

    paths: Layout
    app: AppConfig
    name: str = "systemd"
    bind: str = BIND_LOOPBACK

    def unit(self, slot: str) -> str:
        return f"{self.app.name}@{slot}.service"

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        return f"""set -e
{cookie_script(p)}
mkdir -p {q(p.run)} {q(p.tmp(slot))}
printf 'PORT=%s\\nBG_BIND=%s\\n' {q(port)} {q(self.bind)} > {q(slot_env_file(p, slot))}
systemctl start {q(self.unit(slot))}
"""

    def stop_script(self, slot: str) -> str:
        return f"systemctl stop {q(self.unit(slot))} 2>/dev/null || true"

    def alive_script(self, slot: str) -> str:
        return f"systemctl is-active --quiet {q(self.unit(slot))}"

    def eval_script(self, slot: str, expression: str) -> str:
        return ElixirRunner(self.paths, self.app).eval_script(slot, expression)

    def check_script(self, slot: str) -> str | None:
        return ElixirRunner(self.paths, self.app).check_script(slot)

    def log_script(self, slot: str, lines: int) -> str:
        return f"journalctl -u {q(self.unit(slot))} -n {int(lines)} --no-pager 2>&1 || true"


def slot_env_file(paths: Layout, slot: str) -> str:
    return f"{paths.shared}/slot-{slot}.env"


def unit_path(app: AppConfig) -> str:
    return f"/etc/systemd/system/{app.name}@.service"


def render_unit(app: AppConfig, *, user: str = "root") -> str:
    """The template unit ``<app>@.service`` from templates/systemd-unit.service.j2."""
    import jinja2  # only `bg setup` of a systemd app renders a unit; keep start-up light

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    paths = Layout(app.root)
    return env.get_template("systemd-unit.service.j2").render(
        app=app.name,
        node_base=app.name.replace("-", "_"),
        root=app.root,
        release=app.release_name,
        distribution=app.distribution,
        node_suffix="@127.0.0.1" if app.distribution == "name" else "",
        cookie=paths.cookie,
        env_file=paths.env_file,
        slot_env=f"{paths.shared}/slot-%i.env",
        tmp=f"{paths.run}/%i.tmp",
        stop_timeout=int(app.stop_timeout),
        user=user,
    )


def systemd_setup_script(paths: Layout, ports: dict[str, int]) -> str:
    """Each slot's PORT file and a daemon-reload (warns when systemd is not running)."""
    parts = [f"printf 'PORT=%s\\n' {int(port)} > {q(slot_env_file(paths, slot))}"
             for slot, port in ports.items()]
    parts.append("if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then"
                 " systemctl daemon-reload; else echo 'warning: systemd is not running here';"
                 " fi")
    return "\n".join(parts)
