"""How a slot's process starts, stops and is known to be alive: one runner per kind of app.

* :mod:`bluegreen.runners.command`: any command (``runner = "command"``);
* :mod:`bluegreen.runners.elixir`: ``mix release`` daemons, one Erlang node per slot;
* :mod:`bluegreen.runners.systemd`: releases as instances of a systemd template unit.

The protocol and the shell fragments they share live in :mod:`bluegreen.runners.base`
(re-exported here), so runner modules never import this package back.
"""

from __future__ import annotations

from bluegreen.config import Config
from bluegreen.layout import Layout
from bluegreen.runners.base import (
    BIND_ALL,
    BIND_LOOPBACK,
    SH_ALIVE,
    SH_RUNNING,
    Runner,
    env_prelude,
    log_tail_script,
    stop_pid_script,
)
from bluegreen.runners.command import CommandRunner

__all__ = [
    "BIND_ALL",
    "BIND_LOOPBACK",
    "SH_ALIVE",
    "SH_RUNNING",
    "CommandRunner",
    "Runner",
    "env_prelude",
    "log_tail_script",
    "runner_for",
    "stop_pid_script",
]


def runner_for(config: Config, *, bind: str = BIND_LOOPBACK) -> Runner:
    """The app's runner; its slots bind ``bind`` (BG_BIND)."""
    paths = Layout(config.app.root)
    if config.app.runner == "command":
        return CommandRunner(paths, config.app.command, config.app.stop_timeout, bind=bind)
    # Imported here: a command app never needs the Elixir or systemd code.
    if config.app.runner == "elixir":
        from bluegreen.runners.elixir import ElixirRunner

        return ElixirRunner(paths, config.app, bind=bind)
    if config.app.runner == "systemd":
        from bluegreen.runners.systemd import SystemdRunner

        return SystemdRunner(paths, config.app, bind=bind)
    raise AssertionError(config.app.runner)


def setup_script(config: Config, paths: Layout) -> str:
    """What `bg setup` does for the runner: the Erlang cookie; systemd's per-slot env
    files and daemon-reload. Empty for runner ``command``."""
    from bluegreen.runners.elixir import cookie_script
    from bluegreen.runners.systemd import systemd_setup_script

    if config.app.runner == "command":
        return ""
    out = cookie_script(paths)
    if config.app.runner == "systemd":
        out += "\n" + systemd_setup_script(paths, dict(config.slots))
    return out
