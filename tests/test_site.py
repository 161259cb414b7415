"""The site `bg init` writes on a Debian-shaped nginx (issue 18, items 2, 3 and 6):
Debian's `sites-enabled/default` (`default_server`) beside it, hyphenated app names, two
apps on one nginx. Every test runs `bg init` as a user does, includes what it wrote and
runs the real nginx (see tests/debian_nginx.py)."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.config import DEFAULT_HEALTH, write_config
from bluegreen.sandbox.sample import build_sample
from tests.debian_nginx import DebianNginx, debian_nginx  # noqa: F401  (fixture)
from tests.operator_fixtures import bg, envelope

WELCOME = "Welcome to nginx!"


class App:
    """One app made by `bg init` in a directory of its own name, on ``nginx``."""

    def __init__(self, tmp: Path, server: DebianNginx, name: str, *init: str,
                 **overrides: Any) -> None:
        nginx = server
        self.dir = tmp / name
        self.dir.mkdir()
        self.nginx = nginx
        proc = bg("init", "--nginx-dir", str(nginx.prefix), "--listen", str(nginx.port),
                  *init, cwd=self.dir)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.init_output = proc.stdout
        self.host = init[init.index("--server-name") + 1] if "--server-name" in init else ""
        self.config = self.dir / "bluegreen.toml"
        doc = tomllib.loads(self.config.read_text())
        self.name: str = doc["app"]["name"]
        # Only what differs from a real server: paths under the test's directory.
        doc["app"]["root"] = str(tmp / "srv" / self.name)
        doc["app"]["stop_timeout"] = 10
        doc["health"] = {**doc["health"], **DEFAULT_HEALTH}
        doc["nginx"].update(test_command=nginx.test_command,
                            reload_command=nginx.reload_command,
                            pid_file=str(nginx.pid_file))
        doc["switch"]["drain_timeout"] = 10
        for table, values in overrides.items():
            doc[table].update(values)
        write_config(self.config, doc)
        self.doc = doc
        self.site = self.dir / "bluegreen-site.conf"
        # The site bg init wrote logs under the root it put in the config (/srv/<app>).
        self.site.write_text(self.site.read_text().replace(
            f"/srv/{self.name}/logs/", f"{doc['app']['root']}/logs/"))

    @property
    def upstream(self) -> Path:
        return Path(self.doc["nginx"]["upstream_file"])

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.doc["slots"])

    def bg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = bg("-c", str(self.config), *args, cwd=self.dir)
        if check:
            assert proc.returncode == 0, f"bg {args}: {proc.stdout}\n{proc.stderr}"
        return proc

    def artifact(self, version: str) -> str:
        return str(build_sample(self.dir / "art", version, app=self.name))

    def check(self) -> dict[str, Any]:
        proc = self.bg("--json", "check", check=False)
        result: dict[str, Any] = envelope(proc)["result"]
        return {c["check"]: c for c in result["checks"] if c["host"] == "local"}

    def stop(self) -> None:
        self.bg("--json", "status", check=False)
        import contextlib
        import os
        import signal

        for pidfile in (Path(self.doc["app"]["root"]) / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pidfile.read_text().strip()), signal.SIGKILL)


def server_line(path: Path) -> int:
    """The line of the file's first `server {`, as nginx -T numbers it."""
    lines = path.read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if ln.strip().startswith("server {"))


def failed(checks: dict[str, Any]) -> dict[str, Any]:
    return {n: c for n, c in checks.items() if c["status"] == "fail"}


# ------------------------------------------------------------------ 2. the shadowed site


def test_a_site_without_server_name_is_shadowed_by_debians_default(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    """`bg init` without --server-name on Debian: the default site wins every request.
    `bg check` and `bg deploy` say so, naming Debian's block and the fix; nothing changes."""
    nginx = debian_nginx
    app = App(tmp_path, nginx, "shop")
    assert "default_server" in app.init_output  # init saw this machine's default site
    nginx.enable(app.site, "shop")
    app.bg("setup")
    nginx.start()
    try:
        assert WELCOME in nginx.get("shop.example").text
        site = failed(app.check()).get("site")
        assert site is not None, app.check()
        where = f"{nginx.default_site}:{server_line(nginx.default_site)}"
        assert where in site["detail"] and "default_server" in site["detail"]
        assert "server_name" in site["hint"] and "--server-name" in site["hint"]

        before = app.upstream.read_bytes()
        proc = app.bg("deploy", app.artifact("1.0.0"), check=False)
        assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
        assert where in proc.stderr and "server_name" in proc.stderr
        assert app.upstream.read_bytes() == before
        assert app.bg("--json", "status", check=False).stdout.count('"running": true') == 0
    finally:
        app.stop()


def test_a_site_with_server_name_coexists_with_debians_default(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    nginx = debian_nginx
    app = App(tmp_path, nginx, "shop", "--server-name", "shop.example")
    assert "server_name shop.example;" in app.site.read_text()
    assert "default_server" not in app.site.read_text()
    nginx.enable(app.site, "shop")
    app.bg("setup")
    nginx.start()
    try:
        checks = app.check()
        assert not failed(checks), checks
        assert checks["site"]["status"] == "ok" and "shop.example" in checks["site"]["detail"]
        app.bg("deploy", app.artifact("1.0.0"))
        r = nginx.get("shop.example")
        assert r.text.strip() == "hello 1.0.0 slot=blue" and r.headers["x-bg-slot"] == "blue"
        assert WELCOME in nginx.get("other.example").text  # Debian's default, untouched
    finally:
        app.stop()


def test_a_switch_refuses_when_the_site_became_shadowed(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    """A warm switch stages, tests and reloads in one round trip: the server blocks come
    back with it, and a shadowed site undoes the switch (the upstream file as it was)."""
    nginx = debian_nginx
    app = App(tmp_path, nginx, "shop", "--server-name", "shop.example")
    enabled = nginx.enable(app.site, "shop")
    app.bg("setup")
    nginx.start()
    try:
        app.bg("deploy", app.artifact("1.0.0"))
        app.bg("deploy", app.artifact("2.0.0"), "--keep-old")
        assert nginx.get("shop.example").text.strip() == "hello 2.0.0 slot=green"
        enabled.write_text(enabled.read_text().replace("server_name shop.example;",
                                                       "server_name _;"))
        before = app.upstream.read_bytes()
        proc = app.bg("switch", check=False)
        assert proc.returncode == ExitCode.SWITCH, proc.stdout + proc.stderr
        assert f"{nginx.default_site}:{server_line(nginx.default_site)}" in proc.stderr
        assert app.upstream.read_bytes() == before
        assert app.bg("--json", "status").stdout.count('"live": "green"') == 1
    finally:
        app.stop()


def test_probe_url_answered_by_another_server_names_it(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    """The site has its X-BG-Slot line, but probe_url asks for a host only Debian's
    default answers: the refusal names that server block, not the add_header line."""
    nginx = debian_nginx
    app = App(tmp_path, nginx, "shop", "--server-name", "shop.example",
              nginx={"probe_url": f"http://127.0.0.1:{nginx.port}/"})
    assert "add_header X-BG-Slot" in app.site.read_text()
    nginx.enable(app.site, "shop")
    app.bg("setup")
    nginx.start()
    try:
        site = failed(app.check()).get("site")
        where = f"{nginx.default_site}:{server_line(nginx.default_site)}"
        assert site is not None and where in site["detail"] and "probe_url" in site["detail"]
        proc = app.bg("deploy", app.artifact("1.0.0"), check=False)
        assert proc.returncode != 0
        assert where in proc.stderr
        assert "add `add_header" not in proc.stderr
    finally:
        app.stop()


# ------------------------------------------------------------- 3. hyphenated app names


@pytest.mark.parametrize("name", ["my-shop", "catalog-prod", "shop2", "my_shop_2", "a-1-b"])
def test_every_valid_name_gives_a_config_nginx_accepts(
        debian_nginx: DebianNginx, tmp_path: Path, name: str) -> None:  # noqa: F811
    """`bg init` in a directory named like the app; the site and the upstream file bg
    writes pass the real `nginx -t` (was: `$my-shop_slot`, unknown "my" variable)."""
    nginx = debian_nginx
    app = App(tmp_path, nginx, name, "--server-name", f"{name}.example")
    assert app.name == name
    nginx.enable(app.site, name)
    app.bg("setup")
    test = subprocess.run(nginx.argv("-t"), capture_output=True, text=True)
    assert test.returncode == 0, test.stderr


def test_names_whose_nginx_identifiers_collide_are_refused(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    nginx = debian_nginx
    App(tmp_path, nginx, "my-shop", "--server-name", "a.example").bg("setup")
    other = tmp_path / "my_shop"
    other.mkdir()
    proc = bg("init", "--nginx-dir", str(nginx.prefix), "--listen", str(nginx.port), cwd=other)
    assert proc.returncode == ExitCode.USAGE
    assert "my-shop" in proc.stderr and "my_shop_live" in proc.stderr
    assert list(other.iterdir()) == []


# ------------------------------------------------------------ 6. two apps on one nginx


def test_two_apps_on_one_nginx(debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    nginx = debian_nginx
    shop = App(tmp_path, nginx, "my-shop", "--server-name", "shop.example")
    shop.bg("setup")  # its upstream file tells the next `bg init` which ports it uses
    catalog = App(tmp_path, nginx, "catalog-prod", "--server-name", "catalog.example")
    assert not set(shop.ports.values()) & set(catalog.ports.values())
    for a in (shop, catalog):
        nginx.enable(a.site, a.name)
    catalog.bg("setup")
    nginx.start()
    try:
        for a in (shop, catalog):
            assert not failed(a.check()), a.check()
        shop.bg("deploy", shop.artifact("1.0.0"))
        catalog.bg("deploy", catalog.artifact("1.0.0"))
        assert nginx.get("shop.example").text.strip() == "hello 1.0.0 slot=blue"
        assert nginx.get("catalog.example").text.strip() == "hello 1.0.0 slot=blue"

        def untouched(a: App, serves: str, action: Callable[[], object]) -> None:
            file, pids = a.upstream.read_bytes(), running(a)
            action()
            assert a.upstream.read_bytes() == file and running(a) == pids
            assert nginx.get(a.host).text.strip() == serves

        untouched(catalog, "hello 1.0.0 slot=blue",
                  lambda: shop.bg("deploy", shop.artifact("2.0.0")))
        assert nginx.get("shop.example").text.strip() == "hello 2.0.0 slot=green"
        untouched(shop, "hello 2.0.0 slot=green",
                  lambda: catalog.bg("deploy", catalog.artifact("2.0.0"), "--keep-old"))
        untouched(shop, "hello 2.0.0 slot=green", lambda: catalog.bg("switch"))
        assert nginx.get("catalog.example").text.strip() == "hello 1.0.0 slot=blue"
        untouched(catalog, "hello 1.0.0 slot=blue", lambda: shop.bg("rollback"))
        assert nginx.get("shop.example").text.strip() == "hello 1.0.0 slot=blue"
    finally:
        shop.stop()
        catalog.stop()


def running(a: App) -> dict[str, str]:
    root = Path(a.doc["app"]["root"]) / "run"
    return {p.name: p.read_text().strip() for p in sorted(root.glob("*.pid"))}


def test_check_names_the_other_app_when_ports_clash(
        debian_nginx: DebianNginx, tmp_path: Path) -> None:  # noqa: F811
    """A second app configured by hand with the first one's ports: before its `bg setup`,
    `bg check` names the first app for both slot ports and the probe port."""
    nginx = debian_nginx
    shop = App(tmp_path, nginx, "my-shop", "--server-name", "shop.example")
    nginx.enable(shop.site, shop.name)
    shop.bg("setup")
    nginx.start()
    try:
        shop.bg("deploy", shop.artifact("1.0.0"))
        other = App(tmp_path, nginx, "other", "--server-name", "other.example",
                    slots=shop.ports, nginx={"probe_port": 0})
        bad = failed(other.check())
        blue, green = shop.ports["blue"], shop.ports["green"]
        for name in (f"slot blue port {blue}", f"slot green port {green}",
                     f"probe port {blue + 10000}"):
            assert name in bad, bad
            assert "my-shop" in bad[name]["detail"], bad[name]
        assert "not started by bg" not in str(bad)
        # Deployed anyway: refused at the taken port, naming the app; my-shop untouched.
        nginx.enable(other.site, other.name)
        other.bg("setup")
        file, pids = shop.upstream.read_bytes(), running(shop)
        proc = other.bg("deploy", other.artifact("1.0.0"), check=False)
        assert proc.returncode != 0 and "app=my-shop" in proc.stderr, proc.stderr
        assert shop.upstream.read_bytes() == file and running(shop) == pids
        assert nginx.get("shop.example").text.strip() == "hello 1.0.0 slot=blue"
    finally:
        shop.stop()
