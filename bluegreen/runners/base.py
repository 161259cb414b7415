"""What every runner is, and the shell fragments the runners' scripts share.

Kept apart from ``bluegreen.runners`` (which picks a runner and so imports every runner
module) so that the runner modules can import these without an import cycle.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Protocol

from bluegreen.config import AppConfig
from bluegreen.layout import Layout
from bluegreen.logtail import LogSource
from bluegreen.shell import q

# `running PID` is true for a live process that is not a zombie (a late-reaping init leaves
# those behind, and `kill -0` counts them). `alive PID` also wants it to still lead the
# session bg gave it, so a reused pid is not mistaken for the slot. Both read /proc with
# shell builtins (no `ps` per check: every fork costs a deploy time); `ps` where there is
# no /proc.
SH_RUNNING = r"""
running() {
  case "$1" in ''|*[!0-9]*) return 1;; esac
  if [ -r /proc/self/stat ]; then
    { read -r bg_st < "/proc/$1/stat"; } 2>/dev/null || return 1
    bg_st=${bg_st##*) }
  else
    bg_st=$(ps -o stat= -o sid= -p "$1" 2>/dev/null) || return 1
  fi
  case "$bg_st" in ""|Z*|X*) return 1;; esac
}
"""
SH_ALIVE = SH_RUNNING + r"""
alive() {
  running "$1" || return 1
  set -- "$1" $bg_st  # /proc: state ppid pgrp session ...; ps: stat sid
  if [ -r /proc/self/stat ]; then [ "$5" = "$1" ]; else [ "$3" = "$1" ]; fi
}
"""


STOP_TICK = 0.02  # seconds between two looks at a stopping process (builtins only)

# Hundredths of a second since boot in $bg_cs, read from /proc/uptime by a builtin (no fork);
# empty without /proc. A stop waits on this clock, not by counting sleeps: each look forks
# `sleep` and scans the session, and on a slow host (an emulated VM) a 10 s stop_timeout
# counted in 0.02 s sleeps lasted 63-84 s. The leading zeros of a sub-second uptime go (dash
# reads 050 as octal).
SH_CLOCK = r"""
bg_clock() {
  bg_cs=; { read -r bg_cs _ < /proc/uptime; } 2>/dev/null || :
  case "$bg_cs" in
    *[0-9].[0-9][0-9]) bg_cs=${bg_cs%.*}${bg_cs#*.}; bg_cs=${bg_cs#0}; bg_cs=${bg_cs#0};;
    *) bg_cs=;;
  esac
}
"""


def wait_loop(timeout: float, body: str) -> str:
    """Shell running ``body`` (which ``break``s once there is nothing left to wait for), then
    sleeping STOP_TICK, until ``timeout`` seconds of wall time have passed; counted in ticks
    where there is no /proc/uptime. Needs SH_CLOCK."""
    hundredths = max(1, round(timeout * 100))
    ticks = max(1, int(timeout / STOP_TICK))
    return f"""bg_clock; bg_end=; [ -z "$bg_cs" ] || bg_end=$((bg_cs + {hundredths}))
i=0
while :; do
{body}
  if [ -n "$bg_end" ]; then
    bg_clock; [ -n "$bg_cs" ] && [ "$bg_cs" -lt "$bg_end" ] || break
  else
    i=$((i+1)); [ $i -lt {ticks} ] || break
  fi
  sleep {STOP_TICK}
done"""


def read_pid(path: str) -> str:
    """Shell setting ``$pid`` to the first line of ``path`` (empty when unreadable)."""
    return f"pid=; {{ read -r pid < {q(path)}; }} 2>/dev/null || :"


# The address a slot binds, exported as BG_BIND (and HOST, unless the env file sets it):
# loopback when nginx runs on the same host, every address behind a load-balancer tier.
BIND_LOOPBACK = "127.0.0.1"
BIND_ALL = "0.0.0.0"


def bind_exports(bind: str) -> str:
    """Exports of the bind address; ``HOST`` keeps a value the env file gave it."""
    return f'export BG_BIND={q(bind)}; HOST="${{HOST:-{q(bind)}}}"; export HOST'


@dataclass(frozen=True)
class SetupFile:
    """A file `bg setup` writes on each app host for the runner, then installs."""

    path: str  # where it is written (the deploy user's own directory)
    data: bytes
    install: str  # the script run once it is written ("": none)
    what: str  # the step's name in an error, e.g. "installing the systemd unit"


class Runner(Protocol):
    """Builds the scripts that start, stop, probe and query one slot's process, and what
    `bg setup`, `bg logs` and `bg remove` need of it: whatever is particular to a kind of
    app is asked of its runner, never decided by its name elsewhere.

    Runners only *build* shell scripts (as Kamal's command builders do); the operations run
    them on a host. Each script is self-contained, so one slot operation is one round trip.
    Secrets are never in a script: the env file and the cookie are read on the host.
    Runner classes subclass this protocol to inherit the defaults below.
    """

    paths: Layout

    @property
    def name(self) -> str: ...

    def start_script(self, slot: str, port: int, version: str) -> str: ...

    def stop_script(self, slot: str) -> str: ...

    def alive_script(self, slot: str) -> str:
        """Exits 0 when the slot's process runs."""
        ...

    def eval_script(self, slot: str, expression: str) -> str:
        """Run a one-off ``expression`` (e.g. migrations) against the slot's release."""
        ...

    def check_script(self, slot: str) -> str | None:
        """A second health signal run on the host once HTTP is healthy (None: none)."""
        ...

    def log_script(self, slot: str, lines: int) -> str:
        """The last ``lines`` lines of the slot's output."""
        ...

    def setup_script(self) -> str:
        """Shell `bg setup` runs on each app host once bg's directories exist."""
        return ""

    def setup_files(self) -> tuple[SetupFile, ...]:
        """Files `bg setup` writes on each app host after :meth:`setup_script`."""
        return ()

    def log_source(self, slot: str) -> LogSource:
        """Where `bg logs` reads the slot's output: by default the log file bg writes."""
        return LogSource(path=self.paths.log(slot))

    def teardown_script(self) -> str:
        """Shell `bg remove` runs to undo what :meth:`setup_files` installed."""
        return ""


def env_prelude(paths: Layout) -> str:
    """Load the operator's env file (sh syntax, as `source .env` would) into the environment."""
    env = q(paths.env_file)
    return f"if [ -f {env} ]; then set -a; . {env}; set +a; fi"


def start_banner(paths: Layout, slot: str, port: int, version: str) -> str:
    """One line in the slot's log that marks where this start's output begins."""
    return (
        "printf '=== bg: start %s in %s on port %s at %s\\n' \\\n"
        f'  {q(version)} {q(slot)} {q(port)} "$(date -u +%FT%TZ)" >> {q(paths.log(slot))}'
    )


# `members SID` sets $bg_left to the live processes of session SID: the slot's leader (bg
# starts it with setsid, so its session id is its pid) and everything it started that did
# not leave the session, whatever their process group. After the leader exits its children
# stay in the session, so this finds what a start script without `exec` left running.
# One awk over /proc (dash's `read` takes a syscall per byte: 20 ms for 90 processes);
# `cat` first, since awk gives up on a file that vanished meanwhile. Never our own shell.
# members SID: $bg_left, the live processes of session SID; $bg_out, those of them outside
# its leader's process group (the group's signal does not reach them).
SH_MEMBERS = r"""
members() {
  bg_left=; bg_out=
  case "$1" in ''|*[!0-9]*) return 0;; esac
  if [ -r /proc/self/stat ]; then
    bg_left=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v s="$1" -v me="$$" '
      { p = $1; sub(/^.*\) /, "") }
      $4 == s && $1 !~ /^[ZX]/ && p != me { a = a " " p; if ($3 != s) o = o " " p }
      END { printf "%s|%s", a, o }')
  else
    bg_left=$(ps -A -o pid= -o sid= -o pgid= -o stat= 2>/dev/null | awk -v s="$1" -v me="$$" '
      $2 == s && $4 !~ /^Z/ && $1 != me { a = a " " $1; if ($3 != s) o = o " " $1 }
      END { printf "%s|%s", a, o }')
  fi
  # shellcheck disable=SC2034  # bg_out: for the stop script, not every caller
  bg_out=${bg_left#*|}
  bg_left=${bg_left%%|*}
  return 0
}
"""


def stop_pid_script(pidfile: str, timeout: float) -> str:
    """SIGTERM every process of the session led by the recorded pid (the leader and all it
    started), wait until none is left, at most ``timeout``, then SIGKILL what remains and
    say so; remove the pidfile. Exits 1 only when something outlived SIGKILL.

    dash, Debian's /bin/sh, rejects ``kill -TERM -- -PID`` ("Illegal number"), so the
    group is signalled as ``kill -s TERM -- -PID``, which dash and bash both take; a member
    that changed its process group (it is still in the session) is signalled by its pid once
    the leader is gone. One SIGTERM each: a second can land inside the app's handler (the
    sample app's deadlocked there), and some servers take it as "stop now". The session is
    found even when its leader is gone (a crashed start script leaves its children there)."""
    wait = wait_loop(timeout, """  if ! running "$pid"; then
    members "$pid"; [ -n "$bg_left" ] || break
    # Who has had no SIGTERM yet: after the group's, only members outside the group.
    if [ -n "$bg_grouped" ]; then bg_new=$bg_out; else bg_new=$bg_left; fi
    for p in $bg_new; do
      case "$bg_termed " in *" $p "*) ;; *) kill -s TERM "$p" 2>/dev/null || :;; esac
    done
    bg_termed="$bg_termed $bg_new"
  fi""")
    return (
        SH_ALIVE + SH_MEMBERS + SH_CLOCK
        + f"""
# A live leader is enough to act on; the session is read once it is gone (each read forks).
{read_pid(pidfile)}
if alive "$pid"; then bg_left=" $pid"; else members "$pid"; fi
if [ -n "$bg_left" ]; then
  # One SIGTERM each: a second can land inside the app's handler, which need not be
  # re-entrant. A live leader leads its group; else every member is signalled by its pid.
  bg_grouped=
  if [ "$bg_left" = " $pid" ] && kill -s TERM -- "-$pid" 2>/dev/null; then bg_grouped=1
  else kill -s TERM $bg_left 2>/dev/null || :; fi
  bg_termed=$bg_left
{wait}
  if [ -n "$bg_left" ]; then
    members "$pid"
    echo "killed after {timeout:g}s (SIGKILL to session $pid:$bg_left)"
    kill -s KILL -- "-$pid" 2>/dev/null || :; kill -s KILL $bg_left 2>/dev/null || :
    i=0
    while [ -n "$bg_left" ] && [ $i -lt 50 ]; do
      sleep {STOP_TICK}; i=$((i+1)); members "$pid"
    done
    if [ -n "$bg_left" ]; then
      echo "still running after SIGKILL (session $pid):$bg_left"; exit 1
    fi
  fi
fi
rm -f {q(pidfile)}
"""
    )


def leftover_script(alive: str, pidfile: str, port: int, root: str, tag: str) -> str:
    """When the slot is not running (``alive`` fails): what it left behind, one line
    ``TAG<tab>PID<tab>COMM`` per process still in the session of the recorded leader, or
    listening on the slot's port from a directory under ``root`` (what a stop that killed
    the leader alone left: its pid file is gone). Read-only."""
    t, r = q(tag), q(root.rstrip("/"))
    return SH_MEMBERS + f"""if ! ( {alive}
) >/dev/null 2>&1; then
  {read_pid(pidfile)}
  members "$pid"
  for p in $(ss -Htlnp "sport = :{int(port)}" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2); do
    case " $bg_left " in *" $p "*) continue;; esac
    case "$(readlink /proc/$p/cwd 2>/dev/null)" in {r}|{r}/*) bg_left="$bg_left $p";; esac
  done
  for p in $bg_left; do
    c=; {{ read -r c < /proc/$p/comm; }} 2>/dev/null
    printf '%s\\t%s\\t%s\\n' {t} "$p" "$c"
  done
fi
true"""


def parse_leftovers(lines: list[str]) -> dict[str, list[str]]:
    """TAG -> ["COMM (pid PID)", ...] from :func:`leftover_script`'s output."""
    out: dict[str, list[str]] = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].isdigit():
            out.setdefault(fields[0], []).append(f"{fields[2] or '?'} (pid {fields[1]})")
    return out


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_executable(command: str) -> str | None:
    """The release file ``command`` runs: its first word (after ``exec`` and ``VAR=value``
    words) when that is a path relative to the release (``bin/server``, ``./start.sh``);
    None for a program found on PATH (``python3 app.py``), an absolute path, or shell text
    too clever to read."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and (words[0] == "exec" or _ASSIGNMENT.match(words[0])):
        words.pop(0)
    if not words or "/" not in words[0] or words[0].startswith("/"):
        return None
    if any(c in words[0] for c in "$`*?[~"):
        return None
    return words[0]


def release_executable(app: AppConfig) -> tuple[str, str] | None:
    """The file every release of ``app`` must hold, executable, and why (None: cannot
    tell, e.g. a command found on PATH)."""
    if app.runner == "command":
        path = command_executable(app.command)
        return None if path is None else (path, f"[app] command = {app.command!r}")
    # elixir, systemd: `mix release`'s start script
    return f"bin/{app.release_name}", f"the release's start script (release {app.release_name})"


def require_executable_script(path: str | None, version: str) -> str:
    """Exit 1 naming ``path`` when the release in the cwd lacks it or cannot run it."""
    if path is None:
        return ""
    why = f"release {version} has no executable {path} (the app command); nothing was started"
    return f"[ -f {q(path)} ] && [ -x {q(path)} ] || {{ echo {q(why)}; exit 1; }}"


def log_tail_script(paths: Layout, slot: str, lines: int = 20) -> str:
    """The last ``lines`` lines of the slot's log since its latest start banner: an older
    run's output is not this start's failure."""
    n = int(lines)
    return (f"tail -n {max(n, 2000)} {q(paths.log(slot))} 2>/dev/null | awk -v n={n} "
            "'/^=== bg: start /{c=0} {b[c++]=$0} END{for(i=(c>n?c-n:0);i<c;i++) print b[i]}'"
            " || true")
