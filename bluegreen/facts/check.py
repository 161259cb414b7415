"""`bg check`, the engine half: one script that gathers what a host looks like (one round
trip), and pure functions that judge its output. ``ops/check.py`` runs them per host.

The script prints sections in the one protocol (:mod:`bluegreen.facts.sections`);
:func:`evaluate` turns them into one :class:`CheckLine` per check.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any

from bluegreen import asroot, coexist
from bluegreen.config import Config
from bluegreen.facts import listeners
from bluegreen.facts.checkmaster import master
from bluegreen.facts.sections import Sections, header, split
from bluegreen.facts.upstream import dump_command as dump_command
from bluegreen.layout import Layout
from bluegreen.runners.base import leftover_script, parse_leftovers
from bluegreen.shell import q

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
# Free space wanted for one more release when none is there yet to measure.
MIN_FREE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class CheckLine:
    host: str
    name: str
    status: str  # ok | fail | warn | skip
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "check": self.name, "status": self.status,
                "detail": self.detail, "hint": self.hint}


def nginx_binary(test_command: str) -> str:
    words = shlex.split(test_command)
    while words and (words[0] in ("sudo", "env", "exec") or "=" in words[0]):
        words.pop(0)
    return words[0] if words else "nginx"


def leftovers_of(config: Config, slot: str, port: int) -> str:
    """Processes a stopped slot left running (its session, or its port from the app's root)."""
    from bluegreen.runners import runner_for

    paths = Layout(config.app.root)
    return leftover_script(runner_for(config).alive_script(slot), paths.pid(slot), port,
                           paths.root, slot)


def host_script(config: Config, marker: str) -> str:
    """Everything `bg check` needs from one host, in one script that changes nothing
    (a temporary file proves the root writable and is removed at once). Sections in the
    one protocol (:mod:`bluegreen.facts.sections`), read by :func:`evaluate`."""
    n = config.nginx
    paths = Layout(config.app.root)
    binary = nginx_binary(n.test_command)
    dump = dump_command(n.test_command)
    # A bare name is looked for as bg runs it: on the PATH, then in the sbin directories.
    find = asroot.find_script() if binary == "nginx" else f"command -v {q(binary)}"
    parts: list[tuple[str, str]] = [
        ("nginx-bin", f"{find} || echo missing"),
        ("nginx-test", f"out=$( ({asroot.command(n.test_command)}) 2>&1 ); "
         "echo \"rc=$?\"; printf '%s\\n' \"$out\" | tail -n 5"),
        ("sudo", asroot.check_script(n.test_command, n.reload_command)),
        ("pid-file", f"p=$(tr -dc 0-9 < {q(n.pid_file)} 2>/dev/null); echo \"pid=$p\"; "
         "[ -n \"$p\" ] && tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null; echo"),
        ("masters", "ps -eo pid=,args= 2>/dev/null | grep '[n]ginx: master' || true"),
    ]
    if dump is not None:
        # Only what the checks read: file markers and include/pid/listen directives.
        parts.append(("dump", f"({asroot.command(dump)}) 2>/dev/null | grep -E "
                      "'^# configuration file |(^|[{;[:space:]])"
                      "(include|pid|listen|access_log)[[:space:]]'"))
    parts += coexist.host_scripts(config, asroot.command(dump) if dump else None)
    parts += [(f"port-{slot}", f"{listeners.bg_pid_script(paths.pid(slot))}\n"
               f"{listeners.script(port)}") for slot, port in config.slots.items()]
    parts += [(f"leftover-{slot}", f"( {leftovers_of(config, slot, port)}\n)")
              for slot, port in config.slots.items()]
    parts += [("probe-port", listeners.script(n.probe_port)),
              ("root", _root_script(config.app.root, paths.releases)),
              ("lock", f"if [ -d {q(paths.lock)} ]; then echo held; "
               f"cat {q(paths.lock)}/holder.json 2>/dev/null; echo; fi"),
              ("upstream-file", f"if [ -e {q(n.upstream_file)} ]; then echo present;"
               " else echo missing; fi")]
    return "set +e\n" + "\n".join(f"{header(marker, name)}\n{body}"
                                   for name, body in parts) + "\n"


def _root_script(root: str, releases: str) -> str:
    """The app root's nearest existing directory, writable or not, and its free space."""
    return f"""d={q(root)}
while [ ! -e "$d" ]; do d=$(dirname "$d"); done
echo "dir $d"
if t=$(mktemp -p "$d" .bg-check.XXXXXX 2>&1); then rm -f "$t"; echo writable; \
else echo "not-writable $t"; fi
echo "free-kb $(df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4}}')"
echo "largest-kb $(du -sk {q(releases)}/* 2>/dev/null | sort -n | tail -n 1 | cut -f1)\""""


def evaluate(config: Config, host: str, output: str, *, marker: str,
             local: bool) -> list[CheckLine]:
    """One line per check from :func:`host_script`'s output. Pure."""
    s = split(output, marker)
    n = config.nginx
    lines: list[CheckLine] = []

    def add(name: str, status: str, detail: str, hint: str = "") -> None:
        lines.append(CheckLine(host, name, status, detail, hint))

    _nginx(add, s, n.test_command)
    dump = s.get("dump")
    files, includes, pid_directive, probe_listens = _read_dump(dump or [], n.probe_port)
    master(add, s, n.pid_file, pid_directive, n.test_command)
    _included(add, dump, files, includes, n.upstream_file, n.test_command)
    _access_log(add, dump, config)
    apps = coexist.bg_apps(s.get("layout"), s.get("bg-files", []))
    others = [a for a in apps if a.file != n.upstream_file and a.app != config.app.name]
    coexist.names(add, config.app.name, others)
    coexist.site(add, s.get("layout"), config)
    _slots(add, s, config, others)
    if not coexist.other_app(add, f"probe port {n.probe_port}", n.probe_port, others,
                             "give each app on this nginx its own [nginx] probe_port"):
        # Without nginx -T's files (other server blocks unknown), bg's file stands for it.
        loaded = bool(files) or any(a.file == n.upstream_file for a in apps)
        listeners.probe_port(add, s.get("probe-port", []), n.probe_port, probe_listens,
                             n.upstream_file, loaded=loaded)
    _root(add, s.get("root", []), config)
    held = s.get("lock", [])
    if held and held[0] == "held":
        add("lock free", FAIL, "held: " + " ".join(held[1:]).strip()[:200],
            "wait for the operation, or `bg lock release` if it is gone")
    else:
        add("lock free", OK, "free")
    return _before_setup(lines, s.get("upstream-file", []), n.upstream_file)


def _nginx(add: Any, s: Sections, test_command: str) -> None:
    """nginx installed, its test passing, and the sudo rule when one is needed."""
    binary = (s.get("nginx-bin") or ["missing"])[0].strip()
    if binary == "missing" or not binary:
        where = " or in " + ", ".join(asroot.SEARCH_DIRS) if asroot.is_bare(test_command) \
            else ""
        add("nginx installed", FAIL, f"{nginx_binary(test_command)} not found on PATH"
            + where, "install nginx (Debian: apt-get install nginx)")
    else:
        add("nginx installed", OK, binary)
    sudo = asroot.evaluate(s.get("sudo", []))
    test = s.get("nginx-test", [])
    rc = test[0].removeprefix("rc=") if test else "?"
    how = " (as root through sudo -n)" if sudo and asroot.is_bare(test_command) else ""
    if rc == "0":
        add("nginx -t", OK, test_command + how)
    else:
        add("nginx -t", FAIL, f"`{test_command}`{how} exited {rc}: "
            + " / ".join(test[1:])[-300:])
    if sudo is not None:
        add("sudo rule", *sudo)


def _slots(add: Any, s: Sections, config: Config, others: list[Any]) -> None:
    """Each slot's port (free or bg's) and what a stopped slot left running."""
    for slot, port in config.slots.items():
        name = f"slot {slot} port {port}"
        if not coexist.other_app(add, name, port, others, "choose other [slots] ports"):
            listeners.slot_port(add, name, s.get(f"port-{slot}", []), config.app.root)
    for slot in config.slots:
        left = parse_leftovers(s.get(f"leftover-{slot}", [])).get(slot)
        add(f"slot {slot} leftovers", FAIL if left else OK,
            f"not running, but left behind: {', '.join(left)}" if left else "none",
            "stop them (kill PID); they hold what the slot's next start needs" if left else "")


def _before_setup(lines: list[CheckLine], found: list[str], upstream: str) -> list[CheckLine]:
    """Before `bg setup` the upstream file is missing: a site that proxies to the app's
    upstream fails `nginx -t` until setup writes it, so say so where it shows."""
    if found[:1] != ["missing"]:
        return lines
    why = (f"run `bg setup`: it writes {upstream}, the upstream the site proxies to"
           " (nginx rejects the site until it exists)")
    out = []
    for line in lines:
        if line.name == "nginx -t" and line.status == FAIL:
            line = replace(line, hint=why)
        elif line.name == "upstream included" and line.status != FAIL:
            line = replace(line, status=WARN, detail=line.detail + "; the file is missing",
                           hint=why)
        elif line.name == "upstream included":
            line = replace(line, hint=line.hint + f", then {why}")
        out.append(line)
    return out


def _read_dump(dump: list[str], probe_port: int
               ) -> tuple[list[str], list[tuple[str, str]], str | None, list[str]]:
    files: list[str] = []
    includes: list[tuple[str, str]] = []  # (file it is in, pattern)
    pid: str | None = None
    probe_listens: list[str] = []  # files with a listen on the probe port
    current = ""
    for line in dump:
        m = re.match(r"^# configuration file (.+):$", line)
        if m:
            current = m.group(1)
            files.append(current)
            continue
        for statement in re.split(r"[;{}]", line):
            words = statement.split()
            if len(words) < 2:
                continue
            if words[0] == "include":
                includes.append((current, words[1]))
            elif words[0] == "pid":
                pid = words[1]
            elif words[0] == "listen" and (words[1].endswith(f":{probe_port}")
                                           or words[1] == str(probe_port)):
                probe_listens.append(current)
    return files, includes, pid, probe_listens


def _included(add: Any, dump: list[str] | None, files: list[str],
              includes: list[tuple[str, str]], upstream: str, test_command: str) -> None:
    if dump is None:
        add("upstream included", SKIP, f"cannot derive `nginx -T` from `{test_command}`")
        return
    if not files:  # nginx -T failed: the check that says why is above (nginx -t, sudo)
        add("upstream included", SKIP, "`nginx -T` printed no configuration")
        return
    if upstream in files:
        add("upstream included", OK, f"{upstream} is part of nginx's configuration")
        return
    conf_dir = posixpath.dirname(files[0]) if files else "/etc/nginx"
    for where, pattern in includes:
        full = pattern if pattern.startswith("/") else posixpath.join(conf_dir, pattern)
        if fnmatch.fnmatchcase(upstream, full):
            add("upstream included", OK, f"{upstream} matches `include {pattern};` in {where}"
                " (created by `bg setup`)")
            return
    add("upstream included", FAIL, f"no include of nginx's configuration covers {upstream}",
        f"add `include {upstream};` inside http {{ }} of nginx's configuration")


def _access_log(add: Any, dump: list[str] | None, config: Config) -> None:
    """Does the site write the log the verification window reads ([verify])?"""
    from bluegreen.accesslog import site_line

    path = config.verify.log_path(config.app.root)
    if dump is None:
        add("access log", SKIP, "cannot derive `nginx -T` to look for the site's access_log")
        return
    found = any(words[:2] == ["access_log", path]
                for line in dump for statement in re.split(r"[;{}]", line)
                if (words := statement.split()))
    if found:
        add("access log", OK, f"the site logs the app's requests to {path} (verify window)")
        return
    hint = f"add `{site_line(config.app.name, path)}` to the site's server block"
    if config.verify.window > 0:
        add("access log", WARN, f"no site writes {path}: the verification window judges by"
            " probes only", hint)
    else:
        add("access log", OK, f"no site writes {path} (needed only by [verify] window)")


def _root(add: Any, lines: list[str], config: Config) -> None:
    info = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] if " " in ln else "" for ln in lines}
    where = info.get("dir", "?")
    if "writable" in info:
        add("root writable", OK, f"{config.app.root} (checked in {where})")
    else:
        add("root writable", FAIL, f"cannot create files in {where}: "
            f"{info.get('not-writable', '').strip()[:200]}",
            f"create {config.app.root} writable by the deploy user")
        add("disk space", SKIP, "the root is not writable")
        return
    free_kb = info.get("free-kb", "").strip()
    largest_kb = info.get("largest-kb", "").strip()
    if not free_kb.isdigit():
        add("disk space", WARN, "cannot tell (df gave nothing)")
        return
    need = max(MIN_FREE_BYTES, 2 * int(largest_kb) * 1024 if largest_kb.isdigit() else 0)
    free = int(free_kb) * 1024
    status = OK if free >= need else FAIL
    add("disk space", status, f"{free // 1024**2} MiB free in {where}, want {need // 1024**2}"
        " MiB (twice the largest release, at least 256)",
        "" if status == OK else "free some space or prune releases ([app] keep_releases)")
