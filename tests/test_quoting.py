"""Property: every script bg builds quotes every value it interpolates.

Hostile strings (quotes, ``$()``, backticks, newlines, ``;``, spaces, globs) stand in for
the app root, the upstream file, nginx's pid file and, where a builder takes one, a
version. Each script runs under ``sh`` with a PATH holding a few harmless real tools,
stubs for the rest, and a ``bgcanary`` command that leaves a file behind if it ever runs:
the shell itself is the judge of the quoting (builders quote by construction: they take
values, never shell, and ``tests/test_facts.py`` proves shell is written only there).

Slot names and app/release names are not fed here: they are validated to fixed values or
``[a-z][a-z0-9_-]*`` at every entry (config, state.json), which tests below check too.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluegreen import artifact, nginx, releases
from bluegreen.config import Config, load
from bluegreen.errors import ArtifactError, ConfigError, StateError
from bluegreen.layout import Layout
from bluegreen.state import HostState
from tests.facts_builders import builders

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


_SAFE_TOOLS = ("mkdir", "mv", "cp", "cat", "ln", "chmod", "tr", "sed", "head", "tail",
               "grep", "awk", "readlink", "od", "sh", "dirname")
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
    """Every script builder (tests/facts_builders.py), fed the hostile values; nginx's
    commands are ``true`` so nothing reaches a real nginx."""
    cfg = dataclasses.replace(cfg, nginx=dataclasses.replace(cfg.nginx, test_command="true",
                                                            reload_command="true"))
    return builders(cfg, root=root, upstream_file=upstream, pid_file=pid_file,
                    version=version)


def _no_injected_command_runs(sandbox: Sandbox, scripts: dict[str, str]) -> None:
    for name, script in scripts.items():
        r = sandbox.run(script)
        assert not sandbox.canary.exists(), (
            f"{name}: injected command ran\n{script}\nstdout={r.stdout}\nstderr={r.stderr}")


@pytest.mark.unit
def test_every_builder_quotes_each_injection(tmp_path: Path, sandbox: Sandbox) -> None:
    """Every script run once with every injection at once in each value: the canary
    command never runs (the proof is the shell itself, not a scanner of its quoting)."""
    hostile = "".join(INJECTIONS)
    base = str(sandbox.dir / "h")
    scripts = scripts_for(_config(tmp_path), f"{base}/r{hostile}", f"{base}/u{hostile}.conf",
                          f"{base}/p{hostile}", hostile)
    _no_injected_command_runs(sandbox, {n: s for n, s in scripts.items()
                                        if n not in PROC_SCANS})


# Scripts that look for nginx's master through every process of /proc: 0.5-1 s each on a
# busy machine, so only test_no_injected_command_runs (not the unit tier) runs them.
PROC_SCANS = frozenset({"drain.port", "retire.found", "upstream.commit", "teardown.nginx"})


# Runs every script (~45 per example; the nginx discovery scans /proc): not in the fast tier.
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.nginx
@given(root=HOSTILE, upstream=HOSTILE, pid_file=HOSTILE, version=HOSTILE)
def test_no_injected_command_runs(
    tmp_path: Path, sandbox: Sandbox, root: str, upstream: str, pid_file: str, version: str
) -> None:
    base = str(sandbox.dir / "h")
    _no_injected_command_runs(sandbox, scripts_for(
        _config(tmp_path), f"{base}/r{root}", f"{base}/u{upstream}.conf",
        f"{base}/p{pid_file}", version))


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
def test_the_sandbox_catches_an_unquoted_value(sandbox: Sandbox) -> None:
    """The property is not vacuous: a builder that forgets to quote runs the canary."""
    for bad in (f"mkdir -p x$({MARK})", f'echo "x$({MARK})"', f"echo # it's\n{MARK}"):
        sandbox.run(bad)
        try:
            assert sandbox.canary.exists(), bad
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
