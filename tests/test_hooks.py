"""Hooks at every point, for real: a local target, real nginx, the real CLI.

Each hook appends its point and environment to a file; the test reads the order and the
values back. A failing before_switch hook leaves the old release live; a failing
after_switch hook with rollback_on_failure switches back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, make_workspace, need, serving

pytestmark = pytest.mark.nginx

ENV_KEYS = ("BG_APP", "BG_VERSION", "BG_SLOT", "BG_PORT", "BG_PREVIOUS_VERSION", "BG_HOSTS",
            "BG_TARGET", "BG_OPERATION")


def recorder(log: Path, point: str, *, local: bool = False) -> str:
    fields = " ".join(f"{k}=${k}" for k in ENV_KEYS)
    cmd = f"echo {point} {fields} >> {log}"
    return f"local: {cmd}" if local else cmd


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Workspace, Path]]:
    need(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(),
         "nginx is not installed (apt-get install nginx-light)")
    log = tmp_path / "hooks.log"
    hooks = {
        "before_start": [recorder(log, "before_start", local=True)],
        "before_switch": [recorder(log, "before_switch")],
        "after_switch": [recorder(log, "after_switch")],
        "after_deploy": [recorder(log, "after_deploy", local=True)],
        "on_failure": [recorder(log, "on_failure", local=True)],
    }
    ws = make_workspace(tmp_path, extra={"hooks": hooks})
    with serving(ws):
        yield ws, log


def entries(log: Path) -> list[dict[str, str]]:
    out = []
    for line in log.read_text().splitlines():
        point, *pairs = line.split()
        out.append({"point": point, **dict(p.split("=", 1) for p in pairs if "=" in p)})
    return out


def test_every_point_fires_in_order_with_its_environment(hooked: tuple[Workspace, Path],
                                                        tmp_path: Path) -> None:
    ws, log = hooked
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    log.unlink()
    ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")))
    got = entries(log)
    assert [e["point"] for e in got] == ["before_start", "before_switch", "after_switch",
                                         "after_deploy"]
    for e in got:
        assert e["BG_APP"] == "hello" and e["BG_VERSION"] == "2.0.0"
        assert e["BG_SLOT"] == "green" and e["BG_PORT"] == str(ws.ports["green"])
        assert e["BG_PREVIOUS_VERSION"] == "1.0.0"
        assert e["BG_HOSTS"] == "local" and e["BG_TARGET"] == "local"
        assert e["BG_OPERATION"] == "deploy"


def test_failing_before_switch_hook_leaves_the_old_version_live(
        hooked: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, log = hooked
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    data = ws.config.read_text().replace(
        'before_switch = [', 'before_switch = ["exit 7", ')
    ws.config.write_text(data)
    log.unlink()
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), check=False)
    assert proc.returncode == ExitCode.HOOK, proc.stderr
    assert "hook before_switch `exit 7` failed" in proc.stderr
    assert ws.get().headers["X-App-Version"] == "1.0.0"
    status = json.loads(ws.bg("--json", "status").stdout)["result"]["hosts"][0]
    assert (status["live"], status["version"]) == ("blue", "1.0.0")
    assert not status["slots"]["green"]["running"]  # the new slot was stopped again
    points = [e["point"] for e in entries(log)]
    assert points == ["before_start", "on_failure"]


def test_failing_after_switch_hook_with_rollback_on_failure_switches_back(
        hooked: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, _ = hooked
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    data = ws.config.read_text().replace('after_switch = [', 'after_switch = ["exit 3", ')
    ws.config.write_text(data.replace("[hooks]\n", "[hooks]\nrollback_on_failure = true\n"))
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), check=False)
    assert proc.returncode == ExitCode.HOOK, proc.stderr
    assert "rolled back" in proc.stderr
    assert ws.get().headers["X-App-Version"] == "1.0.0"
    status = json.loads(ws.bg("--json", "status").stdout)["result"]
    assert status["ok"] and status["hosts"][0]["version"] == "1.0.0"
