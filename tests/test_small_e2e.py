"""Issue 18's smaller cases end to end on this machine: real nginx, the sample app, the
real CLI (status during a deploy, history per operation, pruning, `bg remove`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace


def _background(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bluegreen", "-c", str(ws.config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_status_during_a_healthy_deploy_exits_0_and_says_in_progress(
        workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    deploying = _background(ws, "deploy", str(build_sample(tmp_path / "art", "2.0.0",
                                                           boot_delay=2.0)))
    try:
        deadline = time.monotonic() + 10
        while (ws.root / "slots" / "green").resolve().name != "2.0.0":
            assert time.monotonic() < deadline, "green never pointed at 2.0.0"
            time.sleep(0.02)
        time.sleep(0.2)  # the slot's process is up, not yet healthy
        status = ws.bg("status", check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "in progress: `deploy 2.0.0`" in status.stdout, status.stdout
        assert "green runs 2.0.0" in status.stdout
        assert "problem" not in status.stdout
    finally:
        _, err = deploying.communicate(timeout=60)
    assert deploying.returncode == 0, err
    after = ws.bg("status")
    assert "in progress" not in after.stdout
