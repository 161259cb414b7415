"""`bg init`: a commented bluegreen.toml, an env file, the nginx site and, on request, the
default templates, all in the current directory. A Mix project (mix.exs) gives the app and
release name, the version and the runner (elixir).

This machine's nginx directory (``/etc/nginx``) is read, never written: the upstream files
other bg apps have there give the ports they use (this app gets others), and its sites
tell whether the new site would be shadowed (Debian's ``default_server``).

Nothing is overwritten without ``force``: every file is checked before the first is written.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen import ports, sites, tomlwriter
from bluegreen.config import CONFIG_NAME, NAME_RE, RUNNERS
from bluegreen.errors import ConfigError
from bluegreen.nginxconf import nginx_ident
from bluegreen.resources import resource_dir
from bluegreen.runners import suggested_runner

ENV_NAME = "bluegreen.env"
SITE_NAME = "bluegreen-site.conf"
TEMPLATES_DIR = "bluegreen-templates"
NGINX_DIR = Path("/etc/nginx")
# One server_name word: a name, a wildcard (*.example.com) or a regex (~...), nothing nginx
# would read as the end of the directive.
_SERVER_NAME = re.compile(r"^[A-Za-z0-9*.~^_-][^\s;{}'\"\\#]*$")


@dataclass(frozen=True)
class MixProject:
    app: str
    version: str | None
    release: str
    phoenix: bool
    has_tar_step: bool


def read_mix(directory: Path) -> MixProject | None:
    """What a mix.exs says about the app; None when there is no mix.exs."""
    path = directory / "mix.exs"
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    app = re.search(r"\bapp:\s*:([a-z][a-z0-9_]*)", text)
    if app is None:
        raise ConfigError(f"{path}: no `app: :name` in project/0", hint="pass --app NAME")
    version = re.search(r"\bversion:\s*\"([^\"]+)\"", text) or re.search(
        r"@version\s+\"([^\"]+)\"", text)
    release = re.search(r"\breleases:\s*\[\s*([a-z][a-z0-9_]*):", text)
    return MixProject(
        app=app.group(1),
        version=version.group(1) if version else None,
        release=release.group(1) if release else app.group(1),
        phoenix=re.search(r"\{:phoenix\s*,", text) is not None,
        has_tar_step=":tar" in text,
    )


@dataclass(frozen=True)
class InitResult:
    app: str
    runner: str
    version: str | None
    files: tuple[str, ...]
    hints: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, "runner": self.runner, "version": self.version,
                "files": list(self.files), "hints": list(self.hints)}


KEY_COMMENTS = {
    ("app", "name"): "[a-z][a-z0-9_-]*",
    ("app", "root"): "deploy root on every host",
    ("app", "runner"): "command | elixir | systemd",
    ("app", "command"): "run in the release directory with PORT set",
    ("app", "release_name"): "bin/<release_name> in the release",
    ("app", "env_file"): "uploaded to <root>/shared/env, mode 0600; keep it out of git",
    ("slots", "blue"): "both below 32768 (outside Linux's ephemeral port range)",
    ("health", "path"): "answered by the new slot before any traffic moves",
    ("health", "deadline"): "seconds for the slot to become healthy",
    ("health", "successes"): "consecutive successes required",
    ("nginx", "upstream_file"): "bg's file: include it in nginx's http {} (conf.d does)",
    ("nginx", "pid_file"): "nginx's master pid (to drain old workers after a reload)",
    ("switch", "drain_timeout"): "seconds old nginx workers get to finish requests",
    ("switch", "socket_grace"): "then open sockets: old slot gets SIGTERM (closes them)",
    ("switch", "retire"): "false keeps the old slot warm for an instant rollback",
}
TABLE_COMMENTS = {
    "app": "bluegreen.toml: every key is in the README's configuration reference.",
    "nginx": "bg confirms each switch through its own loopback probe server (probe_port,\n"
             "default slots.blue + 10000); set probe_url to also check your site's X-BG-Slot.",
    "targets.local": "This machine, no SSH. Add your servers as another target:\n"
                     "[targets.production]\n"
                     "hosts = [\"deploy@app1.example.com\", \"deploy@app2.example.com:2222\"]",
}


def render_config(app: str, runner: str, *, phoenix: bool, release: str, env_file: str,
                  template: str = "", version: str | None = None,
                  nginx_dir: Path = NGINX_DIR, slots: tuple[int, int] = (4001, 4002)) -> str:
    app_table: dict[str, Any] = {"name": app, "root": f"/srv/{app}", "runner": runner}
    if runner == "command":
        app_table["command"] = "bin/server"
    elif release != app:
        app_table["release_name"] = release
    app_table["env_file"] = env_file
    app_table["keep_releases"] = 5
    nginx: dict[str, Any] = {
        "upstream_file": f"{nginx_dir}/conf.d/{app}.bluegreen.conf",
        "test_command": "nginx -t",
        "reload_command": "nginx -s reload",
        "pid_file": "/run/nginx.pid",
    }
    if template:
        nginx["template"] = template
    data = {
        "app": app_table,
        "slots": {"blue": slots[0], "green": slots[1]},
        # A fresh Phoenix app answers "/"; a cheap route of your own is better.
        "health": {"path": "/" if phoenix else "/health", "expect": 200, "interval": 0.5,
                   "timeout": 2.0, "deadline": 60.0, "successes": 1},
        "nginx": nginx,
        "switch": {"drain_timeout": 30.0, "socket_grace": 0.5, "retire": True},
        "targets": {"local": {}},
    }
    text = tomlwriter.dumps(data, comments=TABLE_COMMENTS)
    head = ""
    if version is not None:
        head = (f"# Build a release (mix release) and ship it:\n"
                f"#   bg setup && bg deploy _build/prod/{release}-{version}.tar.gz\n")
    return head + _comment_keys(text)


def _comment_keys(text: str) -> str:
    """Append each key's comment; values come from tomlwriter (one line, quoted), so text
    after them on the same line can only be a comment."""
    out, table = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        else:
            key = line.split(" = ", 1)[0]
            if " = " in line and (table, key) in KEY_COMMENTS:
                line = f"{line:<40}  # {KEY_COMMENTS[(table, key)]}"
        out.append(line)
    return "\n".join(out) + "\n"


def render_env(app: str, *, phoenix: bool) -> str:
    lines = ["# Environment of every slot, uploaded by bg to <root>/shared/env (mode 0600).",
             "# PORT is set by bg per slot. Keep this file out of version control."]
    if phoenix:
        lines += [
            "PHX_SERVER=true",
            "PHX_HOST=example.com",
            # Generated here, never printed: Phoenix wants at least 64 bytes.
            f"SECRET_KEY_BASE={secrets.token_urlsafe(64)}",
            f"DATABASE_URL=ecto://USER:PASSWORD@localhost/{app}_prod",
        ]
    else:
        lines += ["# NAME=value"]
    return "\n".join(lines) + "\n"


def render_site(app: str, server_name: str = "_", listen: str = "80",
                root: str | None = None) -> str:
    """nginx/site.conf.j2 for ``app``. Its ``{{ app }}`` stands in nginx names only
    (``{{ app }}_live``, ``${{ app }}_slot``, the access log's format), so it gets
    :func:`nginx_ident`; its ``server_name _;`` becomes ``server_name``; ``root`` (default
    ``/srv/<app>``) is where the access log goes. (nginx/provision.sh fills in the same
    template with sed.)"""
    import jinja2

    from bluegreen.accesslog import log_path

    source = (resource_dir("nginx") / "site.conf.j2").read_text()
    text: str = jinja2.Template(source, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined).render(
        app=nginx_ident(app), listen=listen, access_log=log_path(root or f"/srv/{app}"))
    return text.replace("    server_name _;\n", f"    server_name {server_name};\n", 1)


def server_names(value: str | None) -> str:
    """``--server-name`` as the site's server_name ("_" when not given)."""
    names = (value or "").replace(",", " ").split()
    for n in names:
        if not _SERVER_NAME.match(n):
            raise ConfigError(f"--server-name: {n!r} is not a server name nginx takes",
                              hint="pass host names such as shop.example.com or *.example.com")
    return " ".join(names) or "_"


def _check_listen(listen: str) -> None:
    if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]:|[0-9.]+:)?[0-9]{1,5}", listen):
        raise ConfigError(f"--listen: {listen!r} is not a port or address:port",
                          hint="e.g. --listen 8080 or --listen 127.0.0.1:8080")


def neighbours(nginx_dir: Path, app: str, listening: set[int] | None = None
               ) -> tuple[tuple[int, int], list[str]]:
    """Slot ports no other bg app on this machine's nginx uses (nor any listener here),
    and what to tell about them. An app whose nginx identifiers are this one's is refused:
    both would define the same upstream."""
    others = [a for a in ports.bg_apps(nginx_dir.glob("conf.d/*.conf")) if a.app != app]
    for other in others:
        if nginx_ident(other.app) == nginx_ident(app):
            raise ConfigError(
                f"app {app!r} would define the same nginx upstream ({nginx_ident(app)}_live)"
                f" as app {other.app!r} ({other.file})",
                hint="choose another --app name (nginx identifiers turn - and . into _)")
    used = set(ports.listening_ports() if listening is None else listening)
    for other in others:
        used |= other.ports
    blue, green = ports.pick_slots(used)
    told = [f"slots {blue}/{green}: other bg apps on this nginx use "
            + ", ".join(f"{o.app} ({'/'.join(map(str, sorted(o.ports)))})" for o in others)
            ] if others else []
    return (blue, green), told


def shadow_hint(nginx_dir: Path, site: str, app: str) -> str:
    """Why the new site would never answer beside this machine's sites ("" when it would)."""
    main = nginx_dir / "nginx.conf"
    parts = []
    for f in [main, *sorted(nginx_dir.glob("conf.d/*.conf")),
              *sorted(nginx_dir.glob("sites-enabled/*"))]:
        try:
            parts.append(f"# configuration file {f}:\n{f.read_text(errors='replace')}\n")
        except OSError:
            continue
    if not parts:
        return ""
    parts.append(f"# configuration file {nginx_dir}/sites-enabled/{SITE_NAME}:\n{site}\n")
    verdict = sites.judge(sites.parse("".join(parts)), nginx_ident(app))
    return f"{verdict.detail}: {verdict.hint}" if verdict.blocking else ""


def scaffold(directory: Path, *, app: str | None = None, runner: str | None = None,
             force: bool = False, templates: bool = False, server_name: str | None = None,
             nginx_dir: Path = NGINX_DIR, listening: set[int] | None = None,
             listen: str = "80") -> InitResult:
    """`bg init` in ``directory``: plan every file, check none would be overwritten, write."""
    mix = read_mix(directory)
    name = app or (mix.app if mix else directory.resolve().name.lower().replace(".", "_"))
    if not NAME_RE.match(name):
        raise ConfigError(f"app name must match [a-z][a-z0-9_-]*, got {name!r}",
                          hint="pass --app NAME")
    chosen = runner or suggested_runner(mix is not None)
    if chosen not in RUNNERS:
        raise ConfigError(f"--runner must be one of {', '.join(RUNNERS)}, got {chosen!r}")
    phoenix = bool(mix and mix.phoenix)
    release = mix.release if mix else name
    names = server_names(server_name)
    _check_listen(listen)
    slots, told = neighbours(nginx_dir, name, listening)
    planned: dict[str, str | Path] = {}
    template = ""
    if templates:
        src = resource_dir("templates")
        for f in sorted(src.glob("*.j2")):
            planned[f"{TEMPLATES_DIR}/{f.name}"] = f
        template = f"{TEMPLATES_DIR}/upstream.conf.j2"
    planned[ENV_NAME] = render_env(name, phoenix=phoenix)
    planned[SITE_NAME] = site = render_site(name, names, listen)
    planned[CONFIG_NAME] = render_config(
        name, chosen, phoenix=phoenix, release=release, env_file=ENV_NAME, template=template,
        version=mix.version if mix else None, nginx_dir=nginx_dir, slots=slots)
    _write_planned(directory, planned, force=force)
    hints = _next_steps(told, nginx_dir, site, name, mix)
    return InitResult(name, chosen, mix.version if mix else None, tuple(planned), tuple(hints))


def _write_planned(directory: Path, planned: dict[str, str | Path], *, force: bool) -> None:
    """Write every planned file (a Path is copied), after checking that none exists unless
    ``force``; the env file is written 0600."""
    existing = [rel for rel in planned if (directory / rel).exists()]
    if existing and not force:
        raise ConfigError(f"refusing to overwrite what already exists in {directory}: "
                          + ", ".join(existing),
                          hint="pass --force to overwrite")
    for rel, content in planned.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        elif rel == ENV_NAME:
            _write_secret(path, content)
        else:
            path.write_text(content)


def _next_steps(told: list[str], nginx_dir: Path, site: str, app: str,
                mix: MixProject | None) -> list[str]:
    """What `bg init` tells the user to do next, and what stands in the way."""
    # In this order: nginx rejects the site until `bg setup` wrote the upstream it uses.
    hints = [*told, f"edit {ENV_NAME}, run `bg setup` (it writes the upstream the site proxies"
             f" to), include {SITE_NAME} in nginx (e.g. copy it to {nginx_dir}/sites-enabled/),"
             " `nginx -t && nginx -s reload`, then `bg check`"]
    shadowed = shadow_hint(nginx_dir, site, app)
    if shadowed:
        hints.insert(0, f"this machine's nginx would never pass a request to the site: {shadowed}")
    if mix and not mix.has_tar_step:
        hints.append(f"add `releases: [{mix.release}: [steps: [:assemble, :tar]]]` to mix.exs "
                     "so `mix release` builds the tarball bg ships")
    return hints


def _write_secret(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(content)


def write_config(directory: Path, app: str, runner: str, *, force: bool) -> Path:
    """The older entry point: everything `bg init` writes; returns the config's path."""
    scaffold(directory, app=app, runner=runner, force=force)
    return directory / CONFIG_NAME
