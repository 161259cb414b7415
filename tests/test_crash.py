"""Crash safety: bg killed with SIGKILL at every step boundary and at random moments,
interrupted with SIGINT/SIGTERM, under load through a real nginx.

Whatever the moment, live traffic is unharmed (zero failed requests), `bg status` names the
interrupted operation, and the next `bg deploy` takes over the dead operation's lock,
undoes or completes what it left and ends with every host consistent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bluegreen.ops.executor import BOUNDARIES
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, bg_argv
from tests.test_load_short import Clients


def start_bg(ws: Workspace, *args: str, failpoint: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "BG_FAILPOINT"}
    if failpoint:
        env["BG_FAILPOINT"] = failpoint
    return subprocess.Popen(
        bg_argv(*args, config=ws.config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ws.dir,
    )


def serving(ws: Workspace) -> str:
    return str(ws.get().headers.get("X-App-Version", ""))


def assert_consistent(ws: Workspace, version: str) -> None:
    status = ws.bg("--json", "status", check=False)
    data = json.loads(status.stdout)["result"]
    assert status.returncode == 0 and data["ok"], status.stdout
    host = data["hosts"][0]
    assert host["version"] == version and host["interrupted"] is None, host
    assert host["slots"][host["live"]]["healthy"], host
    assert not (ws.root / "bg" / "lock").exists()
    assert serving(ws) == version


def killed_then_repaired(ws: Workspace, clients: Clients, args: tuple[str, ...],
                         failpoint: str, repair_version: str, repair_art: Path) -> None:
    proc = start_bg(ws, *args, failpoint=f"{failpoint}:kill")
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == -signal.SIGKILL, (failpoint, proc.returncode, err)
    status = json.loads(ws.bg("--json", "status", check=False).stdout)["result"]
    host = status["hosts"][0]
    if failpoint == "finished":
        # The last step released the lock with its own script: nothing was interrupted.
        assert host["interrupted"] is None and status["ok"], host
    else:
        assert host["interrupted"] is not None and host["interrupted"].startswith(args[0]), host
    # Traffic still answers from a running, healthy slot.
    assert serving(ws) in {"1.0.0", "2.0.0", "3.0.0"}
    ws.bg("deploy", str(repair_art))
    assert_consistent(ws, repair_version)
    assert clients.failures == [], clients.failures[:10]


@pytest.fixture
def two_releases(workspace: Workspace, tmp_path: Path) -> tuple[Workspace, dict[str, Path]]:
    arts = {v: build_sample(tmp_path / "art", v) for v in ("1.0.0", "2.0.0", "3.0.0")}
    workspace.bg("deploy", str(arts["1.0.0"]))
    workspace.bg("deploy", str(arts["2.0.0"]))
    return workspace, arts


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_deploy_killed_at_every_boundary(two_releases: tuple[Workspace, dict[str, Path]],
                                         boundary: str) -> None:
    ws, arts = two_releases
    with Clients(ws.listen_port, gets=3, posts=2) as clients:
        killed_then_repaired(ws, clients, ("deploy", str(arts["3.0.0"])), boundary,
                             "3.0.0", arts["3.0.0"])
    assert clients.ok["GET"] > 20 and clients.ok["POST"] > 5, clients.ok


@pytest.mark.parametrize("operation", ["switch", "rollback"])
@pytest.mark.parametrize("boundary", ["healthy", "staged", "reloaded", "switched"])
def test_switch_and_rollback_killed_at_the_switch(
        two_releases: tuple[Workspace, dict[str, Path]], operation: str, boundary: str) -> None:
    ws, arts = two_releases
    with Clients(ws.listen_port, gets=3, posts=2) as clients:
        killed_then_repaired(ws, clients, (operation,), boundary, "3.0.0", arts["3.0.0"])


def test_killed_at_random_moments(two_releases: tuple[Workspace, dict[str, Path]],
                                  tmp_path: Path) -> None:
    ws, _ = two_releases
    rng = random.Random(int(os.environ.get("BG_CRASH_SEED", "7")))
    outcomes: list[str] = []
    with Clients(ws.listen_port, gets=3, posts=2) as clients:
        for i in range(8):
            art = build_sample(tmp_path / "rand", f"4.{i}.0", boot_delay=0.3)
            proc = start_bg(ws, "deploy", str(art))
            time.sleep(rng.uniform(0.05, 1.8))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            outcomes.append(f"{i}: exit {proc.returncode}")
            again = ws.bg("deploy", str(art), check=False)
            assert again.returncode == 0, (outcomes, again.stderr)
            assert_consistent(ws, f"4.{i}.0")
    assert clients.failures == [], (outcomes, clients.failures[:10])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_what_it_started_and_releases(
        two_releases: tuple[Workspace, dict[str, Path]], tmp_path: Path,
        sig: signal.Signals) -> None:
    ws, _ = two_releases
    slow = build_sample(tmp_path / "slow", "5.0.0", boot_delay=4.0)
    with Clients(ws.listen_port, gets=2, posts=1) as clients:
        proc = start_bg(ws, "deploy", str(slow))
        deadline = time.monotonic() + 20
        while "start 5.0.0" not in (ws.root / "logs" / "blue.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, "the new slot never started"
            time.sleep(0.05)
        time.sleep(0.3)  # inside the health gate now
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert clients.failures == []
    assert_consistent(ws, "2.0.0")
    pid_file = ws.root / "run" / "blue.pid"
    assert not pid_file.exists(), "the started slot was left running"
    history = json.loads(ws.bg("--json", "history", "--steps", "-n", "50").stdout
                         )["result"]["local"]
    assert any(e["step"] == "failed" for e in history)


def test_new_slot_dying_right_after_the_switch_goes_back(
        two_releases: tuple[Workspace, dict[str, Path]]) -> None:
    ws, arts = two_releases
    pid_file = ws.root / "run" / "blue.pid"  # 3.0.0 goes to blue (green is live)
    with Clients(ws.listen_port, gets=3, posts=2) as clients:
        proc = start_bg(ws, "deploy", str(arts["3.0.0"]),
                        failpoint=f"switched:exec:kill -9 $(cat {pid_file})")
        _, err = proc.communicate(timeout=90)
        ended = time.monotonic()
        time.sleep(0.5)
    assert proc.returncode == 6, err
    assert "stopped answering right after the switch" in err
    assert_consistent(ws, "2.0.0")
    # Requests fail only while the dead slot is live: a short window, then never again.
    times = [float(f.split(" at ")[1].split("s:")[0]) for f in clients.failures]
    if times:
        assert max(times) - min(times) < 1.5, (min(times), max(times), len(times))
    after = [f for f in clients.failures if float(f.split(" at ")[1].split("s:")[0])
             > ended - clients._started]
    assert after == [], after[:5]
