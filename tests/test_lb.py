"""A load-balancer tier on sandbox hosts: 2 LBs running nginx in front of 3 app hosts, over
the sandbox's shared network (real sshd, nginx and netns hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import SandboxHost
from bluegreen.sandbox.sample import build_sample
from tests.fleet_helpers import Load, bg, bg_json, status, through
from tests.sandbox_fixtures import MakeSandbox

pytestmark = pytest.mark.root


def tier(make_sandbox: MakeSandbox, tmp: Path
         ) -> tuple[list[SandboxHost], list[SandboxHost], Path]:
    sandbox = make_sandbox(5, shared_network=True)
    lbs, apps = sandbox.hosts[:2], sandbox.hosts[2:]
    config = sandbox_config(sandbox, tmp / "bluegreen.toml", lbs=lbs,
                            health="interval = 0.1\ntimeout = 1.0\ndeadline = 5.0")
    bg(config, "setup")
    return lbs, apps, config


def lb_upstream(lb: SandboxHost) -> str:
    return lb.srv(lb.nginx.upstream_file).read_text()


def test_two_lbs_three_app_hosts_under_load(make_sandbox: MakeSandbox, tmp_path: Path
                                            ) -> None:
    lbs, apps, config = tier(make_sandbox, tmp_path)
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    for lb in lbs:
        assert through(lb).startswith("hello 1.0.0 slot=blue")
        text = lb_upstream(lb)
        for app in apps:  # every app host's live slot, at its shared address
            assert f"server {app.shared_address}:4001;  # {app.spec}" in text
    for app in apps:  # nginx runs on the LBs only: no upstream file on an app host
        assert not app.srv(app.nginx.upstream_file).read_text().startswith("# Managed by bg")

    with Load([lb.address for lb in lbs], threads=4) as load:
        out = bg_json(config, "deploy", str(build_sample(art, "2.0.0")))
        assert all(h["outcome"].endswith("blue -> green") for h in out["hosts"]), out
        for lb in lbs:
            assert through(lb).startswith("hello 2.0.0 slot=green")
        bg(config, "rollback")
        for lb in lbs:
            assert through(lb).startswith("hello 1.0.0 slot=blue")
        bg(config, "switch")
        for lb in lbs:
            assert through(lb).startswith("hello 2.0.0 slot=green")
    assert load.failures == [], load.failures[:10]
    assert load.ok > 100 and set(load.bodies) == {"hello 1.0.0", "hello 2.0.0"}
    # Old slots were retired only after the LBs drained: the blue slots are stopped again.
    st = status(config)
    assert st["ok"], st
    assert [h["live"] for h in st["hosts"]] == ["green"] * 3
    assert not any(h["slots"]["blue"]["running"] for h in st["hosts"])
    assert [lb["serving"] for lb in st["lbs"]] == ["green", "green"]
    assert all(len(lb["servers"]) == 3 for lb in st["lbs"])


def test_app_host_failing_health_leaves_every_lb_on_the_old_release(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    lbs, apps, config = tier(make_sandbox, tmp_path)
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    before = [lb_upstream(lb) for lb in lbs]
    apps[1].srv("/srv/hello/shared/unhealthy-2.0.0").touch()
    proc = bg(config, "deploy", str(build_sample(art, "2.0.0")), check=False)
    assert proc.returncode == ExitCode.HEALTH, proc.stderr
    assert apps[1].spec in proc.stderr and "never became healthy" in proc.stderr
    for lb, text in zip(lbs, before, strict=True):
        assert lb_upstream(lb) == text
        assert through(lb).startswith("hello 1.0.0 slot=blue")
    st = status(config)
    assert all(h["live"] == "blue" and h["version"] == "1.0.0" for h in st["hosts"])
    assert not any(h["slots"]["green"]["running"] for h in st["hosts"])
