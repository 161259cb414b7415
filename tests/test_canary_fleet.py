"""Canary releases on sandbox hosts over SSH: nginx on every app host, and two LBs in
front of two app hosts (the share is the fleet's, every LB lists both slots of each)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.sample import build_sample
from tests.canary_helpers import shares
from tests.fleet_helpers import bg, failures, new_connections, status
from tests.sandbox_fixtures import MakeSandbox

HEALTH = "interval = 0.1\ntimeout = 1.0\ndeadline = 5.0"


@pytest.mark.root
@pytest.mark.parametrize("lbs", [0, 2], ids=["nginx-on-app-hosts", "two-lbs"])
def test_fleet_canary_share_promote_and_abort(make_sandbox: MakeSandbox, tmp_path: Path,
                                              lbs: int) -> None:
    sandbox = make_sandbox(2 + lbs, shared_network=bool(lbs))
    front = sandbox.hosts[:lbs] if lbs else sandbox.hosts
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", lbs=sandbox.hosts[:lbs],
                            health=HEALTH)
    bg(config, "setup")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    endpoints = [h.address for h in front]

    bg(config, "deploy", "--canary", "25", str(build_sample(art, "2.0.0")))
    seen = sum((shares(a, 80, 400) for a in endpoints), start=shares(endpoints[0], 80, 0))
    total = sum(seen.values())
    assert set(seen) == {"1.0.0", "2.0.0"} and 0.20 <= seen["2.0.0"] / total <= 0.30, seen
    st = status(config)
    assert st["canary"]["version"] == "2.0.0" and st["canary"]["percent"] == 25, st
    assert sorted(st["canary"]["hosts"]) == sorted(h.spec for h in front)
    assert st["ok"], st
    refused = bg(config, "switch", check=False)
    assert refused.returncode == ExitCode.STATE and "bg abort" in refused.stderr

    with new_connections(endpoints, clients=4, limit=120) as load:
        time.sleep(0.5)
        bg(config, "promote")
        time.sleep(0.5)
    assert load.counts()[1] == 0, failures(load)[:5]
    assert all(shares(a, 80, 20) == {"2.0.0": 20} for a in endpoints)

    bg(config, "deploy", "--canary", "50", str(build_sample(art, "3.0.0")))
    with new_connections(endpoints, clients=4, limit=120) as load:
        time.sleep(0.5)
        out = json.loads(bg(config, "--json", "abort").stdout)["result"]
        time.sleep(0.5)
    assert out["operation"] == "abort"
    assert load.counts()[1] == 0, failures(load)[:5]
    assert load.versions() == {"2.0.0", "3.0.0"}
    assert all(shares(a, 80, 20) == {"2.0.0": 20} for a in endpoints)
    st = status(config)
    assert "canary" not in st and st["ok"], st
    assert all(h["version"] == "2.0.0" and not h["slots"]["blue"]["running"]
               for h in st["hosts"]), st


@pytest.mark.root
def test_a_canary_killed_mid_switch_behind_lbs_is_recovered(make_sandbox: MakeSandbox,
                                                           tmp_path: Path) -> None:
    """Killed after the LBs reloaded to the canary, before it was recorded: the next
    deploy restores every LB's previous upstream and goes on, losing no request."""
    sandbox = make_sandbox(4, shared_network=True)
    lbs = sandbox.hosts[:2]
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", lbs=lbs, health=HEALTH)
    bg(config, "setup")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    endpoints = [h.address for h in lbs]
    with new_connections(endpoints, clients=4, limit=120) as load:
        time.sleep(0.5)
        killed = bg(config, "deploy", "--canary", "30", str(build_sample(art, "2.0.0")),
                    check=False, extra_env={"BG_FAILPOINT": "reloaded:kill"})
        assert killed.returncode == -9, killed.stderr
        assert "canary" in status(config)  # the LBs serve the canary meanwhile
        bg(config, "deploy", str(build_sample(art, "3.0.0")))
        time.sleep(0.5)
    assert load.counts()[1] == 0, failures(load)[:5]
    assert all(shares(a, 80, 20) == {"3.0.0": 20} for a in endpoints)
    st = status(config)
    assert "canary" not in st and st["ok"], st
