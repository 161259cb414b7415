"""Host scripts beside their parsers (bluegreen/facts/): shell only in builders, every
generated script clean under shellcheck, one stdout protocol, and each parser read
against what real hosts printed (tests/fixtures/golden/)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bluegreen import sites
from bluegreen.config import Config, load
from bluegreen.errors import ConfigError, HookError, SwitchError
from bluegreen.facts import check, drain, hooks, observe, retire, sections, upstream
from bluegreen.facts.observe import parse_observation
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
def test_every_generated_script_passes_shellcheck(tmp_path: Path,
                                                  pytestconfig: pytest.Config) -> None:
    """dash is /bin/sh on the servers: every script is checked as POSIX sh, at warning level
    (notes such as SC2086 flag the word splitting the scripts rely on: pid lists).

    shellcheck takes ~1.5 CPU-seconds for them all, so a script text it passed (with this
    shellcheck version) is remembered in pytest's cache and not checked again."""
    scripts = builders(_config(tmp_path), root="/srv/my app's",
                       upstream_file="/etc/nginx/conf.d/hello.bluegreen.conf",
                       pid_file="/run/nginx.pid", version="1.2.3")
    version = subprocess.run(["shellcheck", "--version"], capture_output=True, text=True,
                             check=True).stdout
    key = {name: hashlib.sha256((version + script).encode()).hexdigest()
           for name, script in scripts.items()}
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider
    passed = set(cache.get("bluegreen/shellcheck-passed", []) if cache is not None else [])
    files = []
    for name, script in scripts.items():
        if key[name] not in passed:
            path = tmp_path / f"{name}.sh"
            path.write_text(script)
            files.append(str(path))
    # two shellchecks at once: it takes ~30 ms a script
    runs = [subprocess.Popen(["shellcheck", "-s", "sh", "-S", "warning", "-f", "gcc",
                              *files[i::2]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for i in range(2) if files[i::2]]
    said = [(run.communicate()[0], run.returncode) for run in runs]
    assert all(out == "" and code == 0 for out, code in said), "".join(o for o, _ in said)
    if cache is not None:
        cache.set("bluegreen/shellcheck-passed", sorted(set(key.values())))


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


def test_a_drain_with_no_worker_left_drains() -> None:
    # a pid that is no nginx is no worker (the port form waits for any nginx worker shutting
    # down on the machine: its real run is the golden port-timeout below)
    r = subprocess.run(["sh", "-c", drain.drain_noted_script([2**22 + 1], 0.05)],
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


def test_a_fleet_s_identical_layouts_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host of a fleet prints its nginx -T in the stage: the same dump is parsed once
    per process; a different one (another host's nginx) is parsed for itself."""
    calls: list[str] = []
    parse = sites.parse

    def counting(dump: str) -> list[sites.Block]:
        calls.append(dump)
        return parse(dump)

    monkeypatch.setattr(sites, "parse", counting)
    monkeypatch.setattr(upstream, "_parsed", {})

    def stage(port: int) -> str:
        return (f"{upstream.STAGE_MARKER} layout\n1:# configuration file /etc/nginx/nginx.conf:\n"
                f"2:http {{ server {{ listen {port} default_server; return 200; }} }}\n"
                f"{upstream.STAGE_MARKER} end\n")

    first = upstream.parse_layout(stage(80))
    again = upstream.parse_layout(stage(80))
    other = upstream.parse_layout(stage(8080))
    assert first is again and len(calls) == 2
    assert first is not None and first[0].listens[0].port == 80
    assert other is not None and other[0].listens[0].port == 8080


# ----------------------------------------------------------------------------- golden outputs
# What each script printed on a real host with a real nginx (tests/golden_capture.py).

GOLDEN = REPO / "tests" / "fixtures" / "golden"
MARKER = "@@bg-0123456789abcdef"


def golden(tmp_path: Path, family: str, case: str) -> tuple[Config, CommandResult]:
    data = json.loads((GOLDEN / family / f"{case}.json").read_text())
    path = tmp_path / "bluegreen.toml"
    path.write_text(data["config"])
    return load(path), CommandResult("golden", data["exit_code"], data["stdout"], "")


def test_golden_observe_of_a_deployed_host(tmp_path: Path) -> None:
    _, r = golden(tmp_path, "observe", "deployed")
    obs = parse_observation(r.stdout, MARKER)
    assert json.loads(obs.state_raw)["live"] == "blue"
    assert obs.upstream is not None and "live=blue version=1.0.0" in obs.upstream
    assert (obs.backup, obs.lock, obs.nginx_error) == (None, None, None)
    assert obs.links == {"blue": "1.0.0", "green": None}
    assert obs.alive == {"blue": True, "green": False}
    assert re.fullmatch(r"[0-9a-f]{64}", obs.release_sha) and obs.env_sha == ""


def test_golden_observe_before_setup(tmp_path: Path) -> None:
    _, r = golden(tmp_path, "observe", "before-setup")
    obs = parse_observation(r.stdout, MARKER)
    assert (obs.state_raw, obs.upstream, obs.backup, obs.lock) == ("", None, None, None)
    assert obs.links == {"blue": None, "green": None}
    assert obs.alive == {"blue": False, "green": False}
    assert obs.nginx_error is not None and "unknown log format" in obs.nginx_error


def _check(tmp_path: Path, case: str) -> dict[str, tuple[str, str]]:
    cfg, r = golden(tmp_path, "check", case)
    lines = check.evaluate(cfg, "h", r.stdout, marker=MARKER, local=True)
    return {ln.name: (ln.status, ln.detail) for ln in lines}


def test_golden_check_of_a_deployed_host(tmp_path: Path) -> None:
    lines = _check(tmp_path, "deployed")
    assert {s for s, _ in lines.values()} == {check.OK}, lines
    assert ", found by the pid file " in lines["nginx master"][1]
    by_start = {n.rsplit(" ", 1)[0]: d for n, (_, d) in lines.items()}
    assert by_start["slot blue port"].startswith("in use by bg's slot (pid ")
    assert by_start["probe port"] == "nginx's (bg's probe server)"


def test_golden_check_with_nginx_stopped(tmp_path: Path) -> None:
    lines = _check(tmp_path, "nginx-stopped")
    assert lines["nginx master"][0] == check.FAIL
    assert lines["nginx master"][1].startswith("nginx is not running")
    assert [n for n, (s, _) in lines.items() if s != check.OK] == ["nginx master"]


def test_golden_check_before_setup(tmp_path: Path) -> None:
    lines = _check(tmp_path, "before-setup")
    assert lines["nginx -t"][0] == check.FAIL and "unknown log format" in lines["nginx -t"][1]
    assert lines["upstream included"][0] == check.WARN
    assert lines["root writable"][0] == check.OK


def test_golden_stage_prints_the_tested_layout(tmp_path: Path) -> None:
    cfg, r = golden(tmp_path, "upstream", "stage")
    upstream.raise_if_rejected(r, "h", cfg)
    blocks = upstream.read_layout(r.stdout, "h", cfg)
    assert blocks is not None
    assert any("http://hello_live" in b.proxies and not b.bg_probe for b in blocks)
    assert any(b.bg_probe for b in blocks)


def test_golden_stage_rejected(tmp_path: Path) -> None:
    cfg, r = golden(tmp_path, "upstream", "stage-rejected")
    with pytest.raises(SwitchError) as info:
        upstream.raise_if_rejected(r, "h", cfg)
    assert "unexpected end of file" in info.value.detail


def test_golden_reload_names_master_and_old_workers(tmp_path: Path) -> None:
    cfg, r = golden(tmp_path, "drain", "reload")
    pid, method = drain.parse_master(r.stdout)
    assert pid is not None and method == f"{drain.METHOD_PID_FILE} {cfg.nginx.pid_file}"
    assert drain.method_name(method) == drain.METHOD_PID_FILE
    assert len(drain.parse_old_workers(r.stdout)) == 2  # worker_processes 2


def test_golden_drains(tmp_path: Path) -> None:
    _, r = golden(tmp_path, "drain", "drained")
    assert drain.read_drain(r.stdout) == drain.Drain(False)
    _, r = golden(tmp_path, "drain", "port-timeout")
    done = drain.read_drain(r.stdout)
    assert done.timed_out
    assert re.fullmatch(r"still draining: \d+ connections on port \d+, \d+ nginx workers"
                        " shutting down", done.left)


def test_observe_printed_is_what_the_parser_reads(tmp_path: Path) -> None:
    """The fake host prints observations with observe.printed: a real host's output and
    printed() of what was parsed from it read back the same."""
    _, r = golden(tmp_path, "observe", "deployed")
    obs = parse_observation(r.stdout, MARKER)
    again = parse_observation(observe.printed(obs, MARKER), MARKER)
    assert again == replace(obs, nginx_error=None)  # the nginx test is not printed()
