"""`bg check`, the engine half: one script that gathers what a host looks like (one round
trip), and pure functions that judge its output. ``ops/check.py`` runs them per host.

The script prints sections, each introduced by a line ``@@ NAME``; :func:`sections` splits
them and :func:`evaluate` turns them into one :class:`CheckLine` per check.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any

from bluegreen import asroot, coexist
from bluegreen.checkmaster import master
from bluegreen.config import EPHEMERAL_LOW, Config
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


def dump_command(test_command: str) -> str | None:
    """``nginx -T`` from the configured ``nginx -t`` (same prefix and -c); None if unknown."""
    words = shlex.split(test_command)
    if "-t" not in words:
        return None
    return shlex.join(["-T" if w == "-t" else w for w in words])


def _listeners(port: int) -> str:
    """Who listens on ``port``: "pid COMM CWD CMDLINE" per process, or "free"."""
    return f"""if ! command -v ss >/dev/null 2>&1; then echo "no-ss"; else
  pids=$(ss -Htlnp "sport = :{int(port)}" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 \
    | sort -u)
  if [ -z "$(ss -Htln "sport = :{int(port)}" 2>/dev/null)" ]; then echo free; fi
  for p in $pids; do
    echo "pid $p $(cat /proc/$p/comm 2>/dev/null) $(readlink /proc/$p/cwd 2>/dev/null)" \
      "$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)"
  done
fi"""


def leftovers_of(config: Config, slot: str, port: int) -> str:
    """Processes a stopped slot left running (its session, or its port from the app's root)."""
    from bluegreen.runners import runner_for

    paths = Layout(config.app.root)
    return leftover_script(runner_for(config).alive_script(slot), paths.pid(slot), port,
                           paths.root, slot)


def host_script(config: Config) -> str:
    """Everything `bg check` needs from one host, in one script that changes nothing
    (a temporary file proves the root writable and is removed at once)."""
    n = config.nginx
    paths = Layout(config.app.root)
    binary = nginx_binary(n.test_command)
    # A bare name is looked for as bg runs it: on the PATH, then in the sbin directories.
    find = asroot.find_script() if binary == "nginx" else f"command -v {q(binary)}"
    parts = [
        "set +e",
        f"echo '@@ nginx-bin'; {find} || echo missing",
        f"echo '@@ nginx-test'; out=$( ({asroot.command(n.test_command)}) 2>&1 ); "
        "echo \"rc=$?\"; printf '%s\\n' \"$out\" | tail -n 5",
        asroot.check_script(n.test_command, n.reload_command),
        f"echo '@@ pid-file'; p=$(tr -dc 0-9 < {q(n.pid_file)} 2>/dev/null); echo \"pid=$p\"; "
        "[ -n \"$p\" ] && tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null; echo",
        "echo '@@ masters'; ps -eo pid=,args= 2>/dev/null | grep '[n]ginx: master' || true",
    ]
    dump = dump_command(n.test_command)
    if dump is not None:
        # Only what the checks read: file markers and include/pid/listen directives.
        parts.append(f"echo '@@ dump'; ({asroot.command(dump)}) 2>/dev/null | grep -E "
                     "'^# configuration file |(^|[{;[:space:]])"
                     "(include|pid|listen|access_log)[[:space:]]'")
    parts.append(coexist.host_script(config, asroot.command(dump) if dump else None))
    for slot, port in config.slots.items():
        parts.append(f"echo '@@ port-{slot}'; echo \"bgpid $(cat {q(paths.pid(slot))} "
                     f"2>/dev/null)\"; {_listeners(port)}")
    parts += [f"echo '@@ leftover-{slot}'; ( {leftovers_of(config, slot, port)}\n)"
              for slot, port in config.slots.items()]
    parts.append(f"echo '@@ probe-port'; {_listeners(n.probe_port)}")
    parts.append(f"""echo '@@ root'; d={q(config.app.root)}
while [ ! -e "$d" ]; do d=$(dirname "$d"); done
echo "dir $d"
if t=$(mktemp -p "$d" .bg-check.XXXXXX 2>&1); then rm -f "$t"; echo writable; \
else echo "not-writable $t"; fi
echo "free-kb $(df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4}}')"
echo "largest-kb $(du -sk {q(paths.releases)}/* 2>/dev/null | sort -n | tail -n 1 | cut -f1)\"""")
    parts.append(f"echo '@@ lock'; if [ -d {q(paths.lock)} ]; then echo held; "
                 f"cat {q(paths.lock)}/holder.json 2>/dev/null; echo; fi")
    parts.append(f"echo '@@ upstream-file'; if [ -e {q(n.upstream_file)} ]; then echo present;"
                 " else echo missing; fi")
    return "\n".join(parts) + "\n"


def sections(output: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@@ "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def evaluate(config: Config, host: str, output: str, *, local: bool) -> list[CheckLine]:
    """One line per check from :func:`host_script`'s output. Pure."""
    s = sections(output)
    n = config.nginx
    lines: list[CheckLine] = []

    def add(name: str, status: str, detail: str, hint: str = "") -> None:
        lines.append(CheckLine(host, name, status, detail, hint))

    binary = (s.get("nginx-bin") or ["missing"])[0].strip()
    if binary == "missing" or not binary:
        where = " or in " + ", ".join(asroot.SEARCH_DIRS) if asroot.is_bare(n.test_command) \
            else ""
        add("nginx installed", FAIL, f"{nginx_binary(n.test_command)} not found on PATH"
            + where, "install nginx (Debian: apt-get install nginx)")
    else:
        add("nginx installed", OK, binary)
    sudo = asroot.evaluate(s.get("sudo", []))
    test = s.get("nginx-test", [])
    rc = test[0].removeprefix("rc=") if test else "?"
    how = " (as root through sudo -n)" if sudo and asroot.is_bare(n.test_command) else ""
    if rc == "0":
        add("nginx -t", OK, n.test_command + how)
    else:
        add("nginx -t", FAIL, f"`{n.test_command}`{how} exited {rc}: "
            + " / ".join(test[1:])[-300:])
    if sudo is not None:
        add("sudo rule", *sudo)

    dump = s.get("dump")
    files, includes, pid_directive, probe_listens = _read_dump(dump or [], n.probe_port)
    master(add, s, n.pid_file, pid_directive, n.test_command)
    _included(add, dump, files, includes, n.upstream_file, n.test_command)
    _access_log(add, dump, config)
    apps = coexist.bg_apps(s.get("layout"), s.get("bg-files", []))
    others = [a for a in apps if a.file != n.upstream_file and a.app != config.app.name]
    coexist.names(add, config.app.name, others)
    coexist.site(add, s.get("layout"), config)
    for slot, port in config.slots.items():
        name = f"slot {slot} port {port}"
        if not coexist.other_app(add, name, port, others, "choose other [slots] ports"):
            _port(add, name, s.get(f"port-{slot}", []), config.app.root, slot_pid=True)
    for slot in config.slots:
        left = parse_leftovers(s.get(f"leftover-{slot}", [])).get(slot)
        add(f"slot {slot} leftovers", FAIL if left else OK,
            f"not running, but left behind: {', '.join(left)}" if left else "none",
            "stop them (kill PID); they hold what the slot's next start needs" if left else "")
    if not coexist.other_app(add, f"probe port {n.probe_port}", n.probe_port, others,
                             "give each app on this nginx its own [nginx] probe_port"):
        # Without nginx -T's files (other server blocks unknown), bg's file stands for it.
        loaded = bool(files) or any(a.file == n.upstream_file for a in apps)
        _probe(add, s.get("probe-port", []), n.probe_port, probe_listens, n.upstream_file,
               loaded=loaded)
    _root(add, s.get("root", []), config)
    held = s.get("lock", [])
    if held and held[0] == "held":
        add("lock free", FAIL, "held: " + " ".join(held[1:]).strip()[:200],
            "wait for the operation, or `bg lock release` if it is gone")
    else:
        add("lock free", OK, "free")
    return _before_setup(lines, s.get("upstream-file", []), n.upstream_file)


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


def _listener_lines(lines: list[str]) -> tuple[bool | None, list[list[str]], str]:
    """(free?, [[pid, comm, cwd, cmdline...]], bg's pid from the slot's pid file)."""
    bgpid = ""
    procs = []
    free: bool | None = False
    for line in lines:
        if line.startswith("bgpid"):
            bgpid = line.removeprefix("bgpid").strip()
        elif line == "free":
            free = True
        elif line == "no-ss":
            free = None
        elif line.startswith("pid "):
            procs.append(line.split()[1:])
    return free, procs, bgpid


def _port(add: Any, name: str, lines: list[str], root: str, *, slot_pid: bool) -> None:
    port = int(name.rsplit(" ", 1)[-1])
    free, procs, bgpid = _listener_lines(lines)
    warn = port >= EPHEMERAL_LOW
    if free is None:
        add(name, WARN, "cannot tell (no `ss` on the host)")
        return
    if free:
        add(name, WARN if warn else OK, "free" + (" (in the ephemeral range)" if warn else ""))
        return
    others = [p for p in procs
              if not (p[0] == bgpid or any(w.startswith(root + "/") or w == root
                                           for w in p[2:]))]
    if not others:
        add(name, OK, "in use by bg's slot" + (f" (pid {bgpid})" if bgpid else ""))
        return
    who = ", ".join(f"{p[1] if len(p) > 1 else '?'} (pid {p[0]})" for p in others) or "?"
    add(name, FAIL, f"taken by {who}, not started by bg",
        "stop that process or choose other [slots] ports")


def _probe(add: Any, lines: list[str], port: int, listens: list[str], upstream: str, *,
           loaded: bool = True) -> None:
    name = f"probe port {port}"
    others = sorted({f for f in listens if f != upstream})
    if others:
        add(name, FAIL, f"another nginx server listens on it ({', '.join(others)})",
            "give each app on this nginx its own [nginx] probe_port")
        return
    free, procs, _ = _listener_lines(lines)
    if free is None:
        add(name, WARN, "cannot tell (no `ss` on the host)")
    elif free:
        add(name, OK, "free (nginx listens on it once the upstream file is loaded)")
    elif all(len(p) > 1 and p[1] == "nginx" for p in procs) and not loaded:
        add(name, FAIL, f"nginx listens on it, but not for bg's probe server ({upstream} is"
            " not loaded yet): another server block has it",
            "set [nginx] probe_port to a port nothing listens on")
    elif all(len(p) > 1 and p[1] == "nginx" for p in procs):
        add(name, OK, "nginx's (bg's probe server)")
    else:
        who = ", ".join(f"{p[1] if len(p) > 1 else '?'} (pid {p[0]})" for p in procs)
        add(name, FAIL, f"taken by {who}", "set [nginx] probe_port to a free port")


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
