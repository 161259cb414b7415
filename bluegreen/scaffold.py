"""`bg init`: a commented bluegreen.toml, an env file, the nginx site and, on request, the
default templates, all in the current directory. A Mix project (mix.exs) gives the app and
release name, the version and the runner (elixir).

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

from bluegreen import tomlwriter
from bluegreen.config import CONFIG_NAME, NAME_RE, RUNNERS
from bluegreen.errors import ConfigError
from bluegreen.resources import resource_dir

ENV_NAME = "bluegreen.env"
SITE_NAME = "bluegreen-site.conf"
TEMPLATES_DIR = "bluegreen-templates"


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
                  template: str = "", version: str | None = None) -> str:
    app_table: dict[str, Any] = {"name": app, "root": f"/srv/{app}", "runner": runner}
    if runner == "command":
        app_table["command"] = "bin/server"
    elif release != app:
        app_table["release_name"] = release
    app_table["env_file"] = env_file
    app_table["keep_releases"] = 5
    nginx: dict[str, Any] = {
        "upstream_file": f"/etc/nginx/conf.d/{app}.bluegreen.conf",
        "test_command": "nginx -t",
        "reload_command": "nginx -s reload",
        "pid_file": "/run/nginx.pid",
    }
    if template:
        nginx["template"] = template
    data = {
        "app": app_table,
        "slots": {"blue": 4001, "green": 4002},
        # A fresh Phoenix app answers "/"; a cheap route of your own is better.
        "health": {"path": "/" if phoenix else "/health", "expect": 200, "interval": 0.5,
                   "timeout": 2.0, "deadline": 60.0, "successes": 1},
        "nginx": nginx,
        "switch": {"drain_timeout": 30.0, "retire": True},
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


def render_site(app: str, root: str | None = None) -> str:
    import jinja2

    from bluegreen.accesslog import log_path

    source = (resource_dir("nginx") / "site.conf.j2").read_text()
    text: str = jinja2.Template(source, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined).render(
        app=app, listen="80", access_log=log_path(root or f"/srv/{app}"))
    return text


def scaffold(directory: Path, *, app: str | None = None, runner: str | None = None,
             force: bool = False, templates: bool = False) -> InitResult:
    mix = read_mix(directory)
    name = app or (mix.app if mix else directory.resolve().name.lower().replace(".", "_"))
    if not NAME_RE.match(name):
        raise ConfigError(f"app name must match [a-z][a-z0-9_-]*, got {name!r}",
                          hint="pass --app NAME")
    chosen = runner or ("elixir" if mix else "command")
    if chosen not in RUNNERS:
        raise ConfigError(f"--runner must be one of {', '.join(RUNNERS)}, got {chosen!r}")
    phoenix = bool(mix and mix.phoenix)
    release = mix.release if mix else name
    planned: dict[str, str | Path] = {}
    template = ""
    if templates:
        src = resource_dir("templates")
        for f in sorted(src.glob("*.j2")):
            planned[f"{TEMPLATES_DIR}/{f.name}"] = f
        template = f"{TEMPLATES_DIR}/upstream.conf.j2"
    planned[ENV_NAME] = render_env(name, phoenix=phoenix)
    planned[SITE_NAME] = render_site(name)
    planned[CONFIG_NAME] = render_config(
        name, chosen, phoenix=phoenix, release=release, env_file=ENV_NAME, template=template,
        version=mix.version if mix else None)
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
    hints = [f"include {SITE_NAME} in nginx (e.g. copy it to /etc/nginx/sites-enabled/), "
             f"edit {ENV_NAME}, then run `bg check` and `bg setup`"]
    if mix and not mix.has_tar_step:
        hints.append(f"add `releases: [{release}: [steps: [:assemble, :tar]]]` to mix.exs "
                     "so `mix release` builds the tarball bg ships")
    return InitResult(name, chosen, mix.version if mix else None, tuple(planned), tuple(hints))


def _write_secret(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(content)


def write_config(directory: Path, app: str, runner: str, *, force: bool) -> Path:
    """The older entry point: everything `bg init` writes; returns the config's path."""
    scaffold(directory, app=app, runner=runner, force=force)
    return directory / CONFIG_NAME
