"""Global options: typed before or after the command, merged once into a frozen object.

``bg -t prod deploy X`` and ``bg deploy -t prod X`` mean the same. The root callback parses
the options given before the command; :func:`install` (run on the click tree when ``bg``
starts) adds the same options to every command, however and whenever it was registered,
and merges both into one :class:`GlobalOptions` before the command runs. A command reads
it with :func:`options` from its ``typer.Context``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import typer

from bluegreen.cli.coerce import make_cheap
from bluegreen.cli.globalopts import GLOBAL_NAMES, GlobalOptions

__all__ = ["GLOBAL_NAMES", "GlobalOptions", "install", "options", "remember_before"]

_BEFORE = "bluegreen.options.before"
_MERGED = "bluegreen.options"

def remember_before(ctx: typer.Context, values: Mapping[str, Any]) -> None:
    """Called by the root callback with what was given before the command."""
    ctx.meta[_BEFORE] = dict(values)


def options(ctx: typer.Context) -> GlobalOptions:
    """The merged options of this invocation (built once, before the command ran)."""
    merged = ctx.meta.get(_MERGED)
    if not isinstance(merged, GlobalOptions):
        # A command invoked outside `bg`'s own entry point (e.g. typer's test runner).
        merged = GlobalOptions.merge(ctx.meta.get(_BEFORE, {}), {}, command=_command(ctx))
    return merged


def _command(ctx: typer.Context) -> str:
    return " ".join(ctx.command_path.split()[1:])


def _flag_help(param: Any) -> None:
    """Flags take no value: show none (typer would print ``<bool>``). Also gives plain
    parameters a conversion that does not import pydantic (see ``coerce``)."""
    make_cheap(param)
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""
        if getattr(param, "count", False):
            param.show_default = False


def install(root: Any) -> Any:
    """Give every command of the click tree ``root`` the global options; returns ``root``.

    A command that defines one of them itself (e.g. its own ``--json``) keeps its own: that
    global is not added to it, and its value stays the command's.
    """
    globals_ = [p for p in root.params if p.name in GLOBAL_NAMES]
    for p in root.params:
        _flag_help(p)
    _patch_help_option(root)
    for p in globals_:
        # Shown in a panel of their own in every command's help.
        p.rich_help_panel = "Global options"
    for group in _groups(root):  # `bg lock --json status`: options between group and command
        names = {p.name for p in group.params}
        added = [p for p in globals_ if p.name not in names]
        group.params.extend(added)
        group.invoke = _before_invoke(group.invoke, tuple(p.name for p in added))
    for cmd in _leaves(root):
        taken = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        names = {p.name for p in cmd.params}
        for p in cmd.params:
            _flag_help(p)
        added = [p for p in globals_ if p.name not in names
                 and not taken & {*p.opts, *p.secondary_opts}]
        cmd.params.extend(added)
        cmd.invoke = _merging_invoke(cmd.invoke, tuple(p.name for p in added))
        _patch_help_option(cmd)
    return root


def _leaves(group: Any) -> list[Any]:
    out = []
    for cmd in getattr(group, "commands", {}).values():
        _patch_help_option(cmd)
        if hasattr(cmd, "commands"):
            out.extend(_leaves(cmd))
        else:
            out.append(cmd)
    return out


def _groups(group: Any) -> list[Any]:
    """The groups below ``group`` (``lock``), at any depth."""
    out = []
    for cmd in getattr(group, "commands", {}).values():
        if hasattr(cmd, "commands"):
            out += [cmd, *_groups(cmd)]
    return out


def _before_invoke(invoke: Callable[[Any], Any], added: tuple[str, ...]
                   ) -> Callable[[Any], Any]:
    """A group's copy of the global options counts as typed before the command."""
    def merged(ctx: Any) -> Any:
        given = {name: ctx.params.pop(name, None) for name in added}
        before = dict(ctx.meta.get(_BEFORE, {}))
        for name, value in given.items():
            if name == "verbose":
                before[name] = int(before.get(name) or 0) + int(value or 0)
            elif value is not None and value is not False:
                before[name] = value
        ctx.meta[_BEFORE] = before
        return invoke(ctx)

    return merged


def _patch_help_option(cmd: Any) -> None:
    original = cmd.get_help_option

    def get_help_option(ctx: Any) -> Any:
        opt = original(ctx)
        if opt is not None:
            _flag_help(opt)
        return opt

    cmd.get_help_option = get_help_option


def _merging_invoke(invoke: Callable[[Any], Any], added: tuple[str, ...]
                    ) -> Callable[[Any], Any]:
    def merged(ctx: Any) -> Any:
        after = {name: ctx.params.pop(name, None) for name in added}
        ctx.meta[_MERGED] = GlobalOptions.merge(ctx.meta.get(_BEFORE, {}), after,
                                                command=_command(ctx))
        return invoke(ctx)

    return merged
