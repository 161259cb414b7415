"""`bg check`'s lines about what an app shares one nginx with: its site's server blocks
(shadowed by another block? :mod:`bluegreen.sites`), and other bg apps' ports and nginx
names (from the upstream files bg wrote for them, :mod:`bluegreen.ports`)."""

from __future__ import annotations

import posixpath
from typing import Any

from bluegreen import ports, sites
from bluegreen.config import Config
from bluegreen.nginxconf import nginx_ident

OK, FAIL, SKIP = "ok", "fail", "skip"


def host_scripts(config: Config, dump: str | None) -> list[tuple[str, str]]:
    """Sections ``layout`` (nginx -T's server blocks, when ``dump`` is known) and
    ``bg-files`` (bg's upstream files beside this app's, readable without root)."""
    layout = [("layout", f"({dump}) 2>/dev/null | {sites.DUMP_FILTER}")] if dump else []
    directory = posixpath.dirname(config.nginx.upstream_file)
    return [*layout, ("bg-files", ports.bg_files_script(directory))]


def bg_apps(layout: list[str] | None, files: list[str]) -> list[ports.BgApp]:
    """bg's upstream files on the host: in nginx's configuration, and beside ours."""
    found = {a.file: a for a in ports.parse_bg_files(files)}
    for path, text in sites.file_texts("\n".join(layout or [])).items():
        app = ports.read_bg_file(path, text)
        if app is not None:
            found[path] = app
    return list(found.values())


def names(add: Any, app: str, others: list[ports.BgApp]) -> None:
    ident = nginx_ident(app)
    clash = [o for o in others if nginx_ident(o.app) == ident]
    if clash:
        add("nginx names", FAIL, f"app {clash[0].app!r} ({clash[0].file}) defines the same"
            f" upstream {ident}_live and ${ident}_slot",
            "rename one of the apps (nginx names turn - and . into _)")
    else:
        add("nginx names", OK, f"upstream {ident}_live, ${ident}_slot")


def site(add: Any, layout: list[str] | None, config: Config) -> None:
    if layout is None:
        add("site", SKIP, f"cannot derive `nginx -T` from `{config.nginx.test_command}`")
        return
    blocks = sites.parse("\n".join(layout))
    if not blocks:
        add("site", SKIP, "`nginx -T` printed no server block")
        return
    v = sites.judge(blocks, nginx_ident(config.app.name), config.nginx.probe_url)
    add("site", v.status, v.detail, v.hint)


def other_app(add: Any, name: str, port: int, others: list[ports.BgApp], hint: str) -> bool:
    """Fail ``name`` when another bg app's upstream file uses ``port``."""
    owner = next((o for o in others if port in o.ports), None)
    if owner is None:
        return False
    add(name, FAIL, f"used by bg app {owner.app!r} (its upstream file {owner.file})",
        hint + " (`bg init` picks ports no other app uses)")
    return True
