"""Runners for Elixir releases (``mix release``): as daemons (``elixir``) or under systemd.

The traps of deploying releases by hand, and what bg does about each:

* Every build writes a new random ``releases/COOKIE``, so ``bin/app pid`` against the
  running node fails with "nodedown". bg generates one cookie per app and host, once,
  stores it at ``shared/cookie`` (0600) and gives it to every release as RELEASE_COOKIE.
* Two nodes with one name collide ("name seems to be in use by another Erlang node").
  Each slot is its own node: RELEASE_NODE=<app>_<slot>, and its own RELEASE_TMP.
* ``bin/app stop`` returns before the node is gone. bg waits, bounded, until the beam
  process exited, then makes sure nothing of that slot is left.
* HOME-relative ``.erlang.cookie`` files: never needed, since the cookie is explicit.

The cookie is read on the host inside the script; it never travels or gets printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from bluegreen.config import AppConfig
from bluegreen.host import q
from bluegreen.layout import Layout
from bluegreen.resources import resource_dir
from bluegreen.runners import SH_RUNNING, _env_prelude


def cookie_script(paths: Layout) -> str:
    """Create the shared cookie once, from the kernel's random source, mode 0600."""
    c = q(paths.cookie)
    return f"""if [ ! -s {c} ]; then
  mkdir -p {q(paths.shared)}
  ( umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {c}.tmp && mv {c}.tmp {c} )
fi
chmod 600 {c}"""


@dataclass(frozen=True)
class ElixirRunner:
    """``bin/<release> daemon`` / ``pid`` / ``stop``, one Erlang node per slot."""

    paths: Layout
    app: AppConfig
    name: str = "elixir"

    @property
    def release(self) -> str:
        return self.app.release_name

    def node(self, slot: str) -> str:
        base = f"{self.app.name.replace('-', '_')}_{slot}"
        return f"{base}@127.0.0.1" if self.app.distribution == "name" else base

    def _env(self, slot: str, port: int | None = None) -> str:
        """Exports for a release command in ``slot`` (cwd: the slot's release dir)."""
        p = self.paths
        lines = [
            _env_prelude(p),
            f"export RELEASE_NODE={q(self.node(slot))}",
            f"export RELEASE_DISTRIBUTION={self.app.distribution}",
            f"export RELEASE_TMP={q(p.tmp(slot))} BG_SLOT={slot}",
            # Not into the release dir (never modified) nor whatever the cwd is.
            f"export ERL_CRASH_DUMP={q(p.logs + '/' + slot + '.erl_crash.dump')}",
            f'RELEASE_COOKIE="$(cat {q(p.cookie)})"; export RELEASE_COOKIE',
        ]
        if port is not None:
            lines.append(f"export PORT={port}")
        return "\n".join(lines)

    def _cd(self, slot: str) -> str:
        return f"cd {q(self.paths.slot(slot))} && cd -P ."

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        log = q(p.log(slot))
        return f"""set -e
{cookie_script(p)}
mkdir -p {q(p.logs)} {q(p.run)} {q(p.tmp(slot))}
chmod 700 {q(p.tmp(slot))}  # run_erl's log there records the command line, cookie included
{self._cd(slot)}
printf '=== bg: start %s in %s on port %s at %s\\n' \\
  {q(version)} {slot} {port} "$(date -u +%FT%TZ)" >> {log}
(
{self._env(slot, port)}
bin/{self.release} daemon >> {log} 2>&1 < /dev/null
)
"""

    def stop_script(self, slot: str) -> str:
        p = self.paths
        ticks = max(1, int(self.app.stop_timeout * 10))
        tmp = p.tmp(slot)
        node = self.node(slot)
        # Leftovers: this slot's beam/run_erl/erl_child_setup, found by the slot's RELEASE_TMP
        # or by its node name together with this app's root, and only in our own mount
        # namespace (simulated hosts share one process table; real hosts never mind).
        return SH_RUNNING + f"""if [ -x {q(p.slot(slot))}/bin/{self.release} ]; then
  (
  {self._cd(slot)}
  {self._env(slot)}
  pid=$(bin/{self.release} pid 2>/dev/null) || pid=""
  if [ -n "$pid" ]; then
    bin/{self.release} stop > /dev/null 2>&1 || true
    i=0
    while running "$pid" && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done
    if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  ) || true
fi
me=$(readlink /proc/self/ns/mnt)
for p in $(pgrep -x 'beam.smp|beam|run_erl|erl_child_setup' 2>/dev/null); do
  [ "$(readlink /proc/$p/ns/mnt 2>/dev/null)" = "$me" ] || continue
  cmd=$(tr '\\000' ' ' < /proc/$p/cmdline 2>/dev/null) || continue
  case "$cmd" in
    *{q(tmp + "/")}*) ;;
    *{q(p.root + "/")}*{q(f"name {node} ")}*|*{q(f"name {node} ")}*{q(p.root + "/")}*) ;;
    *) continue;;
  esac
  kill -KILL "$p" 2>/dev/null || true
done
true
"""

    def alive_script(self, slot: str) -> str:
        return f"""{self._cd(slot)} 2>/dev/null || exit 1
{self._env(slot)}
bin/{self.release} pid > /dev/null 2>&1
"""

    def eval_script(self, slot: str, expression: str) -> str:
        return f"""set -e
{cookie_script(self.paths)}
{self._cd(slot)}
{self._env(slot)}
bin/{self.release} eval {q(expression)}
"""

    def rpc_script(self, slot: str, expression: str) -> str:
        return f"""{self._cd(slot)}
{self._env(slot)}
bin/{self.release} rpc {q(expression)}
"""

    def check_script(self, slot: str) -> str | None:
        if not self.app.rpc_check:
            return None
        return self.rpc_script(slot, self.app.rpc_check)

    def log_script(self, slot: str, lines: int) -> str:
        p = self.paths
        return (
            f"{{ tail -n {int(lines)} {q(p.log(slot))};"
            f" tail -q -n {int(lines)} {q(p.tmp(slot))}/log/erlang.log.* ; }} 2>/dev/null"
            f" | tail -n {int(lines)}"
        )


@dataclass(frozen=True)
class SystemdRunner:
    """Slots as instances of the template unit ``<app>@.service`` (instance = slot)."""

    paths: Layout
    app: AppConfig
    name: str = "systemd"

    def unit(self, slot: str) -> str:
        return f"{self.app.name}@{slot}.service"

    def start_script(self, slot: str, port: int, version: str) -> str:
        p = self.paths
        return f"""set -e
{cookie_script(p)}
mkdir -p {q(p.run)} {q(p.tmp(slot))}
printf 'PORT=%s\\n' {port} > {q(slot_env_file(p, slot))}
systemctl start {self.unit(slot)}
"""

    def stop_script(self, slot: str) -> str:
        return f"systemctl stop {self.unit(slot)} 2>/dev/null || true"

    def alive_script(self, slot: str) -> str:
        return f"systemctl is-active --quiet {self.unit(slot)}"

    def eval_script(self, slot: str, expression: str) -> str:
        return ElixirRunner(self.paths, self.app).eval_script(slot, expression)

    def check_script(self, slot: str) -> str | None:
        return ElixirRunner(self.paths, self.app).check_script(slot)

    def log_script(self, slot: str, lines: int) -> str:
        return f"journalctl -u {self.unit(slot)} -n {int(lines)} --no-pager 2>&1 || true"


def slot_env_file(paths: Layout, slot: str) -> str:
    return f"{paths.shared}/slot-{slot}.env"


def unit_path(app: AppConfig) -> str:
    return f"/etc/systemd/system/{app.name}@.service"


def render_unit(app: AppConfig, *, user: str = "root") -> str:
    """The template unit ``<app>@.service`` from templates/systemd-unit.service.j2."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    paths = Layout(app.root)
    return env.get_template("systemd-unit.service.j2").render(
        app=app.name,
        node_base=app.name.replace("-", "_"),
        root=app.root,
        release=app.release_name,
        distribution=app.distribution,
        node_suffix="@127.0.0.1" if app.distribution == "name" else "",
        cookie=paths.cookie,
        env_file=paths.env_file,
        slot_env=f"{paths.shared}/slot-%i.env",
        tmp=f"{paths.run}/%i.tmp",
        stop_timeout=int(app.stop_timeout),
        user=user,
    )
