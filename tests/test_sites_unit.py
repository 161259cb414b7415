"""Which server block answers (bluegreen/sites.py), other bg apps' ports (bluegreen/ports.py)
and the names nginx takes (nginx_ident): pure, from dumps shaped like `nginx -T` prints
them on Debian 12."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen import nginx, ports, sites
from bluegreen.config import parse
from bluegreen.errors import ConfigError
from bluegreen.scaffold import render_site, scaffold, server_names

DEBIAN = """\
# configuration file /etc/nginx/nginx.conf:
user www-data;
pid /run/nginx.pid;
http {
\tinclude /etc/nginx/mime.types;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}

# configuration file /etc/nginx/mime.types:
types {
    text/html html;
}

# configuration file /etc/nginx/conf.d/shop.bluegreen.conf:
# Managed by bg (bluegreen): rewritten on every switch, do not edit by hand.
# app=shop live=blue version=1 port=4001 at=x
# slots=4001,4002 probe=14001
upstream shop_live { server 127.0.0.1:4001; }
server { listen 127.0.0.1:14001; location / { proxy_pass http://shop_live;
  add_header X-BG-App "shop" always; add_header X-BG-Slot "blue" always; } }

# configuration file /etc/nginx/sites-enabled/default:
# Default server configuration
#
server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\tserver_name _;
\tlocation / { try_files $uri $uri/ =404; }
}

# configuration file /etc/nginx/sites-enabled/shop:
server {
    listen 80;
    server_name {NAME};
    location / {
        proxy_pass http://shop_live;
        add_header X-BG-Slot $shop_slot always;
    }
}

"""


def blocks(name: str = "_") -> list[sites.Block]:
    return sites.parse(DEBIAN.replace("{NAME}", name))


@pytest.mark.unit
def test_parse_reads_blocks_in_nginx_order_with_their_lines() -> None:
    got = blocks()
    assert [b.where for b in got] == ["/etc/nginx/conf.d/shop.bluegreen.conf:5",
                                      "/etc/nginx/sites-enabled/default:3",
                                      "/etc/nginx/sites-enabled/shop:1"]
    probe, default, shop = got
    assert probe.bg_probe and not default.bg_probe
    assert [str(li) for li in default.listens] == ["*:80 default_server",
                                                   "[::]:80 default_server"]
    assert shop.proxies == ["http://shop_live"] and shop.slot_header
    assert sites.ours(got, "shop") == [shop]


@pytest.mark.unit
def test_the_filtered_dump_parses_like_the_raw_one() -> None:
    """What the host sends (DUMP_FILTER: `N:text`, no comments) gives the same blocks."""
    import subprocess

    out = subprocess.run(["sh", "-c", sites.DUMP_FILTER], input=DEBIAN.replace("{NAME}", "_"),
                         capture_output=True, text=True, check=True).stdout
    assert "mime" not in out or "text/html" in out
    assert [b.where for b in sites.parse(out)] == [b.where for b in blocks()]
    assert "# app=shop live=blue" in sites.file_texts(out)[
        "/etc/nginx/conf.d/shop.bluegreen.conf"]


@pytest.mark.unit
def test_a_site_without_a_name_is_shadowed_by_the_default_server() -> None:
    v = sites.judge(blocks(), "shop")
    assert v.status == "fail" and v.blocking
    assert "/etc/nginx/sites-enabled/default:3" in v.detail and "default_server" in v.detail
    assert "server_name" in v.hint and "rm /etc/nginx/sites-enabled/default" in v.hint


@pytest.mark.unit
@pytest.mark.parametrize("name,host,winner", [
    ("shop.example.com", "shop.example.com", "shop"),
    ("shop.example.com", "other.example.com", "default"),
    ("*.example.com", "www.example.com", "shop"),
    (".example.com", "example.com", "shop"),
    ("www.*", "www.example.org", "shop"),
    ("~^shop\\d+\\.example$", "shop7.example", "shop"),
])
def test_winner_follows_nginx_server_name_rules(name: str, host: str, winner: str) -> None:
    got = sites.winner(blocks(name), "127.0.0.1", 80, host)
    assert got is not None and got.file.endswith("/" + winner)
    assert sites.judge(blocks(name), "shop").status == "ok"


@pytest.mark.unit
def test_without_default_server_the_first_block_listed_is_the_default() -> None:
    dump = DEBIAN.replace(" default_server", "").replace("{NAME}", "_")
    got = sites.parse(dump)
    v = sites.judge(got, "shop")
    assert v.blocking and "default:3" in v.detail and "listed first" in v.detail
    # a site alone on its own address is that socket's default
    alone = dump.replace("    listen 80;\n    server_name _;",
                         "    listen 127.0.0.1:8080;\n    server_name _;")
    assert sites.judge(sites.parse(alone), "shop").status == "ok"


@pytest.mark.unit
def test_an_exact_address_listen_wins_over_the_wildcard() -> None:
    dump = DEBIAN.replace("{NAME}", "_").replace("    listen 80;", "    listen 127.0.0.1:80;")
    got = sites.parse(dump)
    w = sites.winner(got, "127.0.0.1", 80, "anything")
    assert w is not None and w.file.endswith("/shop")
    assert sites.judge(got, "shop").status == "ok"


@pytest.mark.unit
def test_a_second_block_with_the_same_name_never_answers() -> None:
    dump = DEBIAN.replace("{NAME}", "shop.example.com").replace(
        "\tserver_name _;", "\tserver_name shop.example.com;")
    v = sites.judge(sites.parse(dump), "shop")
    assert v.blocking and "default:3" in v.detail
    twin = DEBIAN.replace("{NAME}", "shop.example.com").replace(
        "# configuration file /etc/nginx/sites-enabled/shop:",
        "# configuration file /etc/nginx/sites-enabled/old-shop:\n"
        "server { listen 80; server_name shop.example.com; }\n\n"
        "# configuration file /etc/nginx/sites-enabled/shop:")
    v = sites.judge(sites.parse(twin), "shop")
    assert v.blocking and "old-shop:1 has the same server_name" in v.detail
    assert "disable /etc/nginx/sites-enabled/old-shop" in v.hint


@pytest.mark.unit
def test_probe_url_answered_by_another_block_is_named() -> None:
    got = blocks("shop.example.com")
    v = sites.judge(got, "shop", "http://127.0.0.1/")
    assert v.status == "fail" and v.blocking and "default:3" in v.detail
    assert "http://shop.example.com:80/" in v.hint
    assert sites.judge(got, "shop", "http://shop.example.com/").status == "ok"
    # The switch's refusal when an answer had no X-BG-Slot: the block that answered.
    hint = sites.missing_header_hint(got, "shop", "http://127.0.0.1/")
    assert "default:3" in hint and "add_header" not in hint
    bare = sites.parse(DEBIAN.replace("{NAME}", "shop.example.com").replace(
        "        add_header X-BG-Slot $shop_slot always;\n", ""))
    assert "add `add_header X-BG-Slot $shop_slot always;`" in sites.missing_header_hint(
        bare, "shop", "http://shop.example.com/")
    assert sites.judge(bare, "shop", "http://shop.example.com/").status == "fail"
    unknown = sites.missing_header_hint(None, "my_shop", "http://x/")
    assert "bg check" in unknown and "$my_shop_slot" in unknown


@pytest.mark.unit
def test_no_site_is_a_warning_not_a_refusal() -> None:
    v = sites.judge(blocks(), "other")
    assert v.status == "warn" and not v.blocking and "other_live" in v.detail


@pytest.mark.unit
def test_stream_servers_and_upstream_servers_are_no_http_blocks() -> None:
    dump = ("# configuration file /n.conf:\nstream { server { listen 80; } }\n"
            "http { upstream a { server 127.0.0.1:1; } server { listen 81; } }\n")
    assert [b.listens[0].port for b in sites.parse(dump)] == [81]


# ------------------------------------------------------------------- nginx names


@pytest.mark.unit
@pytest.mark.parametrize("app,ident", [("my-shop", "my_shop"), ("catalog-prod", "catalog_prod"),
                                       ("shop2", "shop2"), ("a_b", "a_b"), ("a.b", "a_b")])
def test_nginx_ident(app: str, ident: str) -> None:
    assert nginx.nginx_ident(app) == ident


@pytest.mark.unit
def test_templates_use_the_nginx_names() -> None:
    config = parse({"app": {"name": "my-shop", "root": "/srv/my-shop", "command": "x"},
                    "nginx": {"upstream_file": "/etc/nginx/conf.d/my-shop.bluegreen.conf"}},
                   Path("/x/bluegreen.toml"))
    up = nginx.render_upstream(config, slot="blue", version="1")
    assert "upstream my_shop_live {" in up and 'map "" $my_shop_slot {' in up
    assert "proxy_pass http://my_shop_live;" in up and "$my-" not in up
    assert 'add_header X-BG-App "my-shop"' in up  # the app's own name, as bg compares it
    assert "# app=my-shop live=blue" in up and "# slots=4001,4002 probe=14001" in up
    site = render_site("my-shop", "shop.example.com www.shop.example.com")
    assert "proxy_pass http://my_shop_live;" in site and "$my_shop_slot" in site
    assert "server_name shop.example.com www.shop.example.com;" in site
    assert "default_server" not in site


@pytest.mark.unit
def test_server_names_are_validated() -> None:
    assert server_names(None) == "_"
    assert server_names("a.example, *.b.example") == "a.example *.b.example"
    for bad in ("a;b", "a{", "'x'", "#x"):
        with pytest.raises(ConfigError, match="--server-name"):
            server_names(bad)


@pytest.mark.unit
def test_init_refuses_a_bad_listen(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        scaffold(tmp_path, listen="80; include /x", nginx_dir=tmp_path, listening=set())
    assert list(tmp_path.iterdir()) == []
    scaffold(tmp_path, listen="127.0.0.1:8080", nginx_dir=tmp_path / "none", listening=set())
    assert "listen 127.0.0.1:8080;" in (tmp_path / "bluegreen-site.conf").read_text()


# ------------------------------------------------------------ other apps' ports


@pytest.mark.unit
def test_read_bg_files_and_pick_free_slots() -> None:
    text = DEBIAN.split("# configuration file /etc/nginx/conf.d/shop.bluegreen.conf:\n")[1]
    app = ports.read_bg_file("/f", text)
    assert app is not None and app.app == "shop" and app.probe == 14001
    assert app.ports == {4001, 4002, 14001}
    assert ports.read_bg_file("/g", "upstream x { server 1.2.3.4:80; }\n") is None
    assert ports.pick_slots(set()) == (4001, 4002)
    assert ports.pick_slots({4001, 4002, 14001}) == (4011, 4012)
    assert ports.pick_slots({4002}) == (4011, 4012)  # an old file naming one slot only
    assert ports.pick_slots({14005}) == (4011, 4012)  # a probe port in the block
    found = ports.parse_bg_files(["== /a.conf", "# app=a live=blue", "# slots=5001,5002",
                                  "== /b.conf", "upstream b { server 127.0.0.1:1; }"])
    assert [(a.app, a.file, sorted(a.ports)) for a in found] == [("a", "/a.conf", [5001, 5002])]


def write_bg_file(nginx_dir: Path, app: str, blue: int) -> None:
    (nginx_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    (nginx_dir / "conf.d" / f"{app}.bluegreen.conf").write_text(
        f"# Managed by bg (bluegreen): rewritten on every switch, do not edit by hand.\n"
        f"# app={app} live=blue version=1 port={blue} at=x\n"
        f"# slots={blue},{blue + 1} probe={blue + 10000}\n"
        f"upstream {nginx.nginx_ident(app)}_live {{ server 127.0.0.1:{blue}; }}\n")


@pytest.mark.unit
def test_init_picks_ports_no_other_app_uses(tmp_path: Path) -> None:
    etc = tmp_path / "etc-nginx"
    write_bg_file(etc, "shop", 4001)
    write_bg_file(etc, "blog", 4011)
    d = tmp_path / "catalog"
    d.mkdir()
    result = scaffold(d, nginx_dir=etc, listening={4021})
    text = (d / "bluegreen.toml").read_text()
    assert "blue = 4031" in text and "green = 4032" in text
    assert f'upstream_file = "{etc}/conf.d/catalog.bluegreen.conf"' in text
    assert any("shop" in h and "blog" in h for h in result.hints)


@pytest.mark.unit
def test_init_refuses_a_name_whose_nginx_names_collide(tmp_path: Path) -> None:
    etc = tmp_path / "etc-nginx"
    write_bg_file(etc, "my-shop", 4001)
    d = tmp_path / "my_shop"
    d.mkdir()
    with pytest.raises(ConfigError, match="my_shop_live") as err:
        scaffold(d, nginx_dir=etc, listening=set())
    assert "'my-shop'" in err.value.message and list(d.iterdir()) == []
    scaffold(d, app="my-shop", nginx_dir=etc, listening=set())  # the same app: its ports
    assert "blue = 4001" in (d / "bluegreen.toml").read_text()


@pytest.mark.unit
def test_init_warns_when_the_default_site_would_shadow_it(tmp_path: Path) -> None:
    etc = tmp_path / "etc-nginx"
    (etc / "sites-enabled").mkdir(parents=True)
    (etc / "nginx.conf").write_text(f"http {{ include {etc}/conf.d/*.conf;"
                                    f" include {etc}/sites-enabled/*; }}\n")
    (etc / "sites-enabled" / "default").write_text(
        "server {\n  listen 80 default_server;\n  server_name _;\n}\n")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    hints = scaffold(a, nginx_dir=etc, listening=set()).hints
    assert "sites-enabled/default:1" in hints[0] and "--server-name" in hints[0]
    hints = scaffold(b, nginx_dir=etc, listening=set(), server_name="b.example").hints
    assert not any("default" in h for h in hints)


# ------------------------------------------------------------------ the switch's test


@pytest.mark.unit
def test_the_stage_tests_with_nginx_T_and_returns_the_server_blocks(tmp_path: Path) -> None:
    """The stage's one nginx run is `nginx -T` (it tests as -t does), its blocks follow it;
    a test command bg cannot turn into -T runs as written and gives none."""
    import subprocess

    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -T ] || exit 9\ncat <<'X'\n"
                    + DEBIAN.replace("{NAME}", "_") + "X\n")
    fake.chmod(0o755)
    cfg = parse({"app": {"name": "shop", "root": str(tmp_path), "command": "x"},
                 "nginx": {"upstream_file": str(tmp_path / "up.conf"),
                           "test_command": f"{fake} -t"}}, Path("/x/bluegreen.toml"))
    out = subprocess.run(["sh", "-c", nginx.stage_script(cfg, "upstream x {}\n")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    layout = nginx.parse_layout(out.stdout)
    assert layout is not None and len(layout) == 3
    refusal = nginx.site_refusal(cfg, "web-1", layout)
    assert refusal is not None and "sites-enabled/default:3" in refusal.detail
    custom = parse({"app": {"name": "shop", "root": str(tmp_path), "command": "x"},
                    "nginx": {"upstream_file": str(tmp_path / "up.conf"),
                              "test_command": "true"}}, Path("/x/bluegreen.toml"))
    out = subprocess.run(["sh", "-c", nginx.stage_script(custom, "upstream x {}\n")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and nginx.parse_layout(out.stdout) is None
