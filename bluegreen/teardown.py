"""`bg remove`, the engine half: who in nginx still uses the app's upstream, the 503 stand-in
that keeps such a site valid, and the scripts that take the upstream file out of nginx and
remove what `bg setup` made, with what their runs mean (:func:`read_removal`).

What "traffic is live" means here: a file of nginx's configuration other than bg's own
upstream file names the upstream, the variables or the log formats that file defines (a
site's ``proxy_pass http://hello_live``, ``add_header X-BG-Slot $hello_slot``,
``access_log ... hello_bg``). Removing the
upstream file under such a site would break ``nginx -t`` for every site on that nginx,
so that is refused, or with ``--force`` the file becomes a stand-in that answers 503.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bluegreen.config import Config
from bluegreen.errors import SwitchError
from bluegreen.facts.check import dump_command
from bluegreen.facts.drain import parse_old_workers, reload_script
from bluegreen.host import CommandResult, Host, check
from bluegreen.layout import Layout
from bluegreen.runners import runner_for
from bluegreen.shell import ScriptExit, lines, q

NOT_RELOADED = "not-reloaded"  # nginx_script: the reload failed (nginx not running?)

_UPSTREAM = re.compile(r"^\s*upstream\s+([A-Za-z0-9_]+)\s*\{", re.M)
_VARIABLE = re.compile(r"^\s*map\s+\S+\s+\$([A-Za-z0-9_]+)\s*\{", re.M)
# The whole directive, kept verbatim in the stand-in (a quoted part may hold ';').
_LOG_FORMAT = re.compile(
    r"""^[ \t]*(log_format\s+([A-Za-z0-9_]+)(?:[^;'"]|'[^']*'|"[^"]*")*;)""", re.M)
_FILE = re.compile(r"^# configuration file (.+):$")


def defined_names(upstream: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(upstream names, variable names) bg's upstream file defines."""
    text = upstream or ""
    return tuple(_UPSTREAM.findall(text)), tuple(_VARIABLE.findall(text))


def defined_formats(upstream: str | None) -> dict[str, str]:
    """log format name -> its ``log_format`` directive, as bg's upstream file defines them
    (bg's site logs in the app's: ``access_log ... <ident>_bg``)."""
    return {m.group(2): m.group(1) for m in _LOG_FORMAT.finditer(upstream or "")}


def references_script(config: Config, names: Sequence[str]) -> str | None:
    """nginx's configuration (``nginx -T``), only the file markers and the lines naming one of
    ``names``; None when no ``-T`` follows from the test command or there is nothing to
    look for."""
    dump = dump_command(config.nginx.test_command)
    if dump is None or not names:
        return None
    pattern = "^# configuration file |" + "|".join(re.escape(n) for n in names)
    return f"({dump}) 2>/dev/null | grep -E {q(pattern)}; true"


def parse_references(output: str, upstreams: Sequence[str], variables: Sequence[str],
                     upstream_file: str) -> dict[str, list[str]]:
    """file -> the names it uses, for every file but bg's upstream file (comments ignored)."""
    wanted = [(n, re.compile(rf"(?<![A-Za-z0-9_$]){re.escape(n)}(?![A-Za-z0-9_])"))
              for n in upstreams]
    wanted += [("$" + v, re.compile(rf"\$\{{?{re.escape(v)}(?![A-Za-z0-9_])")) for v in variables]
    found: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        m = _FILE.match(line)
        if m:
            current = m.group(1)
            continue
        if current == upstream_file:
            continue
        code = line.split("#", 1)[0]
        for name, rx in wanted:
            if rx.search(code) and name not in found.setdefault(current, []):
                found[current].append(name)
    return {f: n for f, n in found.items() if n}


def stand_in(config: Config, upstreams: Sequence[str], variables: Sequence[str],
             formats: Mapping[str, str]) -> str:
    """An upstream file that keeps every name a site uses defined (the log formats as they
    were: a site still logs in them) and answers 503 (from a loopback server on the app's
    probe port, which the removed file held)."""
    port = config.nginx.probe_port
    out = [f"# Left by `bg remove --force`: {config.app.name} was removed while a site still",
           "# used it. Remove that site from nginx, then run `bg remove` again to delete this.",
           *(f"upstream {u} {{ server 127.0.0.1:{port}; }}" for u in upstreams)]
    out += [f'map "" ${v} {{ default "removed"; }}' for v in variables]
    out += list(formats.values())
    out += ["server {", f"    listen 127.0.0.1:{port};", "    access_log off;",
            "    default_type text/plain;",
            f'    return 503 "{config.app.name} was removed\\n";', "}", ""]
    return "\n".join(out)


def nginx_script(config: Config, content: str | None) -> str:
    """Replace the upstream file by ``content`` (None: remove it), test nginx's configuration
    and reload; a failed test puts the file back byte for byte and exits NGINX_TEST_FAILED
    with nginx's words. A reload that fails (nginx not running) is reported, not fatal."""
    live = config.nginx.upstream_file
    d, name = posixpath.split(live)
    held = q(f"{d}/.{name}.bg-remove")
    change = (f"printf '%s' {q(content)} > {q(live + '.bg-tmp')} && mv -f {q(live + '.bg-tmp')}"
              f" {q(live)}" if content is not None else f"rm -f {q(live)}")
    return f"""if [ -f {q(live)} ]; then cp -p {q(live)} {held} || exit 1; fi
{change} || {{ echo 'changing the upstream file failed'; exit 1; }}
rc=0; out=$( ({config.nginx.test_command}) 2>&1 ) || rc=$?
if [ $rc -ne 0 ]; then
  if [ -f {held} ]; then mv -f {held} {q(live)}; fi
  printf '%s\\n' "$out"
  exit {ScriptExit.NGINX_TEST_FAILED}
fi
rm -f {held}
if (
{reload_script(config)}
); then echo reloaded; else echo {NOT_RELOADED}; fi"""


@dataclass(frozen=True)
class Removal:
    """What :func:`nginx_script` did: nginx's old workers to drain, and whether it reloaded."""

    old_workers: list[int]
    reloaded: bool


def read_removal(result: CommandResult, host: Host, config: Config) -> Removal:
    """:func:`nginx_script`'s run: nginx rejected its configuration without the file
    (SwitchError: the file was put back), or what it did (HostError: it failed otherwise)."""
    if result.exit_code == ScriptExit.NGINX_TEST_FAILED:
        raise SwitchError(
            f"{host.name}: nginx rejects its configuration without {config.nginx.upstream_file};"
            " the file was put back", detail=result.output,
            hint="an include that names the file itself? remove it, then run bg remove again")
    check(result, "taking the upstream out of nginx", host)
    return Removal(parse_old_workers(result.stdout), NOT_RELOADED not in result.stdout)


def removed_paths(paths: Layout, *, purge: bool) -> tuple[str, ...]:
    """What `bg setup` and the operations made, except (without ``purge``) the releases with
    their marks of having gone live, the slots' logs and the journal. The root directory
    itself always stays (it may be the deploy user's only writable place). The nginx master
    bg remembered (:mod:`bluegreen.mastercache`) is a cache: it goes too."""
    made = (paths.slots_dir, paths.shared, paths.run, paths.uploads, paths.state,
            paths.master_cache)
    return made + ((paths.releases, paths.logs, paths.bg) if purge else ())


def files_script(config: Config, paths: Layout, *, purge: bool) -> str:
    """Remove :func:`removed_paths` (the lock directory goes with the session's release)."""
    keep_lock = [p for p in removed_paths(paths, purge=purge) if p != paths.bg]
    parts = [f"rm -rf {' '.join(q(p) for p in keep_lock)}"]
    parts.append(runner_for(config).teardown_script())  # what its setup installed
    return lines(*parts)


def purge_script(paths: Layout) -> str:
    """Last, after the lock's release: bg's own directory, journal included."""
    return f"rm -rf {q(paths.bg)}"
