"""A load-balancer tier on sandbox hosts: 2 LBs running nginx in front of 3 app hosts, over
the sandbox's shared network (real sshd, nginx and netns hosts)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bluegreen import config as configuration
from bluegreen import nginx
from bluegreen.errors import ConfigError, ExitCode
from bluegreen.facts.observe import Observation
from bluegreen.host import LocalHost
from bluegreen.ops import lbtier
from bluegreen.ops.core import Context
from bluegreen.ops.lbtier import LoadBalancers, open_lbs
from bluegreen.ops.plan import Finish, HostFacts, Switch, plan_deploy
from bluegreen.runners.base import BIND_ALL, bind_exports
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import SandboxHost
from bluegreen.sandbox.sample import build_sample
from bluegreen.state import HostState
from tests.fleet_helpers import (
    bg,
    bg_json,
    failures,
    new_connections,
    on_hosts,
    status,
    through,
)
from tests.sandbox_fixtures import MakeSandbox


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


@pytest.mark.root
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

    # The dry run shows the one new upstream each LB would get, and touches nothing.
    dry = bg_json(config, "deploy", "--dry-run", str(build_sample(art, "2.0.0")))
    assert set(dry["nginx_diff"]) == {lb.spec for lb in lbs}
    for app in apps:
        assert f"+    server {app.shared_address}:4002;  # {app.spec}" in dry["nginx_diff"][
            lbs[0].spec]
    assert [s["kind"] for s in dry["plan"]["steps"]][-2:] == ["switch", "finish"]

    with new_connections([lb.address for lb in lbs], clients=4, limit=120) as load:
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
    total, failed = load.counts()
    assert failed == 0, failures(load)[:10]
    assert total > 100 and load.versions() == {"1.0.0", "2.0.0"}
    # Old slots were retired only after the LBs drained: the blue slots are stopped again.
    st = status(config)
    assert st["ok"], st
    assert [h["live"] for h in st["hosts"]] == ["green"] * 3
    assert not any(h["slots"]["blue"]["running"] for h in st["hosts"])
    assert [lb["serving"] for lb in st["lbs"]] == ["green", "green"]
    assert all(len(lb["servers"]) == 3 for lb in st["lbs"])


@pytest.mark.root
def test_app_host_failing_health_leaves_every_lb_on_the_old_release(
    make_sandbox: MakeSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the in-process canary reads no real ~/.ssh
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
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

    # A canary behind the LBs: only the first app host moves; the LBs keep the others'
    # lines as they were, and the next full deploy converges them.
    apps[1].srv("/srv/hello/shared/unhealthy-2.0.0").unlink()
    on_hosts(config, [apps[0].spec], "deploy", build_sample(art, "2.0.0"))
    for lb in lbs:
        text = lb_upstream(lb)
        assert f"server {apps[0].shared_address}:4002;" in text
        assert all(f"server {a.shared_address}:4001;" in text for a in apps[1:])
    st = status(config)
    assert st["diverged"] and [lb["serving"] for lb in st["lbs"]] == ["mixed", "mixed"]
    out = bg_json(config, "deploy", str(build_sample(art, "2.0.0")))
    assert [h["outcome"] == "unchanged" for h in out["hosts"]] == [True, False, False]
    for lb in lbs:
        assert lb_upstream(lb).count(":4002;") == 3
        assert through(lb).startswith("hello 2.0.0 slot=green")


@pytest.mark.root
def test_a_switch_interrupted_on_the_lbs_is_undone_by_the_next_operation(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    lbs, _apps, config = tier(make_sandbox, tmp_path)
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    before = [lb_upstream(lb) for lb in lbs]
    killed = bg(config, "deploy", str(build_sample(art, "2.0.0")), check=False,
                extra_env={"BG_FAILPOINT": "reloaded:kill"})
    assert killed.returncode == -9, killed.stderr
    assert all(":4002;" in lb_upstream(lb) for lb in lbs)  # reloaded, never recorded
    st = status(config)
    assert all(h["live"] == "blue" for h in st["hosts"])  # the LBs' backups count
    assert not st["ok"]  # the interrupted operation and the backup files are reported

    out = bg_json(config, "deploy", str(build_sample(art, "2.0.0")))
    assert all(h["outcome"] == "switch only: blue -> green" for h in out["hosts"]), out
    for lb in lbs:
        assert through(lb).startswith("hello 2.0.0 slot=green")
        live = lb.srv(lb.nginx.upstream_file)
        assert not (live.parent / f".{live.name}.bg-prev").exists()  # nothing left to undo
    journal = lbs[0].srv("/srv/hello/bg/journal.jsonl").read_text()
    assert '"step": "recover"' in journal and '"taken over"' in journal
    assert before[0] != lb_upstream(lbs[0])
    st = status(config)
    assert st["ok"] and [h["live"] for h in st["hosts"]] == ["green"] * 3, st


# ----------------------------------------------------------------------------- unit tier

APPS = ("deploy@10.0.0.11", "deploy@10.0.0.12", "deploy@10.0.0.13")


def lb_config(**target: object) -> configuration.Config:
    return configuration.parse({
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
        "targets": {"production": {"hosts": list(APPS), "lbs": ["deploy@10.0.0.2", "lb2"],
                                   **target}},
    }, Path("/x/bluegreen.toml"))


def lb_context(cfg: configuration.Config) -> Context:
    # Fake LB hosts: no connection is ever opened by the pure functions under test.
    return Context(config=cfg, target=cfg.target(None), hosts=[],
                   tier=LoadBalancers([LocalHost("deploy@10.0.0.2"), LocalHost("lb2")]))


@pytest.mark.unit
def test_plan_switches_on_the_lbs_with_the_whole_fleet() -> None:
    cfg = lb_config()
    v1 = HostState().switched("blue", "1.0.0")
    facts = {APPS[0]: HostFacts(v1.switched("green", "2.0.0"), {"green": True}),
             APPS[1]: HostFacts(v1, {"blue": True})}
    plan = plan_deploy(cfg, facts, "2.0.0", sha256="a" * 64, retire=True, boot_batch=5,
                       front=cfg.target(None).lbs)
    switch = next(s for s in plan.steps if isinstance(s, Switch))
    finish = next(s for s in plan.steps if isinstance(s, Finish))
    assert switch.slots == {APPS[1]: "green"}  # only the host that moves
    assert switch.fleet == {APPS[0]: "green", APPS[1]: "green"}  # every planned host
    assert switch.front == finish.front == ("deploy@10.0.0.2", "lb2")
    assert "on load balancers deploy@10.0.0.2, lb2" in switch.describe(cfg)
    assert "old workers on deploy@10.0.0.2, lb2" in finish.describe(cfg)


@pytest.mark.unit
def test_lb_upstream_lists_every_app_host_in_target_order() -> None:
    cfg = lb_config(addresses={APPS[2]: "192.168.5.13"})
    ctx = lb_context(cfg)
    now = nginx.render_upstream(cfg, slot="blue", version="1.0.0", servers=[
        nginx.Server("10.0.0.11", 4001, APPS[0]), nginx.Server("192.168.5.13", 4001, APPS[2])])
    observed = {"deploy@10.0.0.2": Observation(upstream=now), "lb2": Observation(upstream=now)}
    assert lbtier.served_ports(ctx, observed) == {APPS[0]: 4001, APPS[2]: 4001}
    # --hosts selected only the first host: the third keeps what the LBs list; the second
    # was never deployed, so it is not listed.
    content, label = lbtier.render(ctx, {APPS[0]: "green"}, {APPS[0]: "2.0.0"}, observed)
    assert label == lbtier.MIXED
    servers = [line.strip() for line in content.splitlines()
               if line.strip().startswith("server ") and ":" in line]
    assert servers == [f"server 10.0.0.11:4002;  # {APPS[0]}",
                       f"server 192.168.5.13:4001;  # {APPS[2]}"]
    content, label = lbtier.render(ctx, dict.fromkeys(APPS, "green"),
                                   dict.fromkeys(APPS, "2.0.0"), observed)
    assert label == "green" and content.count("    server ") == 3
    assert 'default "green";' in content and 'default "2.0.0";' in content


@pytest.mark.unit
def test_lbs_that_disagree_or_an_interrupted_switch() -> None:
    ctx = lb_context(lb_config())
    a = "upstream x { server 10.0.0.11:4001; server 10.0.0.12:4002; }"
    b = "upstream x { server 10.0.0.11:4002; server 10.0.0.12:4002; }"
    observed = {"deploy@10.0.0.2": Observation(upstream=a), "lb2": Observation(upstream=b)}
    assert lbtier.served_ports(ctx, observed) == {APPS[1]: 4002}  # 10.0.0.11: no answer
    # A backup file means the switch is undone: the backup is what the LB serves.
    observed["lb2"] = Observation(upstream=b, backup=a)
    assert lbtier.served_ports(ctx, observed) == {APPS[0]: 4001, APPS[1]: 4002}
    assert lbtier.served_upstreams(ctx, observed)[APPS[0]] == "server 10.0.0.11:4001;"


@pytest.mark.unit
def test_server_lines_and_ipv6() -> None:
    cfg = lb_config()
    text = nginx.render_upstream(cfg, slot="blue", version="1", servers=[
        nginx.Server("fd00::11", 4001, "a"), nginx.Server("app2.internal", 4001, "b")])
    assert "server [fd00::11]:4001;  # a" in text and "server app2.internal:4001;  # b" in text
    assert lbtier.parse_servers(text) == {"fd00::11": 4001, "app2.internal": 4001}
    # Without an LB tier the one server is this host's own slot, as before.
    assert "    server 127.0.0.1:4002;\n    keepalive" in nginx.render_upstream(
        cfg, slot="green", version="1")


@pytest.mark.unit
def test_a_host_cannot_be_both_app_host_and_lb() -> None:
    cfg = lb_config(lbs=[APPS[0]])
    with pytest.raises(ConfigError, match="both an app host and a load balancer"):
        open_lbs(cfg, cfg.target(None))


@pytest.mark.unit
def test_slots_bind_every_address_behind_lbs_and_loopback_otherwise() -> None:
    behind = lb_context(lb_config()).runner.start_script("blue", 4001, "1.0.0")
    assert "export BG_BIND=0.0.0.0;" in behind
    cfg = configuration.parse({
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
    }, Path("/x/bluegreen.toml"))
    alone = Context(config=cfg, target=cfg.target(None), hosts=[]).runner
    assert "export BG_BIND=127.0.0.1;" in alone.start_script("blue", 4001, "1.0.0")
    # HOST follows BG_BIND unless the env file (loaded first) set it.
    show = bind_exports(BIND_ALL) + '; printf "%s %s" "$BG_BIND" "$HOST"'
    env = {"PATH": os.environ["PATH"]}
    assert subprocess.run(["sh", "-c", show], env=env, capture_output=True, text=True
                          ).stdout == "0.0.0.0 0.0.0.0"
    assert subprocess.run(["sh", "-c", "HOST=app.example; " + show], env=env,
                          capture_output=True, text=True).stdout == "0.0.0.0 app.example"


@pytest.mark.unit
def test_the_nginx_tier_is_chosen_once_from_the_target() -> None:
    """A target with ``lbs`` gets the load-balancer tier (nginx on the LBs for every app
    host, named in the plan's steps), one without gets nginx on each app host."""
    from bluegreen.ops.tier import Colocated

    cfg = lb_config()
    behind = lb_context(cfg).tier
    assert isinstance(behind, LoadBalancers)
    assert behind.names == ("deploy@10.0.0.2", "lb2")
    assert behind.nginx_names([APPS[0]]) == behind.names
    assert behind.app_nginx_test(lb_context(cfg)) is None  # an app host's nginx is not used
    assert behind.addresses(lb_context(cfg), "lb2", {APPS[0]: "green"}) == ["10.0.0.11:4002"]
    alone_cfg = configuration.parse({
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
    }, Path("/x/bluegreen.toml"))
    alone = Context(config=alone_cfg, target=alone_cfg.target(None), hosts=[])
    assert isinstance(alone.tier, Colocated) and alone.tier.hosts == []
    assert alone.tier.nginx_names(["a", "b"]) == ("a", "b")
    assert alone.tier.addresses(alone, "a", {"a": "green", "b": "blue"}) == ["127.0.0.1:4002"]
    assert alone.tier.app_nginx_test(alone) is not None
