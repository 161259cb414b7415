"""The verification window on sandbox hosts over SSH: nginx on every app host, and a
load-balancer tier (2 LBs in front of 2 app hosts), each reading its own nginx's log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.loadclient import Load
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.sample import build_sample
from tests.fleet_helpers import bg, failures, new_connections, status, through
from tests.sandbox_fixtures import MakeSandbox

VERIFY = {"verify": {"window": 4.0, "min_requests": 20, "max_error_rate": 0.05,
                     "interval": 0.5}}
HEALTH = "interval = 0.1\ntimeout = 1.0\ndeadline = 5.0"


def _deploy(config: Path, artifact: Path, endpoints: list[str]
            ) -> tuple[int, str, float, Load]:
    with new_connections(endpoints, clients=4, limit=120) as load:
        time.sleep(0.5)
        proc = bg(config, "--json", "deploy", str(artifact), check=False)
        returned = time.monotonic()
        time.sleep(1.0)
    return proc.returncode, proc.stdout, returned, load


@pytest.mark.root
@pytest.mark.parametrize("lbs", [0, 2], ids=["nginx-on-app-hosts", "two-lbs"])
def test_fleet_undo_and_no_false_alarm(make_sandbox: MakeSandbox, tmp_path: Path,
                                       lbs: int) -> None:
    sandbox = make_sandbox(2 + lbs, shared_network=bool(lbs))
    front = sandbox.hosts[:lbs] if lbs else sandbox.hosts
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", lbs=sandbox.hosts[:lbs],
                            health=HEALTH, extra=VERIFY)
    bg(config, "setup")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    endpoints = [h.address for h in front]

    # A good release under load: the window passes, no undo.
    code, out, _, load = _deploy(config, build_sample(art, "2.0.0"), endpoints)
    assert code == 0, out
    assert load.counts()[1] == 0, failures(load)[:5]
    assert all(through(h).startswith("hello 2.0.0") for h in front)

    # 30% of its GET / fail: every nginx host's log adds up to the verdict, traffic goes
    # back on every host, the bad slots stop, not one request fails after bg returned.
    code, out, returned, load = _deploy(config, build_sample(art, "3.0.0", fail_share=0.3),
                                        endpoints)
    assert code == ExitCode.VERIFY, out
    error = json.loads(out)["error"]
    assert 0.15 < error["figures"]["rate"] < 0.45, error
    assert all(through(h).startswith("hello 2.0.0") for h in front)
    records = [r for rows in load.records.values() for r in rows]
    assert all(200 <= r[2] < 300 for r in records if r[0] > returned)
    assert {r[2] for r in records if not 200 <= r[2] < 300} <= {500}
    st = status(config)
    assert all(h["version"] == "2.0.0" and not h["slots"]["blue"]["running"]
               for h in st["hosts"]), st
