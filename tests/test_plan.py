"""The planners as data: per-host actions and steps, no I/O (unit tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen import config
from bluegreen.errors import BgError, StateError
from bluegreen.ops.plan import (
    Action,
    Boot,
    Finish,
    Hook,
    HostFacts,
    Plan,
    Switch,
    Upload,
    plan_deploy,
    plan_rollback,
    plan_switch,
)
from bluegreen.state import HostState

pytestmark = pytest.mark.unit

CFG = config.parse(
    {
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
    },
    Path("/x/bluegreen.toml"),
)
SHA = "a" * 64
V1 = HostState().switched("blue", "1.0.0")
V2 = V1.switched("green", "2.0.0")


def facts(state: HostState, *, warm: dict[str, bool] | None = None, sha: str = "") -> HostFacts:
    return HostFacts(state=state, warm=warm or {}, release_sha=sha)


def deploy(hosts: dict[str, HostFacts], version: str = "2.0.0", *, retire: bool = True,
           batch: int = 10, cfg: config.Config = CFG) -> Plan:
    return plan_deploy(cfg, hosts, version, sha256=SHA, retire=retire, boot_batch=batch)


def test_first_deploy_goes_to_blue_and_retires_nothing() -> None:
    plan = deploy({"a": facts(HostState())}, "1.0.0")
    h = plan.host("a")
    assert (h.action, h.slot, h.old_slot, h.retire) == (Action.SHIP, "blue", None, None)
    assert [type(s) for s in plan.steps] == [Upload, Boot, Switch, Finish]
    assert "start 1.0.0 in blue (:4001)" in plan.describe(CFG)[1]


def test_second_deploy_goes_to_the_idle_slot_and_retires_the_old_one() -> None:
    plan = deploy({"a": facts(V1, warm={"blue": True})})
    h = plan.host("a")
    assert (h.slot, h.old_slot, h.old_version, h.retire) == ("green", "blue", "1.0.0", "blue")
    finish = plan.steps[-1]
    assert isinstance(finish, Finish) and finish.retire == {"a": "blue"} and finish.prune
    assert plan.describe(CFG)[-1].endswith("stop blue; prune releases beyond 5")


def test_release_already_on_the_host_is_not_uploaded_again() -> None:
    plan = deploy({"a": facts(V1, sha=SHA)})
    assert plan.host("a").action is Action.START
    assert [type(s) for s in plan.steps] == [Boot, Switch, Finish]


def test_release_with_another_checksum_is_refused() -> None:
    with pytest.raises(BgError, match="another checksum"):
        deploy({"a": facts(V1, sha="b" * 64)})


def test_fleet_converges_per_host() -> None:
    """Live with V → nothing; V warm in idle → switch only; new host → ship."""
    live_v2 = V1.switched("green", "2.0.0")
    warm_idle = HostState(live="blue", versions={"blue": "1.0.0", "green": "2.0.0"})
    plan = deploy({
        "done": facts(live_v2, warm={"green": True}),
        "warm": facts(warm_idle, warm={"green": True}),
        "old": facts(V1, warm={"blue": True}),
        "new": facts(HostState()),
    })
    actions = {h.host: h.action for h in plan.hosts}
    assert actions == {"done": Action.NOTHING, "warm": Action.SWITCH, "old": Action.SHIP,
                       "new": Action.SHIP}
    boot = next(s for s in plan.steps if isinstance(s, Boot))
    assert boot.slots == {"old": "green", "new": "blue"}
    switch = next(s for s in plan.steps if isinstance(s, Switch))
    # Every host that switches switches in one step (two-phase, all or nothing).
    assert switch.slots == {"warm": "green", "old": "green", "new": "blue"}
    assert "done" not in switch.slots


def test_live_with_the_version_but_not_healthy_is_redeployed() -> None:
    plan = deploy({"a": facts(V1.switched("green", "2.0.0"), warm={"green": False})})
    assert plan.host("a").action is not Action.NOTHING


def test_everything_already_live_plans_no_step() -> None:
    plan = deploy({"a": facts(V2, warm={"green": True})})
    assert plan.steps == () and plan.acting == ()


def test_boot_limit_sets_the_batch() -> None:
    plan = deploy({n: facts(V1) for n in "abc"}, batch=1)
    boot = next(s for s in plan.steps if isinstance(s, Boot))
    assert boot.batch == 1 and "1 host(s) at a time" in boot.describe(CFG)


def test_hooks_are_steps_at_their_points() -> None:
    cfg = config.parse({
        "app": {"name": "hello", "root": "/srv/hello", "command": "x", "migrate": "m"},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/h.conf"},
        "hooks": {"before_start": ["echo 1"], "before_switch": ["migrate"],
                  "after_switch": ["local: echo 3"], "after_deploy": ["echo 4"]},
    }, Path("/x/bluegreen.toml"))
    plan = deploy({"a": facts(V1)}, cfg=cfg)
    kinds = [(type(s).__name__, getattr(s, "point", "")) for s in plan.steps]
    assert kinds == [("Upload", ""), ("Hook", "before_start"), ("Boot", ""),
                     ("Hook", "before_switch"), ("Switch", ""), ("Hook", "after_switch"),
                     ("Finish", ""), ("Hook", "after_deploy")]
    hook = plan.steps[5]
    assert isinstance(hook, Hook) and "on the controller" in hook.describe(cfg)


def test_rollback_warm_is_a_switch_cold_starts() -> None:
    warm = plan_rollback(CFG, {"a": facts(V2, warm={"blue": True})}, retire=False, boot_batch=1)
    assert warm.host("a").action is Action.SWITCH and warm.host("a").version == "1.0.0"
    assert [type(s) for s in warm.steps] == [Switch, Finish]
    cold = plan_rollback(CFG, {"a": facts(V2)}, retire=True, boot_batch=1)
    assert cold.host("a").action is Action.START and cold.host("a").retire == "green"


def test_rollback_refusals() -> None:
    with pytest.raises(BgError, match="nothing is deployed"):
        plan_rollback(CFG, {"a": facts(HostState())}, retire=True, boot_batch=1)
    with pytest.raises(BgError, match="no previous release"):
        plan_rollback(CFG, {"a": facts(V1)}, retire=True, boot_batch=1)


def test_rollback_on_a_diverged_fleet_refuses_with_a_working_hint() -> None:
    with pytest.raises(StateError, match="different releases") as err:
        plan_rollback(CFG, {"a": facts(V2), "b": facts(V1)}, retire=True, boot_batch=1)
    assert "--hosts" in err.value.hint and "bg deploy" in err.value.hint


def test_switch_refusals() -> None:
    with pytest.raises(BgError, match="never run a release"):
        plan_switch(CFG, {"a": facts(V1)}, to=None, retire=True, boot_batch=1)
    with pytest.raises(BgError, match="already live"):
        plan_switch(CFG, {"a": facts(V1)}, to="blue", retire=True, boot_batch=1)


def test_switch_on_a_diverged_fleet() -> None:
    a = V2  # green live
    b = HostState(live="blue", versions={"blue": "1.0.0", "green": "2.0.0"})
    with pytest.raises(StateError, match="different slots") as err:
        plan_switch(CFG, {"a": facts(a), "b": facts(b)}, to=None, retire=True, boot_batch=1)
    assert "--to" in err.value.hint
    # --to converges: a is already there, b switches (warm) to green.
    plan = plan_switch(CFG, {"a": facts(a), "b": facts(b, warm={"green": True})}, to="green",
                       retire=True, boot_batch=1)
    assert plan.host("a").action is Action.NOTHING
    assert plan.host("b").action is Action.SWITCH


def test_plan_json_lists_hosts_and_steps() -> None:
    data = deploy({"a": facts(V1)}).to_json(CFG)
    assert data["hosts"][0]["action"] == "ship, start, gate, switch"
    assert [s["kind"] for s in data["steps"]] == ["upload", "boot", "switch", "finish"]
