"""`bg remove` and `bg history` over SSH on a sandbox host (own network, sshd, nginx)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from bluegreen.sandbox.sample import build_sample
from tests.sandbox_fixtures import MakeSandbox
from tests.test_ssh_e2e import bg, setup, through_nginx


def test_remove_over_ssh(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    config = setup(sandbox, tmp_path)
    bg(config, "deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    assert through_nginx(host)[0] == "hello 1.0.0 slot=blue"

    refused = bg(config, "remove", check=False)
    assert refused.returncode == 2 and "traffic is live" in refused.stderr, refused.stderr
    assert through_nginx(host)[0] == "hello 1.0.0 slot=blue"

    out = json.loads(bg(config, "remove", "--force", "--json", "--hosts", "10.231.*"
                        ).stdout)["result"]
    assert out["hosts"][0]["outcome"].startswith("removed: 503 stand-in"), out
    r = httpx.get(f"http://{host.address}/", headers={"Connection": "close"}, timeout=5)
    assert r.status_code == 503 and "hello was removed" in r.text
    assert not host.srv("/srv/hello/slots").exists()
    assert not host.srv("/srv/hello/bg/state.json").exists()
    assert host.srv("/srv/hello/releases/1.0.0").is_dir()
    lines = bg(config, "history").stdout.splitlines()
    assert [ln.split()[2:5] for ln in lines[1:]] == [  # the refusal changed nothing
        ["deploy", "1.0.0", "ok"], ["remove", "-", "ok"]], lines
