"""``bluegreen.toml`` -> frozen, validated dataclasses.

Defaults live in the ``*_FIELDS`` tables of :mod:`bluegreen.config.schema` and nowhere
else; ``[targets]`` and ``[verify]`` are parsed in their own modules (``targets.py``,
``verify.py``). Every error names the file, the key path and what was expected; loading
never touches a host.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.config.schema import (
    APP_FIELDS,
    HEALTH_FIELDS,
    HOOK_POINTS,
    HOOKS_FIELDS,
    HOST_KEY_POLICIES,
    NAME_RE,
    NGINX_FIELDS,
    RUNNERS,
    SECTIONS,
    SLOT_FIELDS,
    SWITCH_FIELDS,
    VERIFY_FIELDS,
    parse_size,
    section,
)
from bluegreen.config.targets import TargetConfig, parse_targets
from bluegreen.config.verify import VerifyConfig, verify_config, verify_defaults
from bluegreen.errors import ConfigError

__all__ = [
    "CONFIG_NAME", "EPHEMERAL_LOW", "HOOK_POINTS", "HOST_KEY_POLICIES", "NAME_RE", "RUNNERS",
    "SLOTS", "AppConfig", "Config", "HealthConfig", "HooksConfig", "NginxConfig",
    "SwitchConfig", "TargetConfig", "VerifyConfig", "load", "parse", "warnings",
]

CONFIG_NAME = "bluegreen.toml"
SLOTS = ("blue", "green")
EPHEMERAL_LOW = 32768


@dataclass(frozen=True)
class AppConfig:
    name: str
    root: str
    runner: str
    command: str
    env_file: Path | None
    keep_releases: int
    release_name: str
    distribution: str
    rpc_check: str
    migrate: str
    stop_timeout: float
    max_release_size: int = 2 * 1024**3


@dataclass(frozen=True)
class HealthConfig:
    path: str
    expect: int
    interval: float
    timeout: float
    deadline: float
    start_delay: float
    successes: int


@dataclass(frozen=True)
class NginxConfig:
    upstream_file: str
    template: Path | None
    test_command: str
    reload_command: str
    probe_url: str  # "" = confirm through bg's probe server only
    pid_file: str
    probe_port: int = 14001  # bg's loopback probe server (see templates/upstream.conf.j2)

    @property
    def probe_server_url(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"


@dataclass(frozen=True)
class SwitchConfig:
    drain_timeout: float
    retire: bool
    # Seconds nginx's old workers get to end by themselves before the old slot is asked to
    # shut down gracefully (it closes its sockets, clients reconnect to the new slot).
    socket_grace: float = 0.5


@dataclass(frozen=True)
class HooksConfig:
    """Commands per hook point. An entry is ``migrate`` (``app.migrate``, once, on the first
    host), ``local: CMD`` (once, on the controller) or a shell command run on every host."""

    before_start: tuple[str, ...] = ()
    before_switch: tuple[str, ...] = ()
    after_switch: tuple[str, ...] = ()
    after_deploy: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    rollback_on_failure: bool = False

    def at(self, point: str) -> tuple[str, ...]:
        commands: tuple[str, ...] = getattr(self, point)
        return commands


@dataclass(frozen=True)
class Config:
    path: Path
    app: AppConfig
    slots: Mapping[str, int]
    health: HealthConfig
    nginx: NginxConfig
    switch: SwitchConfig
    hooks: HooksConfig
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    verify: VerifyConfig = field(default_factory=verify_defaults)

    def target(self, name: str | None) -> TargetConfig:
        """The named target; without a name, the only one (or ``local``)."""
        if name is None:
            if len(self.targets) == 1:
                return next(iter(self.targets.values()))
            if "local" in self.targets:
                return self.targets["local"]
            names = ", ".join(sorted(self.targets))
            raise ConfigError(f"{self.path}: several targets ({names}); choose one with --target")
        if name not in self.targets:
            names = ", ".join(sorted(self.targets)) or "none"
            raise ConfigError(f"{self.path}: no target named {name!r} (configured: {names})")
        return self.targets[name]

    def other_slot(self, slot: str) -> str:
        return "green" if slot == "blue" else "blue"


def _relative_file(path: Path, where: str, value: str) -> Path | None:
    if not value:
        return None
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = path.parent / p
    if not p.is_file():
        raise ConfigError(f"{path}: {where} names a file that does not exist: {p}")
    return p


def load(path: Path | None = None, *, cwd: Path | None = None) -> Config:
    """Read and validate the configuration file."""
    if path is None:
        path = (cwd or Path.cwd()) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(
                f"no {CONFIG_NAME} in {path.parent}",
                hint="create one with `bg init`, or pass -c/--config PATH",
            )
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse(raw, path)


def parse(raw: Mapping[str, Any], path: Path) -> Config:
    """The parsed TOML document ``raw`` of the file at ``path``, validated section by section."""
    _check_sections(path, raw)
    app = _app_config(path, raw["app"])
    s = section(path, "slots", raw.get("slots", {}), SLOT_FIELDS)
    if s["blue"] == s["green"]:
        raise ConfigError(
            f"{path}: slots.blue and slots.green must be different ports, both are {s['blue']}"
        )
    health = _health_config(section(path, "health", raw.get("health", {}), HEALTH_FIELDS))
    nginx = _nginx_config(path, raw["nginx"], s["blue"], s["green"])
    w = section(path, "switch", raw.get("switch", {}), SWITCH_FIELDS)
    switch = SwitchConfig(drain_timeout=float(w["drain_timeout"]), retire=w["retire"],
                          socket_grace=float(w["socket_grace"]))
    k = section(path, "hooks", raw.get("hooks", {}), HOOKS_FIELDS)
    hooks = HooksConfig(
        **{point: _hook_list(path, point, k[point], app) for point in HOOK_POINTS},
        rollback_on_failure=k["rollback_on_failure"],
    )
    verify = verify_config(section(path, "verify", raw.get("verify", {}), VERIFY_FIELDS))
    targets = parse_targets(path, raw.get("targets", {}))
    return Config(
        path=path,
        app=app,
        slots={"blue": s["blue"], "green": s["green"]},
        health=health,
        nginx=nginx,
        switch=switch,
        hooks=hooks,
        targets=targets,
        verify=verify,
    )


def _check_sections(path: Path, raw: Mapping[str, Any]) -> None:
    """Only known sections, and the two required ones ([app], [nginx]) present."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]", hint="sections: " + ", ".join(SECTIONS)
        )
    if "app" not in raw:
        raise ConfigError(f"{path}: section [app] is required")
    if "nginx" not in raw:
        raise ConfigError(f"{path}: section [nginx] is required")


def _app_config(path: Path, raw: Any) -> AppConfig:
    """The ``[app]`` section, validated."""
    a = section(path, "app", raw, APP_FIELDS)
    if a["runner"] == "command" and not a["command"].strip():
        raise ConfigError(f"{path}: app.command is required when app.runner = \"command\"")
    if a["root"].rstrip("/") in ("", "/usr", "/etc", "/var", "/home", "/srv", "/opt", "/tmp"):
        raise ConfigError(f"{path}: app.root must be a directory of its own, got {a['root']!r}")
    app = AppConfig(
        name=a["name"],
        root=a["root"].rstrip("/"),
        runner=a["runner"],
        command=a["command"],
        env_file=_relative_file(path, "app.env_file", a["env_file"]),
        keep_releases=a["keep_releases"],
        release_name=a["release_name"] or a["name"],
        distribution=a["distribution"],
        rpc_check=a["rpc_check"],
        migrate=a["migrate"],
        stop_timeout=float(a["stop_timeout"]),
        max_release_size=parse_size(a["max_release_size"]) or 0,
    )
    if app.release_name and not NAME_RE.match(app.release_name):
        raise ConfigError(f"{path}: app.release_name must match [a-z][a-z0-9_-]*")
    return app


def _health_config(h: Mapping[str, Any]) -> HealthConfig:
    """The ``[health]`` section, once checked against its schema."""
    return HealthConfig(
        path=h["path"],
        expect=h["expect"],
        interval=float(h["interval"]),
        timeout=float(h["timeout"]),
        deadline=float(h["deadline"]),
        start_delay=float(h["start_delay"]),
        successes=h["successes"],
    )


def _nginx_config(path: Path, raw: Any, blue: int, green: int) -> NginxConfig:
    """The ``[nginx]`` section, validated; its probe port must not be a slot's."""
    n = section(path, "nginx", raw, NGINX_FIELDS)
    nginx = NginxConfig(
        upstream_file=n["upstream_file"],
        template=_relative_file(path, "nginx.template", n["template"]),
        test_command=n["test_command"],
        reload_command=n["reload_command"],
        probe_url=n["probe_url"],
        pid_file=n["pid_file"],
        probe_port=n["probe_port"] or _probe_port(blue),
    )
    if nginx.probe_port in (blue, green):
        raise ConfigError(f"{path}: nginx.probe_port {nginx.probe_port} is a slot's port")
    return nginx


def _probe_port(blue: int) -> int:
    """Derived from the blue slot's port, so apps sharing one nginx (which cannot share slot
    ports) get different probe ports; kept below the ephemeral range (see DESIGN.md)."""
    return blue + 10000 if blue + 10000 < EPHEMERAL_LOW else blue - 10000


def _hook_list(path: Path, point: str, commands: list[Any], app: AppConfig) -> tuple[str, ...]:
    for i, cmd in enumerate(commands):
        if not isinstance(cmd, str) or not cmd.strip() or "\x00" in cmd:
            raise ConfigError(f"{path}: hooks.{point}[{i}] must be a non-empty command string,"
                              f" got {cmd!r}")
        if cmd == "migrate" and not app.migrate:
            raise ConfigError(f"{path}: hooks.{point} uses migrate but app.migrate is empty")
        if cmd.startswith("local:") and not cmd[len("local:"):].strip():
            raise ConfigError(f"{path}: hooks.{point}[{i}] has nothing after `local:`")
    return tuple(commands)


def warnings(config: Config) -> list[str]:
    """Things that are allowed but likely to hurt."""
    out = []
    for slot, port in config.slots.items():
        if port >= EPHEMERAL_LOW:
            out.append(
                f"slots.{slot} = {port} lies in Linux's ephemeral port range (32768-60999): "
                "under load a client socket can take it and the slot fails to bind"
            )
    return out
