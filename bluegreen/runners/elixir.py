"""``runner = "elixir"``: Elixir releases (``mix release``) as daemons, one node per slot.

The traps of deploying releases by hand, and what bg does about each:

* Every build writes a new random ``releases/COOKIE``, so ``bin/app rpc`` against the
  running node fails with "nodedown". bg generates one cookie per app and host, once,
  stores it at ``shared/cookie`` (0600) and gives it to every release as RELEASE_COOKIE.
* Two nodes with one name collide ("name seems to be in use by another Erlang node").
  Each slot is its own node: RELEASE_NODE=<app>_<slot>, and its own RELEASE_TMP.
* ``bin/app stop`` and ``bin/app pid`` boot a second, hidden BEAM to send an RPC (about
  as long as the app's own boot), and ``stop`` returns before the node is gone. bg finds
  the slot's BEAM by its command line instead and sends it SIGTERM, which OTP >= 19 turns
  into a graceful ``init:stop()``; it waits, bounded, then SIGKILLs, and makes sure
  nothing of that slot is left (run_erl, erl_child_setup; epmd serves every node).
* HOME-relative ``.erlang.cookie`` files: never needed, since the cookie is explicit.

The cookie is read on the host inside the script; it never travels or gets printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.config import AppConfig, Config
from bluegreen.layout import Layout
from bluegreen.runners.base import (
    BIND_LOOPBACK,
    SH_CLOCK,
    SH_RUNNING,
    Runner,
    bind_exports,
    env_prelude,
    start_banner,
    wait_loop,
)
from bluegreen.shell import q

# The OS processes of one release node: the VM, and the helpers the daemon mode starts.
_BEAM = "beam.smp|beam"
_NODE_PROCESSES = "beam.smp|beam|run_erl|erl_child_setup"
_STARTING = "beam.smp|beam|run_erl|erlexec"


def cookie_script(paths: Layout) -> str:
    """Create the shared cookie once, from the kernel's random source, mode 0600."""
    c = q(paths.cookie)
    tmp = q(paths.cookie + ".tmp")
    return f"""if [ ! -s {c} ]; then
  mkdir -p {q(paths.shared)}
  ( umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {tmp} && mv {tmp} {c} )
fi
chmod 600 {c}"""


def node_name(app: AppConfig, slot: str) -> str:
    """The Erlang node name of ``slot``: ``<app>_<slot>`` (``@127.0.0.1`` for ``-name``)."""
    base = f"{app.name.replace('-', '_')}_{slot}"
    return f"{base}@127.0.0.1" if app.distribution == "name" else base


@dataclass(frozen=True)
class ElixirRunner(Runner):
    """``bin/<release> daemon`` to start; signals, never a second BEAM, to stop and probe."""

    paths: Layout
    app: AppConfig
    name: str = "elixir"
    bind: str = BIND_LOOPBACK

    @classmethod
    def for_config(cls, config: Config, *, bind: str) -> ElixirRunner:
        return cls(Layout(config.app.root), config.app, bind=bind)

    def setup_script(self) -> str:
        return cookie_script(self.paths)

    @property
    def release(self) -> str:
        return self.app.release_name

    def node(self, slot: str) -> str:
        return node_name(self.app, slot)

    def _bin(self) -> str:
        return q(f"bin/{self.release}")

    def _env(self, slot: str, port: int | None = None) -> str:
        """Exports for a release command in ``slot`` (cwd: the slot's release dir)."""
        p = self.paths
        lines = [
            env_prelude(p),
            f"export RELEASE_NODE={q(self.node(slot))}",
            f"export RELEASE_DISTRIBUTION={q(self.app.distribution)}",
            f"export RELEASE_TMP={q(p.tmp(slot))} BG_SLOT={q(slot)}",
            # Not into the release dir (never modified) nor whatever the cwd is.
            f"export ERL_CRASH_DUMP={q(p.logs + '/' + slot + '.erl_crash.dump')}",
            f'RELEASE_COOKIE="$(cat {q(p.cookie)})"; export RELEASE_COOKIE',
        ]
        if port is not None:
            lines += [f"export PORT={q(port)}", bind_exports(self.bind)]
        return "\n".join(lines)

    def _cd(self, slot: str) -> str:
        return f"cd {q(self.paths.slot(slot))} && cd -P ."

    def slot_processes(self, slot: str) -> str:
        """Shell function ``slot_procs NAMES``: pids of this slot's processes named NAMES.

        A process is the slot's when its command line holds the slot's RELEASE_TMP (run_erl's
        pipe and log dirs), or this slot's node name together with this app's root (the VM:
        ``-sname|-name <node>`` and ``-boot <root>/releases/...``). Only processes in our own
        mount namespace count: simulated hosts share one process table, real hosts never mind.
        No Erlang is booted to find them, unlike ``bin/<app> pid``.
        """
        p = self.paths
        tmp, root, name = q(p.tmp(slot) + "/"), q(p.root + "/"), q(f"name {self.node(slot)} ")
        return f"""slot_procs() {{
  me=$(readlink /proc/self/ns/mnt)
  for p in $(pgrep -x "$1" 2>/dev/null); do
    [ "$(readlink /proc/$p/ns/mnt 2>/dev/null)" = "$me" ] || continue
    cmd=$(tr '\\000' ' ' < /proc/$p/cmdline 2>/dev/null) || continue
    case "$cmd" in
      *{tmp}*|*{root}*{name}*|*{name}*{root}*) echo "$p";;
    esac
  done
}}"""

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        log = q(p.log(slot))
        return f"""set -e
{cookie_script(p)}
mkdir -p {q(p.logs)} {q(p.run)} {q(p.tmp(slot))}
chmod 700 {q(p.tmp(slot))}  # run_erl's log there records the command line, cookie included
{self._cd(slot)}
{start_banner(p, slot, port, version)}
(
{self._env(slot, port)}
{self._bin()} daemon >> {log} 2>&1 < /dev/null
)
"""

    def stop_script(self, slot: str) -> str:
        """SIGTERM the slot's VM (a graceful ``init:stop()``), wait, SIGKILL what is left."""
        timeout = self.app.stop_timeout
        wait = wait_loop(timeout, """  left=""
  for p in $pids; do if running "$p"; then left="$left $p"; fi; done
  [ -n "$left" ] || break""")
        return SH_RUNNING + SH_CLOCK + self.slot_processes(slot) + f"""
pids=$(slot_procs {q(_BEAM)})
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null || true
{wait}
  if [ -n "$left" ]; then
    kill -KILL $left 2>/dev/null || true
    echo {q(f"killed after {timeout:g}s")}
  fi
fi
# What the VM leaves behind when it was killed, or had not started yet: run_erl, its child
# setup process, a VM that appeared meanwhile.
for p in $(slot_procs {q(_NODE_PROCESSES)}); do kill -KILL "$p" 2>/dev/null || true; done
true
"""

    def alive_script(self, slot: str) -> str:
        # The node's processes, not `bin/<app> pid`: that boots a second BEAM, and fails
        # while the node is still booting (a slow boot under load was taken for a dead
        # node). run_erl and erlexec count: they are the node before the VM has exec'd, and
        # run_erl exits with it.
        return SH_RUNNING + self.slot_processes(slot) + f"""
for p in $(slot_procs {q(_STARTING)}); do running "$p" && exit 0; done
exit 1
"""

    def eval_script(self, slot: str, expression: str) -> str:
        return f"""set -e
{cookie_script(self.paths)}
{self._cd(slot)}
{self._env(slot)}
{self._bin()} eval {q(expression)}
"""

    def rpc_script(self, slot: str, expression: str) -> str:
        return f"""{self._cd(slot)}
{self._env(slot)}
{self._bin()} rpc {q(expression)}
"""

    def check_script(self, slot: str) -> str | None:
        if not self.app.rpc_check:
            return None
        return self.rpc_script(slot, self.app.rpc_check)

    def log_script(self, slot: str, lines: int) -> str:
        p = self.paths
        n = int(lines)
        return (
            f"{{ tail -n {n} {q(p.log(slot))};"
            f" tail -q -n {n} {q(p.tmp(slot))}/log/erlang.log.* ; }} 2>/dev/null"
            f" | tail -n {n}"
        )
