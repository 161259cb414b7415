"""Switch confirmation through bg's own probe server: a stock nginx site (no X-BG-Slot
line, no probe_url) deploys, switches and rolls back confirmed; two apps on one nginx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bluegreen import nginx
from bluegreen.config import Config, parse
from bluegreen.errors import ExitCode
from bluegreen.probe import ViaHttpx
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace
from tests.operator_fixtures import stock  # noqa: F401  (fixture)


def cfg(probe_url: str = "", **slots: int) -> Config:
    raw = {"app": {"name": "shop", "root": "/srv/shop", "command": "x"},
           "slots": slots or {"blue": 4001, "green": 4002},
           "nginx": {"upstream_file": "/etc/nginx/conf.d/shop.conf", "probe_url": probe_url}}
    return parse(raw, Path("/x/bluegreen.toml"))


@pytest.mark.unit
def test_upstream_file_defines_the_probe_server() -> None:
    config = cfg()
    text = nginx.render_upstream(config, slot="green", version="1.0.0")
    assert "listen 127.0.0.1:14001;" in text
    assert 'add_header X-BG-Slot "green" always;' in text
    assert 'add_header X-BG-App "shop" always;' in text
    assert "proxy_pass http://shop_live;" in text


@pytest.mark.unit
def test_probe_port_derives_from_the_blue_port() -> None:
    assert cfg(blue=5001, green=5002).nginx.probe_port == 15001
    assert cfg(blue=25001, green=25002).nginx.probe_port == 15001


def answer(app: str, slot: str, upstream: str, status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"X-BG-App": app, "X-BG-Slot": slot,
                                               "X-BG-Upstream": upstream})
    return httpx.MockTransport(handle)


@pytest.mark.unit
@pytest.mark.parametrize("app,slot,upstream,status,ok,says", [
    ("shop", "green", "127.0.0.1:4002", 200, True, ""),
    ("shop", "blue", "127.0.0.1:4001", 200, False, "from slot 'blue'"),
    ("other", "green", "127.0.0.1:4002", 200, False, "own [nginx] probe_port"),
    ("shop", "green", "127.0.0.1:4001", 200, False, "expected port 4002"),
    ("shop", "green", "127.0.0.1:4002", 502, False, "HTTP 502"),
])
def test_confirm_judges_the_probe_answer(app: str, slot: str, upstream: str, status: int,
                                         ok: bool, says: str) -> None:
    got = nginx.confirm(ViaHttpx(answer(app, slot, upstream, status)), cfg(), "green",
                        timeout=0.1)
    assert got.ok is ok
    assert says in got.detail


@pytest.mark.unit
def test_a_probe_url_is_checked_too() -> None:
    config = cfg(probe_url="http://127.0.0.1/")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.port == 14001:
            return httpx.Response(200, headers={"X-BG-App": "shop", "X-BG-Slot": "green"})
        return httpx.Response(200)  # the user's site without the X-BG-Slot line

    got = nginx.confirm(ViaHttpx(httpx.MockTransport(handle)), config, "green",
                        timeout=0.1)
    assert not got.ok and "http://127.0.0.1/" in got.detail and "add_header" in got.detail


def test_stock_site_deploy_switch_rollback_confirmed(stock: Workspace,  # noqa: F811
                                                     tmp_path: Path) -> None:
    ws = stock
    site = (ws.nginx.prefix / "sites" / "hello.conf").read_text()
    assert "X-BG" not in site and "probe_url" not in ws.config.read_text()

    def served() -> str:
        r = ws.get()
        assert r.status_code == 200 and "X-BG-Slot" not in r.headers
        return r.text.strip()

    # Each switch is confirmed (or it fails and is undone): here only bg's probe server can
    # confirm it, since the site sends no X-BG-Slot.
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    assert served() == "hello 1.0.0 slot=blue"
    ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), "--keep-old")
    assert served() == "hello 2.0.0 slot=green"
    ws.bg("rollback")
    assert served() == "hello 1.0.0 slot=blue"
    ws.bg("switch")
    assert served() == "hello 2.0.0 slot=green"
    assert ws.status()["hosts"][0]["nginx"]["serving"] == "green"


def test_two_apps_with_one_probe_port_refuse_to_confirm(stock: Workspace,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """A second app whose upstream file claims the same probe port (its probe server on the
    usual and on green's own address, as bg renders it): nginx ignores our probe server
    there (first one wins), so our switch must not be confirmed by the other app's."""
    ws = stock
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    port = nginx_probe_port(ws)
    other = ws.nginx.prefix / "conf.d" / "aaa-other.conf"  # sorted first: its server wins
    green = nginx.generation_address("green")
    other.write_text(f"upstream other_live {{ server 127.0.0.1:{ws.ports['green']}; }}\n"
                     f"server {{ listen 127.0.0.1:{port}; listen {green}:{port};"
                     " location / {\n"
                     f"  proxy_pass http://other_live;\n"
                     f'  add_header X-BG-App "other" always; add_header X-BG-Slot "green" always;'
                     f"\n}} }}\n")
    proc = ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), check=False)
    assert proc.returncode == ExitCode.SWITCH, proc.stderr
    assert "own [nginx] probe_port" in proc.stderr
    assert ws.get().text.strip() == "hello 1.0.0 slot=blue"  # restored
    check = ws.bg("check", check=False)
    assert check.returncode == ExitCode.USAGE and "aaa-other.conf" in check.stdout


def nginx_probe_port(ws: Workspace) -> int:
    from bluegreen.config import load

    return load(ws.config).nginx.probe_port
