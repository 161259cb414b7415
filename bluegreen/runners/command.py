"""``runner = "command"``: any command, run detached in the slot's release directory."""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.config import Config
from bluegreen.layout import Layout
from bluegreen.runners.base import (
    BIND_LOOPBACK,
    SH_ALIVE,
    Runner,
    bind_exports,
    command_executable,
    env_prelude,
    log_tail_script,
    read_pid,
    require_executable_script,
    start_banner,
    stop_pid_script,
)
from bluegreen.shell import q


@dataclass(frozen=True)
class CommandRunner(Runner):
    """``[app] command`` run in the slot's release directory, detached, with PORT set.

    The command is the operator's own shell text, so it is the one thing not quoted here.
    """

    paths: Layout
    command: str
    stop_timeout: float
    name: str = "command"
    bind: str = BIND_LOOPBACK

    @classmethod
    def for_config(cls, config: Config, *, bind: str) -> CommandRunner:
        return cls(Layout(config.app.root), config.app.command, config.app.stop_timeout,
                   bind=bind)

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        pidfile = q(p.pid(slot))
        inner = f"echo $$ > {pidfile}; exec {self.command}"
        return f"""set -e
mkdir -p {q(p.logs)} {q(p.run)}
rm -f {pidfile}
cd {q(p.slot(slot))}
cd -P .
{require_executable_script(command_executable(self.command), version)}
{start_banner(p, slot, port, version)}
(
  {env_prelude(p)}
  export PORT={q(port)} BG_SLOT={q(slot)} BG_VERSION={q(version)}
  {bind_exports(self.bind)}
  setsid sh -c {q(inner)} >> {q(p.log(slot))} 2>&1 < /dev/null &
)
i=0
while [ ! -s {pidfile} ] && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done
test -s {pidfile}
"""

    def stop_script(self, slot: str) -> str:
        return stop_pid_script(self.paths.pid(slot), self.stop_timeout)

    def alive_script(self, slot: str) -> str:
        return SH_ALIVE + read_pid(self.paths.pid(slot)) + '\nalive "$pid"'

    def check_script(self, slot: str) -> str | None:
        return None

    def log_script(self, slot: str, lines: int) -> str:
        return log_tail_script(self.paths, slot, lines)

    def eval_script(self, slot: str, expression: str) -> str:
        p = self.paths
        return f"""set -e
cd {q(p.slot(slot))}
cd -P .
{env_prelude(p)}
export BG_SLOT={q(slot)}
{expression}
"""
