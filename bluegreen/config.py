"""``bluegreen.toml`` -> frozen, validated dataclasses.

Defaults live in the ``*_FIELDS`` tables below and nowhere else. Every error names the
file, the key path and what was expected; loading never touches a host.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import ConfigError

CONFIG_NAME = "bluegreen.toml"
SLOTS = ("blue", "green")
RUNNERS = ("command", "elixir", "systemd")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
HOST_KEY_POLICIES = ("strict", "accept-new")
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
    probe_url: str
    pid_file: str


@dataclass(frozen=True)
class SwitchConfig:
    drain_timeout: float
    retire: bool


@dataclass(frozen=True)
class HooksConfig:
    before_switch: tuple[str, ...]


@dataclass(frozen=True)
class TargetConfig:
    name: str
    hosts: tuple[str, ...]
    parallel: int
    identity_file: str | None
    known_hosts: str | None
    host_key_policy: str

    @property
    def is_local(self) -> bool:
        return not self.hosts


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


# ----------------------------------------------------------------------------- schema

Check = Callable[[Any], str | None]  # returns what was expected, or None when fine

_MISSING = object()


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    default: Any = _MISSING
    check: Check | None = None
    expected: str = ""


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number >= 0"


def _name(v: Any) -> str | None:
    return None if NAME_RE.match(v) else "a name matching [a-z][a-z0-9_-]*"


def _abs_path(v: Any) -> str | None:
    return None if v.startswith("/") and "\n" not in v else "an absolute path"


def _port(v: Any) -> str | None:
    return None if 1 <= v <= 65535 else "a TCP port between 1 and 65535"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else "one of " + ", ".join(repr(c) for c in choices)


def _url(v: Any) -> str | None:
    return None if re.match(r"^https?://[^/\s]+(/\S*)?$", v) else "an http:// or https:// URL"


def _http_path(v: Any) -> str | None:
    return None if v.startswith("/") and not re.search(r"\s", v) else "a path starting with /"


def _status(v: Any) -> str | None:
    return None if 100 <= v <= 599 else "an HTTP status code"


NUM = (int, float)

APP_FIELDS: dict[str, Field] = {
    "name": Field(str, check=_name),
    "root": Field(str, check=_abs_path),
    "runner": Field(str, "command", _one_of(*RUNNERS)),
    "command": Field(str, ""),
    "env_file": Field(str, ""),
    "keep_releases": Field(int, 5, lambda v: None if v >= 2 else "an integer >= 2"),
    "release_name": Field(str, ""),
    # Long names on 127.0.0.1 work whatever the hostname resolves to (see the Elixir notes).
    "distribution": Field(str, "name", _one_of("sname", "name")),
    "rpc_check": Field(str, ""),
    "migrate": Field(str, ""),
    "stop_timeout": Field(NUM, 30.0, _positive),
}
SLOT_FIELDS: dict[str, Field] = {
    "blue": Field(int, 4001, _port),
    "green": Field(int, 4002, _port),
}
HEALTH_FIELDS: dict[str, Field] = {
    "path": Field(str, "/health", _http_path),
    "expect": Field(int, 200, _status),
    "interval": Field(NUM, 0.5, _positive),
    "timeout": Field(NUM, 2.0, _positive),
    "deadline": Field(NUM, 60.0, _positive),
    "start_delay": Field(NUM, 0.0, _non_negative),
    "successes": Field(int, 1, lambda v: None if v >= 1 else "an integer >= 1"),
}
NGINX_FIELDS: dict[str, Field] = {
    "upstream_file": Field(str, check=_abs_path),
    "template": Field(str, ""),
    "test_command": Field(str, "nginx -t"),
    "reload_command": Field(str, "nginx -s reload"),
    "probe_url": Field(str, "http://127.0.0.1/", _url),
    "pid_file": Field(str, "/run/nginx.pid", _abs_path),
}
SWITCH_FIELDS: dict[str, Field] = {
    "drain_timeout": Field(NUM, 30.0, _non_negative),
    "retire": Field(bool, True),
}
HOOKS_FIELDS: dict[str, Field] = {
    "before_switch": Field(list, []),
}
TARGET_FIELDS: dict[str, Field] = {
    "hosts": Field(list, []),
    "parallel": Field(int, 10, lambda v: None if v >= 1 else "an integer >= 1"),
    "identity_file": Field(str, ""),
    "known_hosts": Field(str, ""),
    "host_key_policy": Field(str, "strict", _one_of(*HOST_KEY_POLICIES)),
}
SECTIONS = ("app", "slots", "health", "nginx", "switch", "hooks", "targets")
HOOK_NAMES = ("migrate",)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def _section(path: Path, where: str, data: Any, spec: Mapping[str, Field]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        known = ", ".join(spec)
        raise ConfigError(
            f"{path}: unknown key {where}.{unknown[0]}",
            hint=f"keys allowed in [{where}]: {known}",
        )
    out: dict[str, Any] = {}
    for key, fld in spec.items():
        if key not in data:
            if fld.default is _MISSING:
                raise ConfigError(f"{path}: {where}.{key} is required")
            out[key] = fld.default
            continue
        value = data[key]
        # bool is an int in Python; a number field must not accept true/false.
        bad_bool = isinstance(value, bool) and fld.kind is not bool
        if bad_bool or not isinstance(value, fld.kind):
            raise ConfigError(
                f"{path}: {where}.{key} must be {_type_name(fld.kind)}, got {value!r}"
            )
        if fld.check is not None and (expected := fld.check(value)) is not None:
            raise ConfigError(f"{path}: {where}.{key} must be {expected}, got {value!r}")
        out[key] = value
    return out


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
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]", hint="sections: " + ", ".join(SECTIONS)
        )
    if "app" not in raw:
        raise ConfigError(f"{path}: section [app] is required")
    if "nginx" not in raw:
        raise ConfigError(f"{path}: section [nginx] is required")

    a = _section(path, "app", raw["app"], APP_FIELDS)
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
    )
    if app.release_name and not NAME_RE.match(app.release_name):
        raise ConfigError(f"{path}: app.release_name must match [a-z][a-z0-9_-]*")

    s = _section(path, "slots", raw.get("slots", {}), SLOT_FIELDS)
    if s["blue"] == s["green"]:
        raise ConfigError(
            f"{path}: slots.blue and slots.green must be different ports, both are {s['blue']}"
        )

    h = _section(path, "health", raw.get("health", {}), HEALTH_FIELDS)
    health = HealthConfig(
        path=h["path"],
        expect=h["expect"],
        interval=float(h["interval"]),
        timeout=float(h["timeout"]),
        deadline=float(h["deadline"]),
        start_delay=float(h["start_delay"]),
        successes=h["successes"],
    )

    n = _section(path, "nginx", raw["nginx"], NGINX_FIELDS)
    nginx = NginxConfig(
        upstream_file=n["upstream_file"],
        template=_relative_file(path, "nginx.template", n["template"]),
        test_command=n["test_command"],
        reload_command=n["reload_command"],
        probe_url=n["probe_url"],
        pid_file=n["pid_file"],
    )

    w = _section(path, "switch", raw.get("switch", {}), SWITCH_FIELDS)
    switch = SwitchConfig(drain_timeout=float(w["drain_timeout"]), retire=w["retire"])

    k = _section(path, "hooks", raw.get("hooks", {}), HOOKS_FIELDS)
    for i, hook in enumerate(k["before_switch"]):
        if hook not in HOOK_NAMES:
            raise ConfigError(
                f"{path}: hooks.before_switch[{i}] must be one of {', '.join(HOOK_NAMES)},"
                f" got {hook!r}"
            )
        if hook == "migrate" and not app.migrate:
            raise ConfigError(f"{path}: hooks.before_switch uses migrate but app.migrate is empty")
    hooks = HooksConfig(before_switch=tuple(k["before_switch"]))

    targets = _targets(path, raw.get("targets", {}))
    return Config(
        path=path,
        app=app,
        slots={"blue": s["blue"], "green": s["green"]},
        health=health,
        nginx=nginx,
        switch=switch,
        hooks=hooks,
        targets=targets,
    )


def _targets(path: Path, raw: Any) -> dict[str, TargetConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [targets] must be a table of [targets.NAME] tables")
    targets: dict[str, TargetConfig] = {}
    for name, data in raw.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"{path}: target name {name!r} must match [a-z][a-z0-9_-]*")
        t = _section(path, f"targets.{name}", data, TARGET_FIELDS)
        hosts = t["hosts"]
        for i, h in enumerate(hosts):
            if not isinstance(h, str) or not h.strip() or re.search(r"\s", h):
                raise ConfigError(
                    f"{path}: targets.{name}.hosts[{i}] must be a host like "
                    f"\"deploy@app1.example.com:22\", got {h!r}"
                )
        if len(set(hosts)) != len(hosts):
            raise ConfigError(f"{path}: targets.{name}.hosts lists a host twice")
        if name == "local" and hosts:
            raise ConfigError(f"{path}: targets.local is this machine and takes no hosts")
        if name != "local" and not hosts:
            raise ConfigError(f"{path}: targets.{name}.hosts is empty")
        targets[name] = TargetConfig(
            name=name,
            hosts=tuple(hosts),
            parallel=t["parallel"],
            identity_file=t["identity_file"] or None,
            known_hosts=t["known_hosts"] or None,
            host_key_policy=t["host_key_policy"],
        )
    if not targets:
        targets["local"] = TargetConfig("local", (), 1, None, None, "strict")
    return targets


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
