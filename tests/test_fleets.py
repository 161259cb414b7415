"""Fleets on sandbox hosts (real sshd, nginx and netns hosts): a new empty host joining, a
canary subset first, a diverged fleet, and boot_limit batching."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import sandbox_config
from bluegreen.sandbox.hosts import SandboxHost
from bluegreen.sandbox.sample import build_sample
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

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The in-process operations below must not read the operator's ~/.ssh either.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    yield


def serving(hosts: Sequence[SandboxHost]) -> list[str]:
    return [through(h) for h in hosts]


def test_a_new_empty_host_joins_with_one_deploy(make_sandbox: MakeSandbox, tmp_path: Path
                                                 ) -> None:
    sandbox = make_sandbox(3)
    old, new = sandbox.hosts[:2], sandbox.hosts[2]
    art = tmp_path / "art"
    two = sandbox_config(sandbox, tmp_path / "bluegreen.toml", hosts=old)
    bg(two, "setup")
    bg(two, "deploy", str(build_sample(art, "1.0.0")))
    three = sandbox_config(sandbox, tmp_path / "bluegreen.toml")  # host 3 added, never set up
    with new_connections([h.address for h in old], clients=2, limit=60) as load:
        out = bg_json(three, "deploy", str(build_sample(art, "1.0.0")))
    total, failed = load.counts()
    assert failed == 0 and total > 20, failures(load)[:5]
    outcomes = {h["host"]: h["outcome"] for h in out["hosts"]}
    assert outcomes[old[0].spec] == outcomes[old[1].spec] == "unchanged"
    assert outcomes[new.spec].startswith("ship, start, gate, switch")
    assert "(2 already there)" in out["summary"]
    assert serving(sandbox.hosts) == ["hello 1.0.0 slot=blue"] * 3

    # The next release goes everywhere in one command, the new host included.
    with new_connections([h.address for h in old], clients=2, limit=60) as load:
        bg(three, "deploy", str(build_sample(art, "2.0.0")))
    total, failed = load.counts()
    assert failed == 0 and total > 20, failures(load)[:5]
    assert serving(sandbox.hosts) == ["hello 2.0.0 slot=green"] * 3


def test_canary_then_fleet_and_a_diverged_fleet(make_sandbox: MakeSandbox, tmp_path: Path
                                                ) -> None:
    sandbox = make_sandbox(3)
    first, rest = sandbox.hosts[0], sandbox.hosts[1:]
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml")
    art = tmp_path / "art"
    bg(config, "setup")
    bg(config, "deploy", str(build_sample(art, "1.0.0")))

    # Canary: 2.0.0 on the first host only, then on all of them: no refusal.
    canary = on_hosts(config, [first.spec], "deploy", build_sample(art, "2.0.0"))
    assert [h["host"] for h in canary["hosts"]] == [first.spec]
    assert serving(sandbox.hosts) == ["hello 2.0.0 slot=green"] + ["hello 1.0.0 slot=blue"] * 2
    st = status(config)
    assert st["diverged"] is True
    assert f"{first.spec}: green (2.0.0)" in st["divergence"]
    assert f"{rest[0].spec}: blue (1.0.0)" in st["divergence"]

    # Documented refusals on a diverged fleet, each with a hint that works.
    refused = bg(config, "rollback", check=False)
    assert refused.returncode == ExitCode.STATE, refused.stderr
    assert "different releases" in refused.stderr and "--hosts" in refused.stderr
    refused = bg(config, "switch", check=False)
    assert refused.returncode == ExitCode.STATE, refused.stderr
    assert "--to" in refused.stderr
    assert serving(sandbox.hosts)[0] == "hello 2.0.0 slot=green"  # nothing moved

    out = bg_json(config, "deploy", str(build_sample(art, "2.0.0")))
    outcomes = [h["outcome"] for h in out["hosts"]]
    assert outcomes[0] == "unchanged" and all(o.endswith("blue -> green") for o in outcomes[1:])
    assert serving(sandbox.hosts) == ["hello 2.0.0 slot=green"] * 3
    assert status(config)["diverged"] is False

    # The hint of a diverged rollback: roll back one host with --hosts...
    on_hosts(config, [first.spec], "rollback")
    assert serving(sandbox.hosts) == ["hello 1.0.0 slot=blue"] + ["hello 2.0.0 slot=green"] * 2
    # ... and `bg switch --to` converges the fleet on one slot, starting it where cold.
    out = bg_json(config, "switch", "--to", "green")
    outcomes = [h["outcome"] for h in out["hosts"]]
    assert outcomes == ["start, gate, switch: blue -> green", "unchanged", "unchanged"], out
    assert serving(sandbox.hosts) == ["hello 2.0.0 slot=green"] * 3
    st = status(config)
    assert st["ok"] and not st["diverged"], st


def test_boot_limit_boots_one_host_at_a_time(make_sandbox: MakeSandbox, tmp_path: Path
                                             ) -> None:
    sandbox = make_sandbox(3)
    config = sandbox_config(sandbox, tmp_path / "bluegreen.toml", extra="""
        [targets.sandbox]
        boot_limit = 1
        """)
    bg(config, "setup")
    art = tmp_path / "art"
    bg(config, "deploy", str(build_sample(art, "1.0.0")))
    # A release that takes a moment to boot: unbatched, the three boots would overlap.
    plan = bg_json(config, "deploy", "--dry-run", str(build_sample(art, "2.0.0",
                                                                   boot_delay=0.6)))
    assert any("1 host(s) at a time" in s["description"] for s in plan["plan"]["steps"])
    out = bg_json(config, "deploy", str(build_sample(art, "2.0.0", boot_delay=0.6)))
    assert sum("start 2.0.0 (batch" in s["title"] for s in out["steps"]) == 3
    windows = []
    for h in sandbox.hosts:
        journal = [json.loads(line) for line in
                   h.srv("/srv/hello/bg/journal.jsonl").read_text().splitlines()]
        mine = [e for e in journal if e.get("version") == "2.0.0"]
        started = next(e["time"] for e in mine if e["step"] == "start" and e["outcome"] == "ok")
        healthy = next(e["time"] for e in mine if e["step"] == "health" and e["outcome"] == "ok")
        windows.append((started, healthy))
    windows.sort()
    for (_, healthy), (next_start, _) in itertools.pairwise(windows):
        assert healthy <= next_start, windows  # never two new slots booting at once
    assert serving(sandbox.hosts) == ["hello 2.0.0 slot=green"] * 3
