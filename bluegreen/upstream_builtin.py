"""The built-in upstream template (templates/upstream.conf.j2) rendered without Jinja2.

Every switch renders the upstream file, and importing Jinja2 and compiling the template
cost more than the rest of the rendering (about 25 ms of a `bg switch`'s start-up). The
template file stays the source users copy for ``[nginx] template`` (rendered by Jinja2 as
before); this module writes the same bytes for the built-in one, and
tests/test_upstream_builtin.py renders both across every branch of the template (canary,
sticky, weights, hosts, no probe port, no probe address) and fails on any difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_LOG_FIELDS = "\\t".join(("$msec", "$status", "$upstream_addr", "$upstream_status",
                         "$remote_addr", "$request"))


def render(*, app: str, ident: str, slot: str, port: int, version: str,
           slots: Mapping[str, int], servers: Sequence[Mapping[str, Any]], time: str,
           probe_port: int, probe_address: str | None,
           canary: Mapping[str, Any] | None) -> str:
    """What ``upstream.conf.j2`` renders from the same values."""
    out = ["# Managed by bg (bluegreen): rewritten on every switch, do not edit by hand.\n"
           f"# app={app} live={slot} version={version} port={port} at={time}"]
    if canary:
        out.append(f"\n# bg-canary slot={canary['slot']} version={canary['version']}"
                   f" percent={canary['percent']} sticky={canary['sticky']}"
                   f" since={canary['since']}")
    out.append(f"\n# slots={slots['blue']},{slots['green']} probe={probe_port}"
               " (read by `bg init` and `bg check`)\n"
               f"upstream {ident}_live {{")
    if canary and canary["sticky"]:
        out.append("\n    hash $remote_addr consistent;")
    for s in servers:
        weight = f" weight={s['weight']}" if s["weight"] else ""
        host = f"  # {s['host']}" if s["host"] else ""
        out.append(f"\n    server {s['address']}:{s['port']}{weight};{host}")
    out.append(f"""
    keepalive 16;
}}

# Which slot is live, for a site that wants to show it:
# `add_header X-BG-Slot ${ident}_slot always;` (optional: bg confirms through the probe below).
map "" ${ident}_slot {{
    default "{slot}";
}}
map "" ${ident}_version {{
    default "{version}";
}}

# The app's requests as bg's verification window reads them (after a deploy's switch):
# bg's site logs to <app.root>/logs/nginx-access.log in this format.
log_format {ident}_bg '{_LOG_FIELDS}';
""")
    if probe_port:
        out.append(_probe_server(app, ident, slot, probe_port, probe_address))
    out.append("\n")
    return "".join(out)


def _probe_server(app: str, ident: str, slot: str, probe_port: int,
                  probe_address: str | None) -> str:
    second = f"\n    listen {probe_address}:{probe_port};" if probe_address else ""
    return f"""

# bg's probe: after a reload, bg asks this loopback-only server which slot the new
# workers send traffic to, so your own site needs no change. One port per app on this
# nginx ([nginx] probe_port). The second address is this slot's own: only the workers of
# this configuration listen there, so bg hears from them at once after a reload.
server {{
    listen 127.0.0.1:{probe_port};{second}
    access_log off;
    location / {{
        proxy_pass http://{ident}_live;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_connect_timeout 2s;
        add_header X-BG-App "{app}" always;
        add_header X-BG-Slot "{slot}" always;
        add_header X-BG-Upstream $upstream_addr always;
    }}
}}
"""
