"""What every runner is, and the shell fragments the runners' scripts share.

Kept apart from ``bluegreen.runners`` (which picks a runner and so imports every runner
module) so that the runner modules can import these without an import cycle.
"""

from __future__ import annotations

from typing import Protocol

from bluegreen.layout import Layout
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


class Runner(Protocol):
    """Builds the scripts that start, stop, probe and query one slot's process.

    Runners only *build* shell scripts (as Kamal's command builders do); the operations run
    them on a host. Each script is self-contained, so one slot operation is one round trip.
    Secrets are never in a script: the env file and the cookie are read on the host.
    """

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


def stop_pid_script(pidfile: str, timeout: float) -> str:
    """SIGTERM the session led by the recorded pid, wait, then SIGKILL; remove the pidfile."""
    ticks = max(1, int(timeout / STOP_TICK))
    pf = q(pidfile)
    return (
        SH_ALIVE
        + f"""
{read_pid(pidfile)}
if alive "$pid"; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  i=0
  while alive "$pid" && [ $i -lt {ticks} ]; do sleep {STOP_TICK}; i=$((i+1)); done
  if alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    echo {q(f"killed after {timeout:g}s")}
  fi
fi
rm -f {pf}
"""
    )


def log_tail_script(paths: Layout, slot: str, lines: int = 20) -> str:
    return f"tail -n {int(lines)} {q(paths.log(slot))} 2>/dev/null || true"
