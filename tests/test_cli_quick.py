"""The operation commands' fast path (bluegreen.cli.quick) reads exactly what Typer reads,
and leaves every other command line to Typer."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bluegreen.cli import actions, quick
from bluegreen.cli import entry as cli_entry
from bluegreen.cli.coerce import PlainRuntimeParam
from bluegreen.cli.globalopts import GlobalOptions

Call = tuple[str, GlobalOptions, dict[str, Any]]


_KINDS = {str: "str", Path: "path", int: "int", float: "float"}


def _kind(param: Any) -> str:
    """quick's kind for a Typer parameter; the value kinds only for a plain conversion
    (one with a constraint, such as min=, is Typer's to check: quick must not read it)."""
    if getattr(param, "count", False):
        return "count"
    if getattr(param, "is_flag", False):
        return "flag"
    assert type(param._runtime_param) is PlainRuntimeParam, param.name
    return _KINDS[param.type_descriptor.annotation]


def _table(params: list[Any]) -> tuple[dict[str, tuple[str, str]], tuple[tuple[str, str], ...]]:
    """What a click command's parameters say, in the shape of quick's tables."""
    options: dict[str, tuple[str, str]] = {}
    arguments: list[tuple[str, str]] = []
    for p in params:
        if p.param_type_name == "argument":
            arguments.append((p.name, _kind(p)))
            continue
        kind = _kind(p)
        options.update({o: (p.name, kind) for o in p.opts})
        options.update({o: (p.name, "off") for o in p.secondary_opts})
    return options, tuple(arguments)


@pytest.mark.unit
def test_the_tables_are_the_typer_commands_parameters() -> None:
    """Each command the fast path reads has, in Typer, exactly the options and arguments of
    quick's table (its own and the global ones), of the same kind; the root group's global
    options are quick.GLOBAL (plus --help, --version and completion, which it leaves)."""
    root = cli_entry.build()
    own_root, _ = _table(root.params)
    for left in ("--version", "--install-completion", "--show-completion"):
        own_root.pop(left)
    assert own_root == dict(quick.GLOBAL)
    for name, (own, arguments) in quick.COMMANDS.items():
        typer_options, typer_arguments = _table(root.commands[name].params)
        assert typer_options == {**quick.GLOBAL, **own}, name
        assert typer_arguments == arguments, name


@pytest.mark.unit
def test_the_actions_defaults_are_the_typer_defaults() -> None:
    """quick passes only what was typed: the action's own defaults fill the rest."""
    root = cli_entry.build()
    for name in quick.COMMANDS:
        signature = inspect.signature(getattr(actions, name))
        for p in root.commands[name].params:
            if p.name in signature.parameters and p.param_type_name == "option":
                assert signature.parameters[p.name].default == p.default, (name, p.name)


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    seen: list[Call] = []
    for name in quick.COMMANDS:
        real = getattr(actions, name)

        def record(opts: GlobalOptions, *args: Any, _real: Any = real, _name: str = name,
                   **kwargs: Any) -> None:
            bound = inspect.signature(_real).bind(opts, *args, **kwargs)
            bound.apply_defaults()
            seen.append((_name, opts, dict(list(bound.arguments.items())[1:])))

        monkeypatch.setattr(actions, name, record)
    return seen


def _by_typer(args: list[str], seen: list[Call]) -> Call:
    seen.clear()
    code = cli_entry.build(args).main(args=args, prog_name="bg", standalone_mode=False)
    assert code in (None, 0), args
    assert len(seen) == 1, args
    return seen[0]


def _by_quick(args: list[str], seen: list[Call]) -> Call:
    seen.clear()
    call = quick.parse(args, environ={})
    assert call is not None, f"{args} left to Typer"
    call()
    assert len(seen) == 1, args
    return seen[0]


READ = [
    ["status"], ["-c", "x.toml", "status"], ["status", "-c", "x.toml"],
    ["--config=x.toml", "status", "--target=prod"], ["-t", "a", "status", "-t", "b"],
    ["-v", "status", "-v", "--verbose"], ["--json", "-q", "status", "--hosts", "web-*,db1"],
    ["status", "--accept-new-host-keys", "--json"], ["-c", "status", "status"],
    ["switch"], ["switch", "--to", "blue", "--keep-old"], ["switch", "--to=green", "--retire"],
    ["switch", "--retire", "--keep-old", "--dry-run", "--hosts=h1"],
    ["deploy", "app-1.0.0.tar.gz"], ["deploy", "-t", "prod", "app.tgz"],
    ["deploy", "app.tgz", "--version", "1.2", "-t", "prod", "--json"],
    ["-t", "deploy", "deploy", "status"], ["deploy", "--version=", "a.tgz"],
    ["deploy", "a.tgz", "--canary", "10", "--promote-after", "2.5", "--no-verify"],
    ["deploy", "a.tgz", "--canary", "150", "--promote-after", ".5", "--keep-old"],
    ["deploy", "a.tgz", "--canary=5", "--promote-after=5."],
    ["rollback"], ["rollback", "--keep-old", "--dry-run", "-q"], ["promote", "--retire"],
    ["abort", "-t", "prod"], ["history"], ["history", "-n", "3", "--steps", "-q"],
    ["-c", "", "status"],
]


@pytest.mark.unit
@pytest.mark.parametrize("args", READ, ids=" ".join)
def test_quick_reads_what_typer_reads(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _by_quick(args, seen) == _by_typer(args, seen)


LEFT = [
    [], ["--help"], ["--version"], ["status", "--help"], ["deploy", "--help", "a.tgz"],
    ["-vv", "status"], ["status", "-qv"], ["-tprod", "status"], ["status", "-x"],
    ["nosuch"], ["init"], ["check"], ["lock", "status"], ["setup"], ["migrate"],
    ["deploy"], ["deploy", "a.tgz", "b.tgz"], ["status", "extra"], ["switch", "--to"],
    ["switch", "--to", "-x"], ["-t"], ["-c", "--json", "status"], ["status", "--json=1"],
    ["history", "-n", "5x"], ["history", "-n", "-1"], ["history", "-n", "+5"],
    ["deploy", "a.tgz", "--canary", "1e1"], ["deploy", "a.tgz", "--promote-after", "inf"],
    ["deploy", "a.tgz", "--canary", " 5"], ["deploy", "a.tgz", "--canary", "\uff15"],
    ["deploy", "a.tgz", "--promote-after", "1..2"], ["deploy", "a.tgz", "--promote-after", "."],
    ["deploy", "-", "x"], ["status", "--"], ["--", "status"], ["status", "-n", "3"],
    ["switch", "--dry-run=yes"],
]


@pytest.mark.unit
@pytest.mark.parametrize("args", LEFT, ids=lambda a: " ".join(a) or "(none)")
def test_other_command_lines_are_left_to_typer(args: list[str]) -> None:
    assert quick.parse(args, environ={}) is None


@pytest.mark.unit
def test_completion_is_left_to_typer() -> None:
    assert quick.parse(["status"], environ={"_BG_COMPLETE": "complete_bash"}) is None
    assert quick.parse(["status"], environ={}) is not None


@pytest.mark.unit
def test_an_error_outside_the_operation_is_reported_as_typer_reports_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same message and exit code through either path: a config that is a directory."""
    args = ["-c", str(tmp_path), "status"]
    call = quick.parse(args, environ={})
    assert call is not None
    with pytest.raises(SystemExit) as quick_exit:
        quick.run(call, args)
    by_quick = capsys.readouterr()
    with pytest.raises(SystemExit) as typer_exit:
        cli_entry.run_main(args)
    by_typer = capsys.readouterr()
    assert quick_exit.value.code == typer_exit.value.code == 2
    assert by_quick == by_typer
    assert "names a directory" in by_quick.err


@pytest.mark.unit
def test_garbage_collection_waits_for_the_operation_s_modules() -> None:
    """Start-up's objects are frozen before the collector runs (a 16-host deploy spent ~20 ms
    in ~120 collections that walked them again and again): `bg` starts with it off, an
    operation turns it on once its hosts are open, Typer's path before Typer; a process
    that did not start in ``main`` keeps its collector. In a process of its own: freezing
    is for the whole interpreter."""
    script = """
import gc
import bluegreen.cli.entry as entry
from bluegreen.cli import main, quick, run
from bluegreen.cli.globalopts import GlobalOptions
import bluegreen.ops.core as core
from tests.fakes import FakeHost, make_config

seen = {}
quick.parse = lambda args: (seen.setdefault("start", gc.isenabled()), None)[1]
entry.run_main = lambda args: seen.setdefault("typer", (gc.isenabled(), gc.get_freeze_count() > 0))
main()
seen["after main"] = gc.isenabled()
cfg = make_config()
run.load_config = lambda opts: cfg
core.open_hosts = lambda *a, **k: (seen.setdefault("opening", gc.isenabled()),
                                   [FakeHost("a", cfg)])[1]
gc.unfreeze()
run.run(GlobalOptions(), "", lambda ctx: seen.setdefault("test process", gc.get_freeze_count()))
seen.pop("opening")
gc.disable()  # as main leaves it for an operation
run.run(GlobalOptions(), "", lambda ctx: seen.setdefault(
    "operation", (gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()[0])))
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parent.parent, check=True)
    assert out.stdout.strip() == str({
        "start": False, "typer": (True, True), "after main": True, "test process": 0,
        "opening": False, "operation": (True, True, 10_000)})
