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
from dataclasses import dataclass
from typing import Any

from bluegreen.config import EPHEMERAL_LOW, Config
from bluegreen.layout import Layout
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


def host_script(config: Config) -> str:
    """Everything `bg check` needs from one host, in one script that changes nothing
    (a temporary file proves the root writable and is removed at once)."""
    n = config.nginx
    paths = Layout(config.app.root)
    parts = [
        "set +e",
        f"echo '@@ nginx-bin'; command -v {q(nginx_binary(n.test_command))} || echo missing",
        f"echo '@@ nginx-test'; out=$( ({n.test_command}) 2>&1 ); echo \"rc=$?\"; "
        "printf '%s\\n' \"$out\" | tail -n 5",
        f"echo '@@ pid-file'; p=$(tr -dc 0-9 < {q(n.pid_file)} 2>/dev/null); echo \"pid=$p\"; "
        "[ -n \"$p\" ] && tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null; echo",
        "echo '@@ masters'; ps -eo pid=,args= 2>/dev/null | grep '[n]ginx: master' || true",
    ]
    dump = dump_command(n.test_command)
    if dump is not None:
        # Only what the checks read: file markers and include/pid/listen directives.
        parts.append(f"echo '@@ dump'; ({dump}) 2>/dev/null | grep -E "
                     "'^# configuration file |(^|[{;[:space:]])"
                     "(include|pid|listen|access_log)[[:space:]]'")
    for slot, port in config.slots.items():
        parts.append(f"echo '@@ port-{slot}'; echo \"bgpid $(cat {q(paths.pid(slot))} "
                     f"2>/dev/null)\"; {_listeners(port)}")
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
        add("nginx installed", FAIL, f"{nginx_binary(n.test_command)} not found on PATH",
            "install nginx (Debian: apt-get install nginx)")
    else:
        add("nginx installed", OK, binary)
    test = s.get("nginx-test", [])
    rc = test[0].removeprefix("rc=") if test else "?"
    if rc == "0":
        add("nginx -t", OK, n.test_command)
    else:
        add("nginx -t", FAIL, f"`{n.test_command}` exited {rc}: " + " / ".join(test[1:])[-300:])

    dump = s.get("dump")
    files, includes, pid_directive, probe_listens = _read_dump(dump or [], n.probe_port)
    _master(add, s, n.pid_file, pid_directive)
    _included(add, dump, files, includes, n.upstream_file, n.test_command)
    _access_log(add, dump, config)
    for slot, port in config.slots.items():
        _port(add, f"slot {slot} port {port}", s.get(f"port-{slot}", []), config.app.root,
              slot_pid=True)
    _probe(add, s.get("probe-port", []), n.probe_port, probe_listens, n.upstream_file)
    _root(add, s.get("root", []), config)
    held = s.get("lock", [])
    if held and held[0] == "held":
        add("lock free", FAIL, "held: " + " ".join(held[1:]).strip()[:200],
            "wait for the operation, or `bg lock release` if it is gone")
    else:
        add("lock free", OK, "free")
    return lines


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


def _master(add: Any, s: dict[str, list[str]], pid_file: str, pid_directive: str | None
            ) -> None:
    lines = s.get("pid-file", [])
    pid = lines[0].removeprefix("pid=") if lines else ""
    cmdline = " ".join(lines[1:])
    if pid and "nginx" in cmdline and "master" in cmdline:
        add("nginx master", OK, f"pid {pid}, found by the pid file {pid_file}")
        return
    masters = [m.split()[0] for m in s.get("masters", []) if m.split()]
    found = []
    if pid_directive and pid_directive != pid_file:
        found.append(f"nginx -T says `pid {pid_directive};`")
    if masters:
        found.append("the process list shows master pid(s) " + ", ".join(masters))
    why = "is missing or empty" if not pid else f"names pid {pid}, not a running nginx master"
    hint = (f"set [nginx] pid_file = \"{pid_directive}\"" if pid_directive
            else "set [nginx] pid_file to the `pid` of nginx's configuration")
    add("nginx master", FAIL, f"pid file {pid_file} {why}"
        + (f"; {'; '.join(found)}" if found else "; no nginx master running"), hint)


def _included(add: Any, dump: list[str] | None, files: list[str],
              includes: list[tuple[str, str]], upstream: str, test_command: str) -> None:
    if dump is None:
        add("upstream included", SKIP, f"cannot derive `nginx -T` from `{test_command}`")
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


def _probe(add: Any, lines: list[str], port: int, listens: list[str], upstream: str) -> None:
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
