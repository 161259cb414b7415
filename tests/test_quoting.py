"""Property: every script bg builds quotes every value it interpolates.

Hostile strings (quotes, ``$()``, backticks, newlines, ``;``, spaces, globs) stand in for
the app root, the upstream file, nginx's pid file and, where a builder takes one, a
version. Two independent checks per script:

* structural: the canary command word appears only inside single quotes, the one shell
  context where nothing is expanded (``shlex.quote`` quotes that way);
* by running it: the script runs under ``sh`` with a PATH holding a few harmless real tools,
  stubs for the rest, and a ``bgcanary`` command that leaves a file behind if it ever runs.

Slot names and app/release names are not fed here: they are validated to fixed values or
``[a-z][a-z0-9_-]*`` at every entry (config, state.json), which tests below check too.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluegreen import artifact, nginx, releases
from bluegreen.config import Config, load
from bluegreen.errors import ArtifactError, ConfigError, StateError
from bluegreen.facts.observe import new_marker, observe_script
from bluegreen.host import Host
from bluegreen.layout import Layout
from bluegreen.runners.base import stop_pid_script
from bluegreen.runners.command import CommandRunner
from bluegreen.runners.elixir import ElixirRunner, cookie_script
from bluegreen.runners.systemd import SystemdRunner
from bluegreen.state import HostState, Journal, lock_script, write_state_script

MARK = "bgcanary"
INJECTIONS = [
    f"$({MARK})", f"`{MARK}`", f"\n{MARK}\n", f";{MARK};", f"&&{MARK}", f"|{MARK}",
    f"'; {MARK}; '", f'"; {MARK}; "', f"${{x:-$({MARK})}}", f"\\'$({MARK})",
]
NOISE = st.sampled_from(["'", '"', "\\", " ", "\t", "*", "?", "$HOME", "#", "!", "{", "}",
                         "~", "&", "<", ">", "(", ")", "a", "/", "-", "..", "%s", "\r"])
HOSTILE = st.tuples(st.lists(NOISE, max_size=4), st.sampled_from(INJECTIONS),
                    st.lists(NOISE, max_size=4)).map(
    lambda t: "".join(t[0]) + t[1] + "".join(t[2]))

BASE = """
[app]
name = "hello"
root = "/srv/hello"
command = "bin/server"
[nginx]
upstream_file = "/etc/nginx/conf.d/hello.bluegreen.conf"
"""


def unquoted_marks(script: str, mark: str = MARK) -> list[int]:
    """Offsets where ``mark`` starts outside single quotes (a here-document counts as
    outside: it is expanded). A ``$(...)`` or backquote inside double quotes opens a fresh
    plain context, where single quotes quote again."""
    out = []
    stack = ["plain"]  # plain | single | double | sub (a $( ) in double quotes) | tick
    depth = [0]  # open parentheses per context
    i = 0
    while i < len(script):
        state = stack[-1]
        if script.startswith(mark, i) and state != "single":
            out.append(i)
        c = script[i]
        if state == "single":
            if c == "'":
                stack.pop()
                depth.pop()
        elif c == "\\":
            i += 1  # the next character is escaped (a literal)
        elif state == "double":
            if c == '"':
                stack.pop()
                depth.pop()
            elif script.startswith("$(", i):
                stack.append("sub")
                depth.append(0)
                i += 1
            elif c == "`":
                stack.append("tick")
                depth.append(0)
        elif state == "tick" and c == "`":
            stack.pop()
            depth.pop()
        elif c == "#" and (i == 0 or script[i - 1] in " \t\n;(&|"):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue  # a comment: its quotes are no quotes
        elif c == "'":
            stack.append("single")
            depth.append(0)
        elif c == '"':
            stack.append("double")
            depth.append(0)
        elif c == "(":
            depth[-1] += 1
        elif c == ")":
            if state == "sub" and depth[-1] == 0:
                stack.pop()
                depth.pop()
            else:
                depth[-1] -= 1
        i += 1
    return out


_SAFE_TOOLS = ("mkdir", "mv", "cp", "cat", "ln", "chmod", "tr", "sed", "head", "tail",
               "grep", "awk", "readlink", "od", "sh")
_STUBS = ("rm", "tar", "sha256sum", "sleep", "nginx", "systemctl", "setsid", "ps", "date",
          "id", "flock", "ss", "pgrep", "pkill", "journalctl", "nohup", "chown", "touch",
          "find", "xargs", "ls", "tee", "env", "timeout", "sort", "wc", "cut", "stat",
          "hostname", "whoami", "sudo", "true", "false", "curl")


@dataclasses.dataclass
class Sandbox:
    dir: Path
    bin: Path

    @property
    def canary(self) -> Path:
        return self.dir / "CANARY"

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": str(self.bin), "HOME": str(self.dir), "LC_ALL": "C"}
        return subprocess.run(["/bin/sh", "-c", script], cwd=self.dir / "cwd", env=env,
                              capture_output=True, text=True, timeout=20, check=False)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    d = Path(tempfile.mkdtemp(prefix="bg-quoting-"))
    b = d / "bin"
    b.mkdir()
    (d / "cwd").mkdir()
    for tool in _SAFE_TOOLS:
        real = shutil.which(tool)
        if real:
            (b / tool).symlink_to(real)
    for stub in _STUBS:
        (b / stub).write_text("#!/bin/sh\nexit 0\n")
        (b / stub).chmod(0o755)
    (b / MARK).write_text(f"#!/bin/sh\necho ran >> {d}/CANARY\n")
    (b / MARK).chmod(0o755)
    return Sandbox(d, b)


def _config(tmp: Path) -> Config:
    path = tmp / "bluegreen.toml"
    if not path.exists():
        path.write_text(BASE)
    return load(path)


def scripts_for(cfg: Config, root: str, upstream: str, pid_file: str, version: str
                ) -> dict[str, str]:
    """Every script builder this property covers, fed the hostile values."""
    cfg = dataclasses.replace(cfg, app=dataclasses.replace(cfg.app, root=root),
                              nginx=dataclasses.replace(cfg.nginx, upstream_file=upstream,
                                                        pid_file=pid_file,
                                                        test_command="true",
                                                        reload_command="true"))
    paths = Layout(root)
    state = HostState(live="blue", versions={"blue": version, "green": None},
                      previous=version)
    journal = Journal(cast(Host, None), paths, f"deploy {version}")
    journal.record("switch", "ok", version=version, slot="blue")
    holder = {"user": version, "controller": version, "pid": 1, "command": f"bg {version}"}
    command = CommandRunner(paths, "bin/server", 1.0)
    elixir = ElixirRunner(paths, cfg.app)
    systemd = SystemdRunner(paths, cfg.app)
    scripts = {
        "nginx.abort": nginx.abort_script(cfg),
        "nginx.discovery": nginx.master_discovery_script(cfg),
        "nginx.reload": nginx.reload_script(cfg),
        "nginx.drain": nginx.drain_script([], 0.2, port=1),
        "state.write": write_state_script(paths, state),
        "state.lock": lock_script(paths, holder),
        "state.journal": journal.script(),
        "stop_pid": stop_pid_script(paths.pid("blue"), 0.2),
        "cookie": cookie_script(paths),
    }
    ok = "1.2.3"  # builders below validate versions (safe_token): fed a valid one here
    scripts.update({
        "nginx.stage": nginx.stage_script(cfg, f"# {version}\n"),
        "nginx.commit": nginx.commit_script(cfg),
        "nginx.discard_backup": nginx.discard_backup_script(cfg),
        "releases.layout": releases.layout_script(paths),
        "releases.probe": releases.probe_script(paths, ok),
        "releases.extract": releases.extract_script(paths, ok, "ab" * 32),
        "releases.receive": releases.receive_script(paths, ok),
        "releases.require": releases.require_script(paths, ok),
        "releases.prune": releases.prune_script(paths, 3, [ok]),
        "releases.setup": releases.setup_script(
            paths, upstream_file=upstream, initial_upstream=f"# {version}\n",
            initial_state=state.to_json().decode(), runner_setup="true"),
        "observe": observe_script(paths, new_marker(), upstream_file=upstream,
                                  backup_file=upstream + ".bak",
                                  alive_scripts={"blue": command.alive_script("blue")},
                                  version=ok),
    })
    for runner in (command, elixir, systemd):
        for slot in ("blue", "green"):
            scripts[f"{runner.name}.start.{slot}"] = runner.start_script(slot, 4001, version)
            scripts[f"{runner.name}.stop.{slot}"] = runner.stop_script(slot)
    return scripts


@pytest.mark.unit
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=HOSTILE, upstream=HOSTILE, pid_file=HOSTILE, version=HOSTILE)
def test_every_builder_quotes_hostile_values(
    tmp_path: Path, root: str, upstream: str, pid_file: str, version: str
) -> None:
    base = "/nonexistent/h"
    scripts = scripts_for(_config(tmp_path), f"{base}/r{root}", f"{base}/u{upstream}.conf",
                          f"{base}/p{pid_file}", version)
    for name, script in scripts.items():
        assert unquoted_marks(script) == [], f"{name}: unquoted value in\n{script}"


# Runs every script (~25 per example; the nginx discovery scans /proc): not in the fast tier.
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=HOSTILE, upstream=HOSTILE, pid_file=HOSTILE, version=HOSTILE)
def test_no_injected_command_runs(
    tmp_path: Path, sandbox: Sandbox, root: str, upstream: str, pid_file: str, version: str
) -> None:
    base = str(sandbox.dir / "h")
    scripts = scripts_for(_config(tmp_path), f"{base}/r{root}", f"{base}/u{upstream}.conf",
                          f"{base}/p{pid_file}", version)
    for name, script in scripts.items():
        r = sandbox.run(script)
        assert not sandbox.canary.exists(), (
            f"{name}: injected command ran\n{script}\nstdout={r.stdout}\nstderr={r.stderr}")


@pytest.mark.unit
@given(HOSTILE)
def test_version_taking_builders_refuse_hostile_versions(version: str) -> None:
    paths = Layout("/srv/hello")
    with pytest.raises(ValueError):
        releases.probe_script(paths, version)
    with pytest.raises(ValueError):
        releases.extract_script(paths, version, "ab" * 32)
    with pytest.raises(ValueError):
        releases.receive_script(paths, version)
    with pytest.raises(ValueError):
        releases.require_script(paths, version)
    with pytest.raises(ValueError):
        releases.prune_script(paths, 3, [version])


@pytest.mark.unit
def test_the_checks_catch_an_unquoted_value(sandbox: Sandbox) -> None:
    """The property is not vacuous: a builder that forgets to quote is caught by both."""
    value = f"x$({MARK})"
    bad = f"mkdir -p {value}"
    assert unquoted_marks(bad) != []
    assert unquoted_marks(f'echo "{value}"') != []  # double quotes expand $()
    assert unquoted_marks(f"echo '{value}'") == []
    assert unquoted_marks(f"echo # it's\nmkdir {value}") != []  # a comment's quote
    assert unquoted_marks(f"echo \"$(cat '{value}')\"") == []
    sandbox.run(bad)
    try:
        assert sandbox.canary.exists()
    finally:
        sandbox.canary.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- versions


@pytest.mark.unit
@given(st.from_regex(r"\A[0-9A-Za-z][0-9A-Za-z._+-]{0,63}\Z"))
def test_valid_versions_are_inert_in_shell_and_nginx(version: str) -> None:
    if version in (".", ".."):
        return
    assert artifact.check_version(version) == version
    # every character of a valid version is inert: shlex.quote leaves it bare
    import shlex
    assert shlex.quote(version) == version


@pytest.mark.unit
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=st.from_regex(r"\A[0-9A-Za-z][0-9A-Za-z._+-]{0,63}\Z"))
def test_rendered_upstream_gains_no_directive(tmp_path: Path, version: str) -> None:
    cfg = _config(tmp_path)
    baseline = nginx.render_upstream(cfg, slot="green", version="1")
    text = nginx.render_upstream(cfg, slot="green", version=version)
    for token in (";", "{", "}", '"', "\n", "$", "#"):
        assert text.count(token) == baseline.count(token), (token, text)


@pytest.mark.unit
@given(HOSTILE)
def test_hostile_versions_never_pass_validation(version: str) -> None:
    with pytest.raises(ArtifactError):
        artifact.check_version(version)
    with pytest.raises(StateError):
        HostState.from_json(
            f'{{"live": "blue", "versions": {{"blue": {_json(version)}}}}}'.encode(),
            where="h:state.json")


def _json(value: str) -> str:
    import json
    return json.dumps(value)


# ----------------------------------------------------------------------------- names


@pytest.mark.unit
@given(HOSTILE)
def test_hostile_slot_names_never_pass_validation(slot: str) -> None:
    with pytest.raises(StateError):
        HostState.from_json(f'{{"live": {_json(slot)}, "versions": {{}}}}'.encode(),
                            where="h:state.json")
    with pytest.raises(StateError):
        HostState.from_json(
            f'{{"live": null, "versions": {{{_json(slot)}: "1"}}}}'.encode(),
            where="h:state.json")


@pytest.mark.unit
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HOSTILE, key=st.sampled_from(["name", "release_name"]))
def test_hostile_app_names_refused_by_config(tmp_path: Path, name: str, key: str) -> None:
    path = tmp_path / "bluegreen.toml"
    text = BASE.replace('name = "hello"', f'name = "hello"\n{key} = {_json(name)}'
                        if key == "release_name" else f"name = {_json(name)}")
    path.write_text(text)
    with pytest.raises(ConfigError):
        load(path)
