"""`bg check`: passes on a good host, and names the failing check for each broken one."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from bluegreen.config import parse
from bluegreen.errors import ExitCode
from bluegreen.facts import check as checks
from tests.helpers import Workspace
from tests.operator_fixtures import envelope


def cfg(**nginx: Any) -> Any:
    raw = {"app": {"name": "shop", "root": "/srv/shop", "command": "x"},
           "nginx": {"upstream_file": "/etc/nginx/conf.d/shop.bluegreen.conf", **nginx}}
    return parse(raw, Path("/x/bluegreen.toml"))


GOOD = """\
@@ nginx-bin
/usr/sbin/nginx
@@ nginx-test
rc=0
@@ pid-file
pid=100
nginx: master process /usr/sbin/nginx
@@ masters
  100 nginx: master process /usr/sbin/nginx
@@ dump
# configuration file /etc/nginx/nginx.conf:
    include /etc/nginx/conf.d/*.conf;
pid /run/nginx.pid;
# configuration file /etc/nginx/conf.d/shop.bluegreen.conf:
    listen 127.0.0.1:14001;
@@ layout
1:# configuration file /etc/nginx/nginx.conf:
2:http {
3:    include /etc/nginx/conf.d/*.conf;
4:    include /etc/nginx/sites-enabled/*;
5:}
7:# configuration file /etc/nginx/conf.d/shop.bluegreen.conf:
9:# app=shop live=blue version=1.0.0 port=4001 at=2026-01-01T00:00:00Z
10:# slots=4001,4002 probe=14001
11:upstream shop_live { server 127.0.0.1:4001; }
12:server { listen 127.0.0.1:14001; location / { proxy_pass http://shop_live;
13:    add_header X-BG-App "shop" always; } }
15:# configuration file /etc/nginx/sites-enabled/default:
16:server {
17:    listen 80 default_server;
18:    server_name _;
19:}
21:# configuration file /etc/nginx/sites-enabled/shop:
22:server {
23:    listen 80;
24:    server_name shop.example.com;
25:    location / { proxy_pass http://shop_live; }
26:}
@@ bg-files
== /etc/nginx/conf.d/shop.bluegreen.conf
# app=shop live=blue version=1.0.0 port=4001 at=2026-01-01T00:00:00Z
# slots=4001,4002 probe=14001
@@ port-blue
bgpid 200
pid 200 server /srv/shop/releases/1.0.0 ./bin/server
@@ port-green
bgpid
free
@@ probe-port
pid 100 nginx / nginx: master process
@@ root
dir /srv/shop
writable
free-kb 10000000
largest-kb 1000
@@ lock
"""


def statuses(output: str, **nginx: Any) -> dict[str, str]:
    lines = checks.evaluate(cfg(**nginx), "web-1", output, marker="@@", local=False)
    return {line.name: line.status for line in lines}


@pytest.mark.unit
def test_a_good_host_passes_every_check() -> None:
    got = statuses(GOOD)
    assert set(got.values()) == {"ok"}, got
    assert set(got) == {"nginx installed", "nginx -t", "nginx master", "upstream included",
                        "nginx names", "site", "slot blue port 4001", "slot green port 4002",
                        "probe port 14001", "root writable", "disk space", "lock free",
                        "access log", "slot blue leftovers", "slot green leftovers"}


@pytest.mark.unit
@pytest.mark.parametrize("broken,name", [
    (("/usr/sbin/nginx\n@@ nginx-test", "missing\n@@ nginx-test"), "nginx installed"),
    (("rc=0", "rc=1\nnginx: [emerg] unknown directive"), "nginx -t"),
    (("pid=100\nnginx: master process /usr/sbin/nginx", "pid=\n"), "nginx master"),
    (("conf.d/*.conf;\npid /run/nginx.pid;\n# configuration file /etc/nginx/conf.d/shop.bl"
      "uegreen.conf:\n    listen 127.0.0.1:14001;", "sites-enabled/*;\npid /run/nginx.pid;"),
     "upstream included"),
    (("pid 200 server /srv/shop", "pid 300 redis-server /var/lib"), "slot blue port 4001"),
    (("pid 100 nginx / nginx", "pid 400 python3 /"), "probe port 14001"),
    (("\nwritable", "\nnot-writable mktemp: Permission denied"), "root writable"),
    (("free-kb 10000000", "free-kb 100"), "disk space"),
    (("@@ lock\n", '@@ lock\nheld\n{"user": "ann"}\n'), "lock free"),
    (("server_name shop.example.com;", "server_name _;"), "site"),
    (("@@ port-blue", "== /etc/nginx/conf.d/a.conf\n# app=other live=blue\n"
      "    server 127.0.0.1:4001;\n@@ port-blue"), "slot blue port 4001"),
    (("@@ port-blue", "== /etc/nginx/conf.d/a.conf\n# app=other live=green\n"
      "    listen 127.0.0.1:14001;\n@@ port-blue"), "probe port 14001"),
])
def test_each_broken_host_names_its_check(broken: tuple[str, str], name: str) -> None:
    out = GOOD.replace(*broken)
    assert out != GOOD
    got = statuses(out)
    assert got[name] == "fail", got
    assert [n for n, s in got.items() if s == "fail"] == [name]


@pytest.mark.unit
def test_another_server_on_the_probe_port_fails() -> None:
    out = GOOD.replace("@@ layout", "# configuration file /etc/nginx/conf.d/b.conf:\n"
                                    "    listen 127.0.0.1:14001;\n@@ layout")
    lines = checks.evaluate(cfg(), "web-1", out, marker="@@", local=False)
    probe = next(line for line in lines if line.name.startswith("probe port"))
    assert probe.status == "fail" and "b.conf" in probe.detail and "probe_port" in probe.hint


@pytest.mark.unit
def test_pid_file_wrong_says_where_nginx_is() -> None:
    out = GOOD.replace("pid=100\nnginx: master process /usr/sbin/nginx", "pid=\n").replace(
        "pid /run/nginx.pid;", "pid /var/run/nginx2.pid;")
    master = next(ln for ln in checks.evaluate(cfg(), "w", out, marker="@@", local=False)
                  if ln.name == "nginx master")
    assert "100" in master.detail and "/var/run/nginx2.pid" in master.hint


@pytest.mark.unit
def test_dump_command_follows_the_test_command() -> None:
    assert checks.dump_command("nginx -p /x -c conf/n.conf -q -t") == \
        "nginx -p /x -c conf/n.conf -q -T"
    assert checks.dump_command("/usr/local/bin/check-nginx") is None
    assert checks.nginx_binary("sudo /usr/sbin/nginx -t") == "/usr/sbin/nginx"


# ------------------------------------------------------------ real nginx, this machine


def run_check(ws: Workspace) -> tuple[int, dict[str, str], dict[str, Any]]:
    proc = ws.bg("--json", "check", check=False)
    doc = envelope(proc)
    result = doc["result"]
    by_name = {c["check"]: c["status"] for c in result["checks"] if c["host"] == "local"}
    assert doc["ok"] == (proc.returncode == 0)
    return proc.returncode, by_name, result


def failing(ws: Workspace) -> list[str]:
    code, by_name, _ = run_check(ws)
    assert code == ExitCode.USAGE
    return [n for n, s in by_name.items() if s == "fail"]


def probe_port(ws: Workspace) -> int:
    from bluegreen.config import load

    return load(ws.config).nginx.probe_port


def edit(ws: Workspace, key: str, value: str) -> None:
    text = ws.config.read_text()
    ws.config.write_text(re.sub(rf"(?m)^{key} = .*$", f'{key} = "{value}"', text))


def test_check_passes_on_a_good_host_and_names_each_broken_part(stock: Workspace,
                                                                tmp_path: Path) -> None:
    ws = stock
    code, by_name, result = run_check(ws)
    assert code == 0, result
    assert by_name["nginx master"] == "ok" and by_name["upstream included"] == "ok"
    human = ws.bg("check").stdout
    assert "ready: " in human and "found by the pid file" in human

    original = ws.config.read_text()
    edit(ws, "pid_file", str(tmp_path / "nowhere.pid"))
    assert failing(ws) == ["nginx master"]
    ws.config.write_text(original)

    edit(ws, "test_command", "/nonexistent/nginx -t")
    assert "nginx installed" in failing(ws)
    ws.config.write_text(original)

    # Not under conf.d/*.conf: nginx never reads it (nginx -t still passes on the old one).
    # The old file still holds the probe server, so the probe port is another server's now.
    edit(ws, "upstream_file", str(tmp_path / "elsewhere" / "hello.bluegreen.conf"))
    assert failing(ws) == ["upstream included", f"probe port {probe_port(ws)}"]
    ws.config.write_text(original)

    edit(ws, "root", "/proc/bg-check/hello")
    assert failing(ws) == ["root writable"]
    ws.config.write_text(original)

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ws.ports["green"]))
        squatter.listen()
        assert failing(ws) == [f"slot green port {ws.ports['green']}"]
        proc = ws.bg("check", check=False)
        assert "taken by python" in proc.stdout and "NOT ready" in proc.stdout

    assert run_check(ws)[0] == 0
