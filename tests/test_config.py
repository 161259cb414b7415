"""Configuration validation: every error names the file, the key path and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen import config
from bluegreen.errors import ConfigError, ExitCode
from tests.helpers import run_bg

pytestmark = pytest.mark.unit

BASE = """
[app]
name = "hello"
root = "/srv/hello"
command = "bin/server"
[nginx]
upstream_file = "/etc/nginx/conf.d/hello.bluegreen.conf"
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "bluegreen.toml"
    path.write_text(text)
    return config.load(path)


def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    assert cfg.slots == {"blue": 4001, "green": 4002}
    assert cfg.health.interval == 0.5 and cfg.health.successes == 1
    assert cfg.switch.retire is True and cfg.switch.drain_timeout == 30.0
    assert cfg.target(None).name == "local" and cfg.target(None).is_local
    assert cfg.app.release_name == "hello"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("[health]\nbogus = 1\n", "unknown key health.bogus"),
        ("[health]\ninterval = \"fast\"\n", "health.interval must be a number"),
        ("[health]\nsuccesses = true\n", "health.successes must be an integer"),
        ("[slots]\nblue = 4001\ngreen = 4001\n", "must be different ports"),
        ("[slots]\nblue = 70000\n", "slots.blue must be a TCP port"),
        ("[switch]\nretire = \"yes\"\n", "switch.retire must be true or false"),
        ("[bogus]\n", "unknown section [bogus]"),
        ("[targets.prod]\nhosts = []\n", "targets.prod.hosts is empty"),
        ("[targets.Prod]\nhosts = [\"a\"]\n", "target name 'Prod'"),
        ("[targets.prod]\nhosts = [\"a b\"]\n", "targets.prod.hosts[0]"),
        ("[targets.prod]\nhosts = [\"a\"]\nhost_key_policy = \"yolo\"\n", "host_key_policy"),
        ("[hooks]\nbefore_switch = [\"migrate\"]\n", "app.migrate is empty"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, BASE + extra)
    assert words in err.value.message
    assert str(tmp_path / "bluegreen.toml") in err.value.message


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('name = "hello"', 'name = "Hello World"', "app.name must be a name"),
        ('root = "/srv/hello"', 'root = "srv/hello"', "app.root must be an absolute path"),
        ('root = "/srv/hello"', 'root = "/srv"', "directory of its own"),
        ('command = "bin/server"', 'command = ""', "app.command is required"),
        ('upstream_file = "/etc', 'template = "nope.j2"\nupstream_file = "/etc',
         "nginx.template names a file that does not exist"),
    ],
)
def test_app_errors(tmp_path: Path, old: str, new: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, BASE.replace(old, new))
    assert words in err.value.message


def test_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path, "[app\n")


def test_missing_config_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(None, cwd=tmp_path)
    assert "bg init" in err.value.hint


def test_target_selection(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE + '[targets.prod]\nhosts = ["deploy@a:2222", "b"]\n'
               '[targets.staging]\nhosts = ["c"]\n')
    assert cfg.target("prod").hosts == ("deploy@a:2222", "b")
    with pytest.raises(ConfigError, match="several targets"):
        cfg.target(None)
    with pytest.raises(ConfigError, match="no target named 'nope'"):
        cfg.target("nope")


def test_ephemeral_port_warning(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE + "[slots]\nblue = 40001\ngreen = 4002\n")
    assert any("ephemeral" in w for w in config.warnings(cfg))


def test_cli_exit_code_2_and_nothing_touched(tmp_path: Path) -> None:
    root = tmp_path / "srv-hello"
    (tmp_path / "bluegreen.toml").write_text(
        BASE.replace("/srv/hello", str(root)) + "[slots]\nblue = 4001\ngreen = 4001\n"
    )
    proc = run_bg("setup", cwd=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "slots.blue and slots.green must be different ports" in proc.stderr
    assert not root.exists()


def test_init_writes_a_loadable_config(tmp_path: Path) -> None:
    from bluegreen.scaffold import write_config

    path = write_config(tmp_path, "shop", "elixir", force=False)
    cfg = config.load(path)
    assert cfg.app.name == "shop" and cfg.app.runner == "elixir"
    with pytest.raises(ConfigError, match="already exists"):
        write_config(tmp_path, "shop", "elixir", force=False)
