"""Host scripts beside their parsers (bluegreen/facts/): shell only in builders, every
generated script clean under shellcheck, one stdout protocol, and each parser read
against what real hosts printed (tests/fixtures/golden/)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bluegreen.config import Config
from bluegreen.errors import ConfigError, HookError, SwitchError
from bluegreen.facts import drain, hooks, retire, sections, upstream
from bluegreen.host import CommandResult
from bluegreen.shell import ScriptExit
from tests.facts_builders import builders
from tests.fakes import make_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent

# What only shell looks like (English messages use "; " and "then" freely, so those alone
# are not enough): operators, expansions, redirections to /dev/null, compound commands.
SHELL = re.compile(r"&&|\|\||\$\(|\$\{|\$\?|/dev/null|\bset -e\b|[\])] *; *(then|do)\b"
                   r"|\n\s*(fi|done|esac)\s*$|\bif \[|<<|\b(echo|printf) ['\"]"
                   r"|\bexport [A-Z_]+=|\bfor \w+ in [^;]*; do\b", re.M)


def shell_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal in ``source`` that looks like shell; docstrings
    (prose about the scripts) left out."""
    tree = ast.parse(source)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and SHELL.search(node.value)]


def test_shell_appears_only_in_builders() -> None:
    """ops/ and cli/ orchestrate: every script comes from a builder (facts/, releases,
    state, runners...), and every marker is read there too."""
    found = [f"{path.relative_to(REPO)}:{line}: {text!r}"
             for folder in ("ops", "cli") for path in sorted((REPO / "bluegreen" / folder)
                                                             .glob("*.py"))
             for line, text in shell_literals(path.read_text())]
    assert found == []


@pytest.mark.parametrize("source", [
    # what ops/ held before the builders took it (steps.py, lbtier.py on main)
    'script = extract + " || exit $?"',
    'stop = (f"if (\\n{alive}\\n); then\\n{stop}\\n"\n'
    '        "else echo \'new slot not running: old slot left running\'; fi")',
    'x = f"cd {q(path)} 2>/dev/null || true"',
    'x = f"export BG_APP={q(app)}"',
    'x = f"for p in $old; do kill $p; done"',
])
def test_the_scan_catches_shell(source: str) -> None:
    assert shell_literals(source) != []


def test_the_scan_passes_prose() -> None:
    source = ('"""Drain; then stop (`bg deploy`), echo the result."""\n'
              'x = "nothing was switched; then run `bg deploy VERSION` again"\n')
    assert shell_literals(source) == []


# ----------------------------------------------------------------------------- shellcheck


def _config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck missing (Debian: apt-get install shellcheck; ./dev"
                    " bootstrap installs it)")
def test_every_generated_script_passes_shellcheck(tmp_path: Path) -> None:
    """dash is /bin/sh on the servers: every script is checked as POSIX sh, at warning level
    (notes such as SC2086 flag the word splitting the scripts rely on: pid lists)."""
    scripts = builders(_config(tmp_path), root="/srv/my app's",
                       upstream_file="/etc/nginx/conf.d/hello.bluegreen.conf",
                       pid_file="/run/nginx.pid", version="1.2.3")
    files = []
    for name, script in scripts.items():
        path = tmp_path / f"{name}.sh"
        path.write_text(script)
        files.append(str(path))
    # two shellchecks at once: it takes ~30 ms a script, most of the unit tier's slowest test
    runs = [subprocess.Popen(["shellcheck", "-s", "sh", "-S", "warning", "-f", "gcc",
                              *files[i::2]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for i in range(2)]
    said = [(run.communicate()[0], run.returncode) for run in runs]
    assert said == [("", 0), ("", 0)], "".join(out for out, _ in said)


def test_shellcheck_sees_a_broken_script(tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck missing")
    bad = tmp_path / "bad.sh"
    bad.write_text('for p in "$a"; do\n  echo $((p+)\ndone\nif [ -n "$x" ] then :; fi\n')
    r = subprocess.run(["shellcheck", "-s", "sh", "-S", "warning", str(bad)],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0


# ----------------------------------------------------------------------------- protocol


def test_sections_split_by_marker_only() -> None:
    m = "@@bg-00ff"
    out = f"noise\n{m} a\n1\n@@bg-other b\n\n{m} b\nx y\n{m} a\n2\n"
    assert sections.split(out, m) == {"a": ["1", "@@bg-other b", "", "2"], "b": ["x y"]}
    assert sections.split("", m) == {}


def test_a_section_header_is_what_split_reads() -> None:
    m = sections.new_marker()
    r = subprocess.run(["sh", "-c", f"{sections.header(m, 'one')}; echo 1;"
                        f" {sections.header(m, 'two')}"], capture_output=True, text=True,
                       check=True)
    assert sections.split(r.stdout, m) == {"one": ["1"], "two": []}
    assert m != sections.new_marker()


# ----------------------------------------------------------------------------- meanings


def _result(code: int, stdout: str = "") -> CommandResult:
    return CommandResult("script", code, stdout, "")


def test_a_rejected_upstream_is_one_switch_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    upstream.raise_if_rejected(_result(0), "web-1", cfg)
    upstream.raise_if_rejected(_result(1), "web-1", cfg)  # another failure: the caller's
    with pytest.raises(SwitchError, match="web-1: nginx rejected the new upstream"):
        upstream.raise_if_rejected(_result(ScriptExit.NGINX_TEST_FAILED, "emerg"), "web-1",
                                   cfg)


def test_read_drain() -> None:
    assert drain.read_drain("drained\n") == drain.Drain(False)
    assert drain.read_drain("still draining: 12 13\ndrain-timeout\n") == drain.Drain(
        True, "still draining: 12 13")


@pytest.mark.parametrize(("pids", "port"), [([], 1), ([2**22 + 1], None)])
def test_a_drain_that_times_out_says_so(pids: list[int], port: int | None) -> None:
    # a port nothing uses drains at once; a pid that is no nginx is no worker
    r = subprocess.run(["sh", "-c", drain.drain_noted_script(pids, 0.05, port=port)],
                       capture_output=True, text=True, check=True)
    assert drain.read_drain(r.stdout) == drain.Drain(False)


def test_retire_reads_its_lines() -> None:
    alive, stop = "false", "echo stopped"
    r = subprocess.run(["sh", "-c", retire.stop_while_alive(alive, stop)],
                       capture_output=True, text=True, check=True)
    done = retire.read_retire("".join(f"stop: {ln}\n" for ln in r.stdout.splitlines()))
    assert done.left_running and not done.killed and not done.drain.timed_out


def test_a_failed_hook_names_point_command_and_host() -> None:
    hooks.raise_if_failed(_result(0), "web-1", "pre_switch", "true")
    with pytest.raises(HookError, match=r"web-1: hook pre_switch `false` failed \(exit 1\)"):
        hooks.raise_if_failed(_result(1), "web-1", "pre_switch", "false")


def test_hook_values_are_exported_quoted(tmp_path: Path) -> None:
    script = hooks.command_script({"BG_APP": "a'b $(echo x > pwned)"}, 'printf %s "$BG_APP"',
                                  str(tmp_path / "missing"))
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                       cwd=tmp_path)
    assert r.stdout == "a'b $(echo x > pwned)" and not (tmp_path / "pwned").exists()


def test_a_refused_layout_is_a_config_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert upstream.read_layout("no layout\n", "web-1", cfg) is None
    shadow = (f"{upstream.STAGE_MARKER} layout\n1:# configuration file /etc/nginx/nginx.conf:\n"
              "2:http { server { listen 80 default_server; return 200; }\n"
              "3:server { listen 80; server_name _; location / { proxy_pass http://hello_live; }"
              " } }\n"
              f"{upstream.STAGE_MARKER} end\n")
    blocks = upstream.parse_layout(shadow)
    assert blocks is not None and len(blocks) == 2
    with pytest.raises(ConfigError):
        upstream.read_layout(shadow, "web-1", cfg)
