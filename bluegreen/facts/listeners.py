"""Who listens on a port (``ss`` and /proc), read back and judged for `bg check`: a slot's
port and nginx's probe port. The script's line format is read only here."""

from __future__ import annotations

from typing import Any

from bluegreen.config import EPHEMERAL_LOW
from bluegreen.shell import q

OK, FAIL, WARN = "ok", "fail", "warn"  # as bluegreen.facts.check names them


def script(port: int) -> str:
    """Who listens on ``port``: "pid PID COMM CWD CMDLINE" per process, "free", or "no-ss"."""
    return f"""if ! command -v ss >/dev/null 2>&1; then echo "no-ss"; else
  pids=$(ss -Htlnp "sport = :{int(port)}" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 \
    | sort -u)
  if [ -z "$(ss -Htln "sport = :{int(port)}" 2>/dev/null)" ]; then echo free; fi
  for p in $pids; do
    echo "pid $p $(cat /proc/$p/comm 2>/dev/null) $(readlink /proc/$p/cwd 2>/dev/null)" \
      "$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)"
  done
fi"""


def bg_pid_script(pid_file: str) -> str:
    """The pid bg recorded for a slot, as the ``bgpid`` line :func:`parse` reads."""
    return f'echo "bgpid $(cat {q(pid_file)} 2>/dev/null)"'


def parse(lines: list[str]) -> tuple[bool | None, list[list[str]], str]:
    """(free? None: cannot tell, [[pid, comm, cwd, cmdline...]], bg's pid from the slot's
    pid file)."""
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


def slot_port(add: Any, name: str, lines: list[str], root: str) -> None:
    """A slot's port: free, or held by bg's own slot (its pid, or a process in the root)."""
    port = int(name.rsplit(" ", 1)[-1])
    free, procs, bgpid = parse(lines)
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


def probe_port(add: Any, lines: list[str], port: int, listens: list[str], upstream: str, *,
               loaded: bool = True) -> None:
    """nginx's probe port: free, or nginx's own for bg's probe server."""
    name = f"probe port {port}"
    others = sorted({f for f in listens if f != upstream})
    if others:
        add(name, FAIL, f"another nginx server listens on it ({', '.join(others)})",
            "give each app on this nginx its own [nginx] probe_port")
        return
    free, procs, _ = parse(lines)
    all_nginx = all(len(p) > 1 and p[1] == "nginx" for p in procs)
    if free is None:
        add(name, WARN, "cannot tell (no `ss` on the host)")
    elif free:
        add(name, OK, "free (nginx listens on it once the upstream file is loaded)")
    elif all_nginx and not loaded:
        add(name, FAIL, f"nginx listens on it, but not for bg's probe server ({upstream} is"
            " not loaded yet): another server block has it",
            "set [nginx] probe_port to a port nothing listens on")
    elif all_nginx:
        add(name, OK, "nginx's (bg's probe server)")
    else:
        who = ", ".join(f"{p[1] if len(p) > 1 else '?'} (pid {p[0]})" for p in procs)
        add(name, FAIL, f"taken by {who}", "set [nginx] probe_port to a free port")
