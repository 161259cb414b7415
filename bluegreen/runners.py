"""How a slot's process starts, stops and is known to be alive.

Runners only *build* shell scripts (as Kamal's command builders do); the operations run
them on a host. Each script is self-contained, so one slot operation is one round trip.
Secrets are never in a script: the env file and the cookie are read on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bluegreen.config import Config
from bluegreen.host import q
from bluegreen.layout import Layout

# Shell helpers shared by the runners' scripts. `running PID` is true for a live process
# that is not a zombie (a late-reaping init leaves those behind, and `kill -0` counts them).
# `alive PID` also wants it to still lead the session bg gave it, so a reused pid is not
# mistaken for the slot.
SH_RUNNING = r"""
running() {
  [ -n "$1" ] || return 1
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$st" in ""|Z*) return 1;; esac
}
"""
SH_ALIVE = SH_RUNNING + r"""
alive() {
  running "$1" || return 1
  [ "$(ps -o sid= -p "$1" 2>/dev/null | tr -d ' ')" = "$1" ]
}
"""


def _env_prelude(paths: Layout) -> str:
    """Load the operator's env file (sh syntax, as `source .env` would) into the environment."""
    env = q(paths.env_file)
    return f"if [ -f {env} ]; then set -a; . {env}; set +a; fi"


class Runner(Protocol):
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


def stop_pid_script(pidfile: str, timeout: float) -> str:
    """SIGTERM the session led by the recorded pid, wait, then SIGKILL; remove the pidfile."""
    ticks = max(1, int(timeout * 10))
    pf = q(pidfile)
    return (
        SH_ALIVE
        + f"""
pid=$(cat {pf} 2>/dev/null || true)
if alive "$pid"; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  i=0
  while alive "$pid" && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done
  if alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    echo "killed after {timeout:g}s"
  fi
fi
rm -f {pf}
"""
    )


@dataclass(frozen=True)
class CommandRunner:
    """``[app] command`` run in the slot's release directory, detached, with PORT set."""

    paths: Layout
    command: str
    stop_timeout: float
    name: str = "command"

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        pidfile = q(p.pid(slot))
        inner = f"echo $$ > {pidfile}; exec {self.command}"
        return f"""set -e
mkdir -p {q(p.logs)} {q(p.run)}
rm -f {pidfile}
cd {q(p.slot(slot))}
cd -P .
printf '=== bg: start %s in %s on port %s at %s\\n' \
  {q(version)} {slot} {port} "$(date -u +%FT%TZ)" >> {q(p.log(slot))}
(
  {_env_prelude(p)}
  export PORT={port} BG_SLOT={slot} BG_VERSION={q(version)}
  setsid sh -c {q(inner)} >> {q(p.log(slot))} 2>&1 < /dev/null &
)
i=0
while [ ! -s {pidfile} ] && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done
test -s {pidfile}
"""

    def stop_script(self, slot: str) -> str:
        return stop_pid_script(self.paths.pid(slot), self.stop_timeout)

    def alive_script(self, slot: str) -> str:
        return SH_ALIVE + f'alive "$(cat {q(self.paths.pid(slot))} 2>/dev/null)"'

    def check_script(self, slot: str) -> str | None:
        return None

    def log_script(self, slot: str, lines: int) -> str:
        return log_tail_script(self.paths, slot, lines)

    def eval_script(self, slot: str, expression: str) -> str:
        p = self.paths
        return f"""set -e
cd {q(p.slot(slot))}
cd -P .
{_env_prelude(p)}
export BG_SLOT={slot}
{expression}
"""


def log_tail_script(paths: Layout, slot: str, lines: int = 20) -> str:
    return f"tail -n {int(lines)} {q(paths.log(slot))} 2>/dev/null || true"


def runner_for(config: Config) -> Runner:
    paths = Layout(config.app.root)
    if config.app.runner == "command":
        return CommandRunner(paths, config.app.command, config.app.stop_timeout)
    if config.app.runner == "elixir":
        from bluegreen.elixir import ElixirRunner

        return ElixirRunner(paths, config.app)
    if config.app.runner == "systemd":
        from bluegreen.elixir import SystemdRunner

        return SystemdRunner(paths, config.app)
    raise AssertionError(config.app.runner)
