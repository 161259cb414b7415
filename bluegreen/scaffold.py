"""`bg init`: a commented bluegreen.toml with every key at its default."""

from __future__ import annotations

from pathlib import Path

from bluegreen.config import CONFIG_NAME, NAME_RE, RUNNERS
from bluegreen.errors import ConfigError

TEMPLATE = """\
# bluegreen.toml: see the README's configuration reference for every key.
[app]
name = "{app}"                      # [a-z][a-z0-9_-]*
root = "/srv/{app}"                 # deploy root on every host
runner = "{runner}"                 # command | elixir | systemd
{command_line}
# env_file = ".env.production"      # uploaded to <root>/shared/env with mode 0600
keep_releases = 5

[slots]                             # keep both below 32768 (outside the ephemeral range)
blue = 4001
green = 4002

[health]
path = "/health"
expect = 200
interval = 0.5                      # seconds between attempts
timeout = 2.0                       # per attempt
deadline = 60.0                     # total
start_delay = 0.0
successes = 1                       # consecutive successes required

[nginx]
upstream_file = "/etc/nginx/conf.d/{app}.bluegreen.conf"
# template = "upstream.conf.j2"     # your own Jinja2 upstream template
test_command = "nginx -t"
reload_command = "nginx -s reload"
probe_url = "http://127.0.0.1/"     # through nginx, from the host
pid_file = "/run/nginx.pid"

[switch]
drain_timeout = 30.0
retire = true                       # false keeps the old slot warm for an instant rollback

[targets.local]                     # this machine, no SSH

# [targets.production]
# hosts = ["deploy@app1.example.com", "deploy@app2.example.com:2222"]
# parallel = 10
# host_key_policy = "strict"        # or "accept-new"
"""


def write_config(directory: Path, app: str, runner: str, *, force: bool) -> Path:
    if not NAME_RE.match(app):
        raise ConfigError(f"--app must match [a-z][a-z0-9_-]*, got {app!r}")
    if runner not in RUNNERS:
        raise ConfigError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    path = directory / CONFIG_NAME
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    command_line = (
        'command = "bin/server"              # run in the release dir with PORT set'
        if runner == "command"
        else f'# release_name = "{app}"          # bin/<release_name> in the release'
    )
    path.write_text(TEMPLATE.format(app=app, runner=runner, command_line=command_line))
    return path
