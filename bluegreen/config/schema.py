"""The schema of ``bluegreen.toml``: every key, its type, default and check, in one place.

``section`` validates one table against its ``*_FIELDS`` spec and names the file and key
path in every error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
RUNNERS = ("command", "elixir", "systemd")
HOST_KEY_POLICIES = ("strict", "accept-new")
HOOK_POINTS = ("before_start", "before_switch", "after_switch", "after_deploy", "on_failure")
SECTIONS = ("app", "slots", "health", "nginx", "switch", "hooks", "targets", "verify")

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
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(v: int | str) -> int | None:
    """Bytes from ``1048576``, ``"500M"``, ``"2G"`` (powers of 1024); None when unreadable."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v > 0 else None
    m = _SIZE.match(str(v))
    if not m:
        return None
    n = int(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return n if n > 0 else None


def parse_limit(v: int | str) -> tuple[int, bool] | None:
    """``(n, is_percent)`` from ``3`` or ``"25%"``; 0 means no limit; None when unreadable."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, False) if v >= 0 else None
    m = re.match(r"^\s*(\d+)\s*%\s*$", str(v))
    if not m or not 0 < int(m.group(1)) <= 100:
        return None
    return int(m.group(1)), True

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
    # Unpacked size a release may reach on a host; refuses decompression bombs.
    "max_release_size": Field((int, str), "2G", lambda v: None if parse_size(v) is not None
                              else "a size in bytes or like \"500M\", \"2G\""),
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
    # A URL through your own site, checked as well when set (needs the site's X-BG-Slot line).
    "probe_url": Field(str, "", lambda v: None if v == "" else _url(v)),
    "pid_file": Field(str, "/run/nginx.pid", _abs_path),
    # Loopback port of bg's probe server (in the upstream file); 0 = slots.blue + 10000.
    # Every app on one nginx needs its own (`bg check` tells when two collide).
    "probe_port": Field(int, 0, lambda v: None if v == 0 or 1 <= v <= 65535
                        else "0 (automatic) or a TCP port"),
}
SWITCH_FIELDS: dict[str, Field] = {
    "drain_timeout": Field(NUM, 30.0, _non_negative),
    "retire": Field(bool, True),
    # Past it, connections still open on the old slot are taken for sockets (WebSockets,
    # LiveView): the old slot gets its SIGTERM instead of waiting out drain_timeout.
    "socket_grace": Field(NUM, 0.5, _non_negative),
}
def _share(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "a share between 0 and 1 (0.01 = 1%)"


def _paths(v: Any) -> str | None:
    ok = all(isinstance(p, str) and _http_path(p) is None for p in v)
    return None if ok else "a list of paths starting with /"


# After a deploy's switch: watch the app's real requests through nginx for `window` seconds
# and switch back when too many fail (bluegreen/ops/verify.py).
VERIFY_FIELDS: dict[str, Field] = {
    "window": Field(NUM, 0.0, _non_negative),  # 0 = no window
    "max_error_rate": Field(NUM, 0.01, _share),
    "min_requests": Field(int, 50, lambda v: None if v >= 0 else "an integer >= 0"),
    "paths": Field(list, [], _paths),  # probed through nginx; default: health.path
    "sticky": Field(bool, False),  # canary: a client stays on one release
    "interval": Field(NUM, 1.0, _positive),  # seconds between two reads of nginx's log
    # The log bg's site writes in bg's format on every nginx host; "" = <app.root>/logs/
    # nginx-access.log (bluegreen/accesslog.py).
    "access_log": Field(str, "", lambda v: None if v == "" else _abs_path(v)),
}
HOOKS_FIELDS: dict[str, Field] = {
    **{point: Field(list, []) for point in HOOK_POINTS},
    "rollback_on_failure": Field(bool, False),
}
TARGET_FIELDS: dict[str, Field] = {
    "hosts": Field(list, []),
    "parallel": Field(int, 10, lambda v: None if v >= 1 else "an integer >= 1"),
    "identity_file": Field(str, ""),
    "known_hosts": Field(str, ""),
    "host_key_policy": Field(str, "strict", _one_of(*HOST_KEY_POLICIES)),
    # Seconds for TCP connect, banner and key exchange (an emulated VM needs more).
    "connect_timeout": Field(NUM, 10.0, _positive),
    # New slots started and health-gated at most this many hosts at a time (or "25%").
    "boot_limit": Field((int, str), 0, lambda v: None if parse_limit(v) is not None
                        else "an integer >= 0 or a percentage like \"25%\""),
    "lbs": Field(list, []),
    "addresses": Field(dict, {}),
}


def type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
             dict: "a table"}
    if kind == (int, str):
        return "an integer or a string"
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def section(path: Path, where: str, data: Any, spec: Mapping[str, Field]) -> dict[str, Any]:
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
                f"{path}: {where}.{key} must be {type_name(fld.kind)}, got {value!r}"
            )
        if fld.check is not None and (expected := fld.check(value)) is not None:
            raise ConfigError(f"{path}: {where}.{key} must be {expected}, got {value!r}")
        out[key] = value
    return out


