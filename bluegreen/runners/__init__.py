"""How a slot's process starts, stops and is known to be alive: one runner per kind of app.

* :mod:`bluegreen.runners.command`: any command (``runner = "command"``);
* :mod:`bluegreen.runners.elixir`: ``mix release`` daemons, one Erlang node per slot;
* :mod:`bluegreen.runners.systemd`: releases as instances of a systemd template unit.

The protocol and the shell fragments they share live in :mod:`bluegreen.runners.base`
(re-exported here), so runner modules never import this package back.
"""

from __future__ import annotations

import importlib

from bluegreen.config import Config
from bluegreen.runners.base import (
    BIND_ALL,
    BIND_LOOPBACK,
    SH_ALIVE,
    SH_RUNNING,
    Runner,
    SetupFile,
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
    "SetupFile",
    "env_prelude",
    "log_tail_script",
    "runner_for",
    "stop_pid_script",
]


# `[app] runner` -> the module and class that implement it, imported on first use: a
# command app never loads the Elixir or systemd code. A new runner is a module in this
# package, a line in this table and its name in the config schema (config/schema.py).
def suggested_runner(mix_project: bool) -> str:
    """The runner `bg init` picks when none is named: a Mix project's release is Elixir's."""
    return "elixir" if mix_project else "command"


RUNNERS: dict[str, tuple[str, str]] = {
    "command": ("bluegreen.runners.command", "CommandRunner"),
    "elixir": ("bluegreen.runners.elixir", "ElixirRunner"),
    "systemd": ("bluegreen.runners.systemd", "SystemdRunner"),
}


def runner_for(config: Config, *, bind: str = BIND_LOOPBACK) -> Runner:
    """The app's runner; its slots bind ``bind`` (BG_BIND)."""
    module, name = RUNNERS[config.app.runner]
    runner: Runner = getattr(importlib.import_module(module), name).for_config(config,
                                                                              bind=bind)
    return runner
