"""What a host really has, read in one round trip: recorded state, the live nginx upstream
file (and a backup left by an interrupted switch), what each slot points at and whether
its process runs, and whether a release is already there.

Operations reconcile the recorded state with this before acting (``ops/reconcile.py``),
so a crash between "nginx switched" and "state recorded" can never make bg take the slot
nginx serves for the idle one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from bluegreen.config import SLOTS
from bluegreen.facts.sections import header, new_marker, split
from bluegreen.layout import Layout
from bluegreen.releases import probe_script
from bluegreen.runners.base import parse_leftovers
from bluegreen.shell import cat_file, q

__all__ = ["Observation", "new_marker", "nginx_test_script", "observe_script", "parse_observation",
           "printed"]


@dataclass(frozen=True)
class Observation:
    state_raw: str = ""
    upstream: str | None = None  # the live upstream file, None when absent
    backup: str | None = None  # left by a switch that never finished, None when absent
    links: Mapping[str, str | None] = field(default_factory=dict)  # slot -> release dir name
    alive: Mapping[str, bool] = field(default_factory=dict)
    release_sha: str = ""
    env_sha: str = ""  # sha256 of shared/env ("" when absent): re-upload only on change
    lock: str | None = None  # the lock holder's JSON, None when unlocked
    nginx_error: str | None = None  # nginx's configuration as it is fails its test: why
    # slot -> "COMM (pid N)" of processes a stopped slot left running (status only)
    leftovers: Mapping[str, list[str]] = field(default_factory=dict)


def observe_script(
    paths: Layout,
    marker: str,
    *,
    upstream_file: str | None,
    backup_file: str | None,
    alive_scripts: Mapping[str, str],
    version: str | None = None,
    nginx_test: str | None = None,
    leftover_scripts: Mapping[str, str] | None = None,
) -> str:
    """Read-only: prints each section after ``<marker> <name>``. ``nginx_test``: also run
    nginx's test command on the configuration as it is (before an operation changes it)."""
    def head(name: str) -> str:
        return header(marker, name)

    # `cat FILE && echo` (in builtins): the echo ends the file's last line, so the next
    # marker always starts a line of its own; an absent file prints nothing at all.
    parts = [head("state"), f"{cat_file(paths.state)} && echo"]
    if upstream_file:
        parts += [head("upstream"), f"{cat_file(upstream_file)} && echo"]
    if backup_file:
        parts += [head("backup"), f"{cat_file(backup_file)} && echo"]
    parts += [head("links"), _links_script(paths)]
    parts.append(head("alive"))
    for slot, script in alive_scripts.items():
        parts.append(f"( {script}\n) >/dev/null 2>&1 && echo {slot}")
    if version is not None:
        parts += [head("release"), probe_script(paths, version)]
    env = q(paths.env_file)
    parts += [head("env"), f"[ ! -f {env} ] || sha256sum {env} 2>/dev/null"
                           " | { read -r h _ && echo \"$h\"; }"]
    parts += [head("lock"), f"{cat_file(paths.lock + '/holder.json')} && echo"]
    if nginx_test is not None:
        parts.append(nginx_test_script(marker, nginx_test))
    if leftover_scripts:
        parts += [head("leftover"), *(f"( {s}\n) 2>/dev/null" for s in leftover_scripts.values())]
    parts.append("true")
    return "\n".join(parts)


def _links_script(paths: Layout) -> str:
    """``<slot> <its link's target>`` per slot (the target empty when there is no link),
    from one ``ls -lnd`` (POSIX: ``name -> target``) instead of a ``readlink`` per slot:
    one fork and exec fewer in every lock and status round trip (~1 ms)."""
    slots = posixpath.dirname(paths.slot(SLOTS[0]))
    return (f"bg_ls=$(cd {q(slots)} 2>/dev/null && exec ls -lnd {' '.join(SLOTS)} 2>/dev/null)\n"
            f"for bg_s in {' '.join(SLOTS)}; do\n"
            "  bg_t=\n"
            "  case \"$bg_ls\" in *\" $bg_s -> \"*) bg_t=${bg_ls#*\" $bg_s -> \"};"
            " bg_t=${bg_t%%'\n'*};; esac\n"
            "  printf '%s %s\\n' \"$bg_s\" \"$bg_t\"\n"
            "done")


def nginx_test_script(marker: str, command: str) -> str:
    """The ``nginx-test`` section: ``command`` run on nginx's configuration as it is (its
    verdict is :attr:`Observation.nginx_error`)."""
    return (f"{header(marker, 'nginx-test')}\nbg_t=$( ({command}) 2>&1 ); echo \"rc=$?\";"
            " printf '%s\\n' \"$bg_t\" | tail -n 5")


def parse_observation(stdout: str, marker: str) -> Observation:
    sections = split(stdout, marker)

    def text(name: str) -> str | None:
        if name not in sections:
            return None
        if not sections[name]:
            return None
        return "\n".join(sections[name])

    links: dict[str, str | None] = {}
    for line in sections.get("links", []):
        slot, _, target = line.partition(" ")
        if slot in SLOTS:
            links[slot] = target.rstrip("/").rsplit("/", 1)[-1] or None
    alive = {slot: slot in sections.get("alive", []) for slot in SLOTS}
    return Observation(
        state_raw=text("state") or "",
        upstream=text("upstream"),
        backup=text("backup"),
        links=links,
        alive=alive,
        release_sha="".join(sections.get("release", [])).strip(),
        env_sha="".join(sections.get("env", [])).strip(),
        lock=text("lock"),
        nginx_error=_nginx_error(sections.get("nginx-test")),
        leftovers=parse_leftovers(sections.get("leftover", [])),
    )


SECTIONS = ("state", "upstream", "backup", "links", "alive", "release", "env", "lock")


def printed(obs: Observation, marker: str, asked: Collection[str] = SECTIONS) -> str:
    """What :func:`observe_script` prints on a host that has ``obs`` (the sections in
    ``asked``): its parser's inverse, for the fake host of the unit tests, so the format
    is written here only. A file's text is printed as the file holds it, then a newline."""
    def file(text: str | None) -> str:
        return "" if text is None else text + "\n"

    bodies = {
        "state": file(obs.state_raw or None),
        "upstream": file(obs.upstream),
        "backup": file(obs.backup),
        "links": "".join(f"{slot} {'../releases/' + t if (t := obs.links.get(slot)) else ''}\n"
                         for slot in SLOTS),
        "alive": "".join(f"{slot}\n" for slot in SLOTS if obs.alive.get(slot)),
        "release": file(obs.release_sha or None),
        "env": file(obs.env_sha or None),
        "lock": file(obs.lock),
    }
    return "".join(f"{marker} {name}\n{bodies[name]}" for name in SECTIONS if name in asked)


def _nginx_error(lines: list[str] | None) -> str | None:
    """What nginx said when its test failed; None when it passed (or did not run)."""
    if not lines or lines[0] == "rc=0":
        return None
    said = " / ".join(line.strip() for line in lines[1:] if line.strip())
    return said or f"the test command exited {lines[0].removeprefix('rc=')}"
