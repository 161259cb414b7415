"""``runner = "systemd"``: Elixir releases as instances of ``<app>@.service`` (instance = slot).

systemd supervises the node: it starts and stops instances for bg, and restarts one whose node
dies (``Restart=on-failure``). bg installs the template unit at `bg setup` (rendered here from
templates/systemd-unit.service.j2; the node runs as the deploy user and stops on SIGTERM).

A non-root deploy user reaches systemd through sudo (``sudo -n``: never a password prompt):
the commands it needs are the README's sudo rule for this runner.
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.config import AppConfig, Config
from bluegreen.layout import Layout
from bluegreen.logtail import LogSource
from bluegreen.resources import resource_dir
from bluegreen.runners.base import BIND_LOOPBACK, Runner, SetupFile
from bluegreen.runners.elixir import ElixirRunner, cookie_script
from bluegreen.shell import q

# `sudo -n` in front of what needs root, unless bg already runs as root on the host.
SH_SUDO = 'if [ "$(id -u)" = 0 ]; then bg_sudo=; else bg_sudo="sudo -n"; fi'


@dataclass(frozen=True)
class SystemdRunner(Runner):
    """Slots as instances of the template unit ``<app>@.service`` (instance = slot)."""

    paths: Layout
    app: AppConfig
    name: str = "systemd"
    bind: str = BIND_LOOPBACK
    ports: tuple[tuple[str, int], ...] = ()  # each slot's port, for `bg setup`

    @classmethod
    def for_config(cls, config: Config, *, bind: str) -> SystemdRunner:
        return cls(Layout(config.app.root), config.app, bind=bind,
                   ports=tuple(config.slots.items()))

    def unit(self, slot: str) -> str:
        return f"{self.app.name}@{slot}.service"

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        return f"""set -e
{cookie_script(p)}
mkdir -p {q(p.run)} {q(p.tmp(slot))}
printf 'PORT=%s\\nBG_BIND=%s\\n' {q(port)} {q(self.bind)} > {q(slot_env_file(p, slot))}
{SH_SUDO}
$bg_sudo systemctl start {q(self.unit(slot))}
"""

    def stop_script(self, slot: str) -> str:
        return f"{SH_SUDO}; $bg_sudo systemctl stop {q(self.unit(slot))} 2>/dev/null || true"

    def alive_script(self, slot: str) -> str:
        return f"systemctl is-active --quiet {q(self.unit(slot))}"

    def eval_script(self, slot: str, expression: str) -> str:
        return ElixirRunner(self.paths, self.app).eval_script(slot, expression)

    def check_script(self, slot: str) -> str | None:
        return ElixirRunner(self.paths, self.app).check_script(slot)

    def log_script(self, slot: str, lines: int) -> str:
        return (f"{SH_SUDO}; $bg_sudo journalctl -u {q(self.unit(slot))} -n {int(lines)}"
                " --no-pager 2>&1 || true")

    def setup_script(self) -> str:
        return cookie_script(self.paths) + "\n" + systemd_setup_script(self.paths,
                                                                       dict(self.ports))

    def setup_files(self) -> tuple[SetupFile, ...]:
        return (SetupFile(staged_unit_path(self.paths), render_unit(self.app).encode(),
                          install_unit_script(self.app), "installing the systemd unit"),)

    def log_source(self, slot: str) -> LogSource:
        return LogSource(unit=self.unit(slot))

    def teardown_script(self) -> str:
        return (f"rm -f {q(unit_path(self.app))}; if command -v systemctl >/dev/null"
                " && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi")


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


def staged_unit_path(paths: Layout) -> str:
    """Where `bg setup` writes the unit before it is installed (the deploy user's own dir)."""
    return f"{paths.bg}/unit.service"


def install_unit_script(app: AppConfig) -> str:
    """Move the staged unit into place (root or sudo); the user it runs as is the deploy user,
    filled in here because only the host knows it."""
    paths = Layout(app.root)
    staged = staged_unit_path(paths)
    return (f"{SH_SUDO}\n"
            f"sed -i \"s/^User=.*/User=$(id -un)/\" {q(staged)}\n"
            f"$bg_sudo install -m 0644 {q(staged)} {q(unit_path(app))}\n"
            f"rm -f {q(staged)}\n"
            "if [ -d /run/systemd/system ]; then $bg_sudo systemctl daemon-reload; fi")


def systemd_setup_script(paths: Layout, ports: dict[str, int]) -> str:
    """Each slot's PORT file and a daemon-reload (warns when systemd is not running)."""
    parts = [f"printf 'PORT=%s\\n' {int(port)} > {q(slot_env_file(paths, slot))}"
             for slot, port in ports.items()]
    parts.append(SH_SUDO)
    parts.append("if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then"
                 " $bg_sudo systemctl daemon-reload; else"
                 " echo 'warning: systemd is not running here'; fi")
    return "\n".join(parts)

