"""Pure pieces: plans, artifacts, rendering, scripts, state — no hosts involved."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from bluegreen import artifact, config, nginx
from bluegreen.errors import ArtifactError, ConfigError, StateError
from bluegreen.health import wait_healthy
from bluegreen.host import CommandResult
from bluegreen.layout import Layout
from bluegreen.runners import CommandRunner
from bluegreen.shell import ScriptExit
from bluegreen.state import HostState

pytestmark = pytest.mark.unit

CFG = config.parse(
    {
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
    },
    Path("/x/bluegreen.toml"),
)


def test_state_roundtrip_and_validation() -> None:
    state = HostState().switched("blue", "1.0.0").switched("green", "2.0.0")
    again = HostState.from_json(state.to_json(), where="x")
    assert again == state
    with pytest.raises(StateError, match="not a bg state file"):
        HostState.from_json(b"{", where="x")
    with pytest.raises(StateError, match="neither blue nor green"):
        HostState.from_json(b'{"live": "red", "versions": {}}', where="x")


def test_render_default_upstream() -> None:
    text = nginx.render_upstream(CFG, slot="green", version="2.0.0")
    assert "server 127.0.0.1:4002;" in text
    assert 'map "" $hello_slot' in text and 'default "green";' in text


def test_broken_template_is_config_error(tmp_path: Path) -> None:
    t = tmp_path / "t.j2"
    t.write_text("{{ nope }}")
    cfg = config.parse(
        {
            "app": {"name": "hello", "root": "/srv/hello", "command": "x"},
            "nginx": {"upstream_file": "/etc/x.conf", "template": str(t)},
        },
        tmp_path / "bluegreen.toml",
    )
    with pytest.raises(ConfigError, match="failed to render"):
        nginx.render_upstream(cfg, slot="blue", version="1")


def _stage_config(tmp_path: Path, test_command: str) -> config.Config:
    return config.parse(
        {
            "app": {"name": "hello", "root": "/srv/hello", "command": "x"},
            "nginx": {"upstream_file": str(tmp_path / "up.conf"), "test_command": test_command},
        },
        tmp_path / "bluegreen.toml",
    )


def _stage(tmp_path: Path, test_command: str) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "up.conf").write_bytes(b"old contents\n\x01")
    stage = nginx.stage_script(_stage_config(tmp_path, test_command), "new")
    return subprocess.run(["sh", "-c", stage], capture_output=True)


def test_stage_script_restores_on_failed_test(tmp_path: Path) -> None:
    # The test fails with the new upstream only.
    result = _stage(tmp_path, f"grep -q old {tmp_path}/up.conf || {{ echo boom; false; }}")
    assert result.returncode == ScriptExit.NGINX_TEST_FAILED
    assert b"boom" in result.stdout
    assert (tmp_path / "up.conf").read_bytes() == b"old contents\n\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.conf"]


def test_stage_script_tells_a_configuration_broken_before(tmp_path: Path) -> None:
    """A switch to a warm slot skips the lock's `nginx -t`: the stage tells a configuration
    already broken (its test fails without the new upstream too) from a rejected upstream."""
    result = _stage(tmp_path, "echo boom; false")
    assert result.returncode == ScriptExit.NGINX_BROKEN_BEFORE
    assert b"boom" in result.stdout
    assert (tmp_path / "up.conf").read_bytes() == b"old contents\n\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.conf"]
    rejected = CommandResult("stage", result.returncode, result.stdout.decode(), "")
    with pytest.raises(ConfigError, match=r"already broken.*fails before bg changed anything"):
        nginx.raise_if_rejected(rejected, "web1", _stage_config(tmp_path, "false"))


def test_parse_old_workers() -> None:
    assert nginx.parse_old_workers("old-workers: 12 13 \nreloaded") == [12, 13]
    assert nginx.parse_old_workers("old-workers: ") == []


def test_command_runner_quotes_everything() -> None:
    runner = CommandRunner(Layout("/srv/it's"), "bin/server --x", 5)
    script = runner.start_script("blue", 4001, "1.0.0")
    assert "'/srv/it'\"'\"'s/slots/blue'" in script
    assert "export PORT=4001 BG_SLOT=blue BG_VERSION=1.0.0" in script
    assert "setsid sh -c" in script


def _tar(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    path = tmp_path / "hello-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    m.size = 1 if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([_member("/etc/passwd")], "absolute path"),
        ([_member("a/../../x")], "'..'"),
        # Links may point outside the release; writing through one never passes.
        ([_member("l", tarfile.SYMTYPE, "/etc"), _member("l/x")], "outside the release"),
        ([_member("a/l", tarfile.SYMTYPE, "../../x"), _member("a/l/y")], "outside the release"),
        ([_member("l", tarfile.SYMTYPE, "."), _member("m", tarfile.SYMTYPE, "l/.."),
          _member("m/x")], "through a link"),
        ([_member("d", tarfile.SYMTYPE, "sub"), _member("d/x")], "through a link"),
        ([_member("h", tarfile.LNKTYPE, "../x")], "hard link"),
        ([_member("f", tarfile.FIFOTYPE)], "fifo"),
    ],
)
def test_hostile_members(tmp_path: Path, members: list[tarfile.TarInfo], words: str) -> None:
    with pytest.raises(ArtifactError) as err:
        artifact.check_members(_tar(tmp_path, members))
    assert words in err.value.message


def test_safe_links_are_fine(tmp_path: Path) -> None:
    path = _tar(tmp_path, [_member("lib/a"), _member("bin/a", tarfile.SYMTYPE, "../lib/a")])
    art = artifact.inspect(path, app="hello", version=None)
    assert art.version == "1.0.0" and art.members == 2 and len(art.sha256) == 64


def test_version_from_name_and_flag(tmp_path: Path) -> None:
    path = _tar(tmp_path, [_member("x")])
    other = path.rename(tmp_path / "build.tar.gz")
    with pytest.raises(ArtifactError, match="cannot tell the version"):
        artifact.inspect(other, app="hello", version=None)
    assert artifact.inspect(other, app="hello", version="7").version == "7"
    with pytest.raises(ArtifactError, match="invalid version"):
        artifact.inspect(other, app="hello", version="../7")
    with pytest.raises(ArtifactError, match="not a readable"):
        bad = tmp_path / "hello-2.tar.gz"
        bad.write_bytes(b"not a tar")
        artifact.inspect(bad, app="hello", version=None)


def _health(**kw: float) -> config.HealthConfig:
    base = {"path": "/health", "expect": 200, "interval": 0.01, "timeout": 1.0,
            "deadline": 1.0, "start_delay": 0.0, "successes": 1}
    base.update(kw)
    return config.HealthConfig(**base)  # type: ignore[arg-type]


def test_health_needs_consecutive_successes() -> None:
    answers = iter([200, 500, 200, 200, 200])
    transport = httpx.MockTransport(lambda r: httpx.Response(next(answers)))
    report = wait_healthy(transport, 4001, _health(successes=3))
    assert report.healthy and report.attempts == 5


def test_health_deadline_and_death() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    report = wait_healthy(transport, 4001, _health(deadline=0.1))
    assert not report.healthy and "HTTP 503" in report.last

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    died = wait_healthy(httpx.MockTransport(refuse), 4001, _health(deadline=5.0),
                        alive=lambda: False, alive_every=0.0)
    assert died.died and died.elapsed < 1.0
