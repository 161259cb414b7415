"""The configs the tests and the sandbox write: built as data, escaped, loadable by bg."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bluegreen import config as bg_config
from bluegreen.sandbox.config import merge, parse_fragment, sandbox_config
from bluegreen.sandbox.hosts import Sandbox
from tests.helpers import make_workspace

pytestmark = pytest.mark.unit

AWKWARD = 'a "quoted" dir\\with # and ]'


def test_workspace_config_escapes_paths_and_loads(tmp_path: Path) -> None:
    tmp = tmp_path / AWKWARD
    tmp.mkdir()
    ws = make_workspace(tmp)
    raw = tomllib.loads(ws.config.read_text())
    assert raw["app"]["root"] == str(tmp / "srv" / "hello")
    assert raw["nginx"]["upstream_file"] == ws.nginx.upstream_file
    assert raw["app"]["runner"] == "command" and raw["health"]["deadline"] == 15.0
    loaded = bg_config.load(ws.config)
    assert loaded.app.root == str(tmp / "srv" / "hello")
    assert loaded.nginx.test_command == ws.nginx.test_command


def test_workspace_fragments_are_parsed_and_merged(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path,
        app_section='runner = "command"\ncommand = "bin/other"\nenv_file = ".env"',
        health={"interval": 0.5, "timeout": 2.0, "deadline": 9.0},
        extra='\n[hooks]\nbefore_switch = ["true"]\n[switch]\ndrain_timeout = 3\n',
    )
    raw = tomllib.loads(ws.config.read_text())
    assert raw["app"]["command"] == "bin/other" and raw["app"]["env_file"] == ".env"
    assert raw["app"]["name"] == "hello"  # the base keys stay
    assert raw["health"] == {"interval": 0.5, "timeout": 2.0, "deadline": 9.0}
    assert raw["hooks"] == {"before_switch": ["true"]}
    assert raw["switch"] == {"drain_timeout": 3}
    assert raw["slots"] == ws.ports


def test_bad_fragment_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra is not valid TOML"):
        make_workspace(tmp_path, extra="[hooks\n")
    assert not (tmp_path / "bluegreen.toml").exists()


def test_merge_is_recursive_and_leaves_its_inputs() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    assert merge(base, {"a": {"y": 3}, "c": [1]}) == {"a": {"x": 1, "y": 3}, "b": 1, "c": [1]}
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}
    assert parse_fragment({"k": "v"}, "x") == {"k": "v"}
    assert parse_fragment("", "x") == {}


def test_sandbox_config_lists_every_host_and_loads(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sbx", 2)
    sandbox.hosts = [sandbox._host(3), sandbox._host(4)]  # described, not started
    known = tmp_path / AWKWARD / "known_hosts"
    path = sandbox_config(
        sandbox, tmp_path / "bluegreen.toml", target="fleet", parallel=2, known_hosts=known,
        extra={"targets": {"fleet": {"parallel": 1}}},
    )
    raw = tomllib.loads(path.read_text())
    fleet = raw["targets"]["fleet"]
    assert fleet["hosts"] == ["root@10.231.3.2", "root@10.231.4.2"]
    assert fleet["known_hosts"] == str(known)
    assert fleet["identity_file"] == str(sandbox.identity_file)
    assert fleet["parallel"] == 1
    assert raw["app"] == {
        "name": "hello", "root": "/srv/hello", "keep_releases": 3, "stop_timeout": 10,
        "runner": "command", "command": "bin/server",
    }
    loaded = bg_config.load(path)
    assert loaded.nginx.upstream_file == "/srv/nginx/conf.d/hello.bluegreen.conf"
    assert [str(h) for h in loaded.targets["fleet"].hosts] == fleet["hosts"]


def test_sandbox_config_for_a_load_balancer_tier(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sbx", 3, shared_network=True)
    sandbox.hosts = [sandbox._host(5), sandbox._host(6), sandbox._host(7)]
    lb, *apps = sandbox.hosts
    path = sandbox_config(sandbox, tmp_path / "bluegreen.toml", lbs=[lb])
    target = bg_config.load(path).targets["sandbox"]
    assert target.hosts == ("root@10.231.6.2", "root@10.231.7.2")
    assert target.lbs == ("root@10.231.5.2",)
    assert [target.address_of(h.spec) for h in apps] == ["10.232.0.6", "10.232.0.7"]
