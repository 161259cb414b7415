"""The command line: global options before and after every command, help without value
placeholders on flags, exit codes, and what `bg --version` / `bg status` import."""

from __future__ import annotations

import functools
import io
import re
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import typer
from typer._click.globals import get_current_context

from bluegreen.cli import entry as cli_app
from bluegreen.cli.options import GlobalOptions, options
from bluegreen.errors import ExitCode
from tests.operator_fixtures import bg

ROOT = Path(__file__).resolve().parent.parent

# option as typed -> (GlobalOptions field, expected value)
GLOBALS: list[tuple[list[str], str, Any]] = [
    (["-c", "x.toml"], "config", Path("x.toml")),
    (["--config", "x.toml"], "config", Path("x.toml")),
    (["-t", "prod"], "target", "prod"),
    (["--target", "prod"], "target", "prod"),
    (["-v"], "verbose", 1),
    (["--verbose"], "verbose", 1),
    (["--json"], "json", True),
    (["-q"], "quiet", True),
    (["--quiet"], "quiet", True),
    (["--accept-new-host-keys"], "accept_new_host_keys", True),
]
# Options a command defines itself (and keeps): rehearse has its own -c/--config and --json.
OWN_OPTIONS = ("config", "json")
# Every command with the arguments it requires.
REQUIRED = {"deploy": ["app-1.0.0.tar.gz"]}


def commands() -> list[list[str]]:
    root = cli_app.build()
    out = []
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub] for sub in cmd.commands]
        else:
            out.append([name])
    return out


SEEN: list[GlobalOptions] = []


@functools.cache
def recording_tree() -> Any:
    """The real command tree, each command replaced by one that records its options."""
    root = cli_app.build()

    def record(**_: Any) -> None:
        SEEN.append(options(cast(typer.Context, get_current_context())))

    def leaves(group: Any) -> list[Any]:
        out: list[Any] = []
        for cmd in group.commands.values():
            out += leaves(cmd) if hasattr(cmd, "commands") else [cmd]
        return out

    for cmd in leaves(root):
        cmd.callback = record
    return root


def recorded(args: list[str]) -> GlobalOptions:
    """Parse ``args`` with the real command tree and return the options the command got."""
    SEEN.clear()
    code = recording_tree().main(args=args, prog_name="bg", standalone_mode=False)
    assert code in (None, 0), f"bg {' '.join(args)} exited {code}"
    assert len(SEEN) == 1
    return SEEN[0]


@pytest.mark.unit
def test_every_command_is_covered() -> None:
    names = {" ".join(c) for c in commands()}
    assert {"deploy", "switch", "rollback", "status", "setup", "init", "check", "logs",
            "lock status", "lock release", "history", "migrate", "demo", "rehearse"} <= names


@pytest.mark.unit
@pytest.mark.parametrize("typed,field,value", GLOBALS, ids=lambda v: str(v))
def test_global_option_before_and_after_every_command(typed: list[str], field: str,
                                                      value: Any) -> None:
    for cmd in commands():
        required = REQUIRED.get(cmd[0], [])
        before = recorded([*typed, *cmd, *required])
        after = recorded([*cmd, *required, *typed])
        assert getattr(before, field) == value, (cmd, "before")
        if cmd == ["rehearse"] and field in OWN_OPTIONS:
            continue  # rehearse's own -c/--config and --json take them after the command
        assert getattr(after, field) == value, (cmd, "after")
        assert after.command == " ".join(cmd)
        if len(cmd) == 2:  # between a group and its command: `bg lock --json status`
            between = recorded([cmd[0], *typed, cmd[1], *required])
            assert getattr(between, field) == value, (cmd, "between")


@pytest.mark.unit
def test_options_merge_both_sides() -> None:
    opts = recorded(["-v", "-t", "a", "deploy", "x.tar.gz", "-v", "--json", "-t", "b"])
    assert (opts.verbose, opts.target, opts.json) == (2, "b", True)


@pytest.mark.unit
def test_no_color_is_read_once() -> None:
    merged = GlobalOptions.merge({}, {}, command="status", environ={"NO_COLOR": "1"})
    assert merged.no_color
    assert not GlobalOptions.merge({}, {}, command="status", environ={}).no_color
    with pytest.raises(AttributeError):
        setattr(merged, "json", True)  # noqa: B010  (frozen: mypy would refuse the plain form)


@pytest.mark.unit
def test_command_options_keep_their_own_short_flags() -> None:
    """`-n` belongs to history and logs; global -v/-q/-t/-c work beside them."""
    opts = recorded(["history", "-n", "3", "-q", "-t", "x"])
    assert (opts.quiet, opts.target) == (True, "x")


@pytest.mark.unit
def test_help_shows_no_value_placeholder_on_flags(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    for cmd in [[], *commands()]:
        code = cli_app.build().main(args=[*cmd, "--help"], prog_name="bg",
                                    standalone_mode=False)
        out = capsys.readouterr().out
        assert code == 0
        assert "<bool>" not in out, cmd
        assert "<int>" not in out.split("--verbose")[-1].splitlines()[0], cmd
        if cmd:
            assert "Global options" in out and "--json" in out, cmd


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_unknown_option_is_a_usage_error_also_in_json() -> None:
    proc = bg("status", "--frobnicate")
    assert proc.returncode == ExitCode.USAGE and "frobnicate" in proc.stderr
    proc = bg("--json", "status", "--frobnicate")
    assert proc.returncode == ExitCode.USAGE
    from tests.operator_fixtures import envelope

    doc = envelope(proc)
    assert doc["ok"] is False and doc["error"]["exit_code"] == ExitCode.USAGE


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_missing_config_exits_usage_with_hint(tmp_path: Path) -> None:
    proc = bg("status", cwd=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "no bluegreen.toml" in proc.stderr and "bg init" in proc.stderr


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_bad_hosts_pattern_names_the_hosts(tmp_path: Path) -> None:
    cfg = tmp_path / "bluegreen.toml"
    cfg.write_text('[app]\nname = "a"\nroot = "/srv/a"\ncommand = "x"\n[nginx]\n'
                   'upstream_file = "/tmp/a.conf"\n[targets.prod]\n'
                   'hosts = ["deploy@web-1", "deploy@web-2"]\n')
    proc = bg("status", "--hosts", "db-*", "-c", str(cfg))
    assert proc.returncode == ExitCode.USAGE
    assert "'db-*' matches no host" in proc.stderr and "deploy@web-1" in proc.stderr


@pytest.mark.unit
def test_exit_codes_are_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code): name for code, name in
                  re.findall(r"^\|\s*(\d+)\s*\|\s*`?([A-Z_]+)`?\s*\|", section, re.M)}
    assert documented == {int(c): c.name for c in ExitCode}


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_version_imports_nothing_heavy() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bluegreen", "--version"],
                          capture_output=True, text=True)
    assert proc.stdout.startswith("bg ")
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert not imported & {"typer", "httpx", "jinja2", "rich", "paramiko", "fabric"}


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_status_imports_only_what_it_needs(tmp_path: Path) -> None:
    import subprocess

    cfg = tmp_path / "bluegreen.toml"
    cfg.write_text(f'[app]\nname = "a"\nroot = "{tmp_path}/srv/a"\ncommand = "x"\n'
                   f'[nginx]\nupstream_file = "{tmp_path}/a.conf"\n')
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bluegreen", "-c",
                           str(cfg), "status"], capture_output=True, text=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "bluegreen.ops.admin" in imported  # it did run
    assert not imported & {"jinja2", "paramiko", "fabric", "bluegreen.sandbox",
                           "bluegreen.ssh", "rich", "typer"}


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.unit
@pytest.mark.parametrize("no_color", [False, True])
def test_progress_on_a_terminal(no_color: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen.cli.output import Printer

    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = FakeTty()
    printer = Printer(GlobalOptions(no_color=no_color), stream)
    printer.step_started("health blue")
    printer.step_done("health blue GET /health", 1.25, True, "3 attempts")
    printer.step_done("switch nginx", 0.5, False, "")
    printer.info("warning: slow")
    printer.close()
    out = stream.getvalue()
    assert re.search(r"ok .*health blue GET /health +1\.25s  \(3 attempts\)", out), out
    assert "FAIL" in out and "warning: slow" in out
    assert "⠋" in out  # the spinner ran
    colours = re.findall(r"\x1b\[[0-9;]*m", out)
    assert bool(colours) is not no_color, colours


@pytest.mark.unit
def test_quiet_and_json_print_no_progress() -> None:
    from bluegreen.cli.output import Printer

    for opts in (GlobalOptions(quiet=True), GlobalOptions(json=True)):
        stream = FakeTty()
        printer = Printer(opts, stream)
        printer.step_done("x", 1.0, True, "")
        printer.info("y")
        printer.close()
        assert stream.getvalue() == ""


@pytest.mark.unit
def test_only_the_named_command_is_built() -> None:
    """`bg` builds only the command it runs (Typer walks each command's signature); help, a
    word naming no command and no command at all get the whole tree. A global option's
    value is never taken for the command word, even when it looks like one."""
    every = set(cli_app.build().commands)
    for cmd in commands():
        for args in ([*cmd], ["-c", "status", *cmd], ["-t", "deploy", "--json", *cmd],
                     ["--config=x.toml", *cmd, "-v"]):
            assert set(cli_app.build(args).commands) == {cmd[0]}, args
    for args in (["--help"], ["status", "--help"], ["nosuch"], [], ["-c", "x.toml"]):
        assert set(cli_app.build(args).commands) == every, args


_HANDLED_INTERRUPT = '''
import os, signal, sys, threading
from bluegreen.cli.quick import forget_handled_interrupts
threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    exec("while True: pass")  # as a dataclass or namedtuple being built during an import
except KeyboardInterrupt:
    pass  # handled, as bg handles Ctrl-C: undo, then exit 130
if sys.argv[1:] == ["forget"]:
    forget_handled_interrupts()  # what run_main does on its way out
raise SystemExit(130)
'''


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_a_handled_interrupt_keeps_the_exit_status(tmp_path: Path) -> None:
    """CPython 3.11 re-sends itself SIGINT at exit once a KeyboardInterrupt left exec'd code,
    even when it was caught: under `python -m`, bg interrupted during an import exited -2
    instead of 130. run_main clears that flag on its way out."""
    import subprocess

    (tmp_path / "handled.py").write_text(_HANDLED_INTERRUPT)
    repo = str(Path(__file__).resolve().parent.parent)

    def status(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "handled", *args], cwd=tmp_path,
                              timeout=60, env={"PYTHONPATH": f"{repo}:{tmp_path}"}).returncode

    assert status("forget") == 130
    if sys.version_info[:2] == (3, 11):  # the flaw this works around, where it was seen
        assert status() == -2


@pytest.mark.unit
@pytest.mark.parametrize("flag", [True, False])
def test_accept_new_host_keys_reaches_the_load_balancers(
    flag: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--accept-new-host-keys covers the LB connections as it covers the app hosts (it
    used to stop at the app hosts: an LB never seen before was refused)."""
    from bluegreen.cli.run import run
    from bluegreen.ssh import SshHost

    cfg = tmp_path / "bluegreen.toml"
    cfg.write_text('[app]\nname = "a"\nroot = "/srv/a"\ncommand = "x"\n[nginx]\n'
                   'upstream_file = "/tmp/a.conf"\n[targets.prod]\n'
                   'hosts = ["deploy@web-1"]\nlbs = ["deploy@lb-1", "deploy@lb-2"]\n')
    opts = GlobalOptions(config=cfg, accept_new_host_keys=flag, quiet=True)
    lbs = cast(list[SshHost], run(opts, "", lambda ctx: ctx.tier.hosts))
    assert [lb.name for lb in lbs] == ["deploy@lb-1", "deploy@lb-2"]
    expected = "accept-new" if flag else "strict"
    assert all(lb._host_key_policy == expected for lb in lbs)
