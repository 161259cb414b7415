"""`bg init`: an empty directory, a Mix project (written by hand and by `mix new`), a
Phoenix project's env file, refusal to overwrite; what it writes loads as a config."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from bluegreen import config
from bluegreen.errors import ConfigError
from bluegreen.scaffold import ENV_NAME, SITE_NAME, read_mix, scaffold
from tests.helpers import need, run_bg

SHOP_MIX = """\
defmodule Shop.MixProject do
  use Mix.Project

  def project do
    [
      app: :shop,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: deps()
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  defp deps do
    []
  end
end
"""

PHOENIX_MIX = """\
defmodule Store.MixProject do
  use Mix.Project
  @version "2.3.4"

  def project do
    [app: :store, version: @version, deps: deps(),
     releases: [store_web: [steps: [:assemble, :tar]]]]
  end

  defp deps do
    [{:phoenix, "~> 1.7.14"}, {:ecto_sql, "~> 3.10"}]
  end
end
"""


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens here: the ports `bg init` picks do not depend on this machine."""
    monkeypatch.setattr("bluegreen.ports.listening_ports", lambda: set())


@pytest.mark.unit
def test_empty_directory(tmp_path: Path) -> None:
    d = tmp_path / "myapp"
    d.mkdir()
    result = scaffold(d)
    assert (result.app, result.runner) == ("myapp", "command")
    cfg = config.load(d / "bluegreen.toml")
    assert cfg.app.name == "myapp" and cfg.app.runner == "command"
    assert cfg.app.command == "bin/server"
    assert cfg.app.env_file == d / ENV_NAME
    assert cfg.nginx.probe_url == "" and cfg.nginx.probe_port == 14001
    text = (d / "bluegreen.toml").read_text()
    assert "# command | elixir | systemd" in text and "# This machine, no SSH" in text
    assert "PHX_SERVER" not in (d / ENV_NAME).read_text()
    assert (d / ENV_NAME).stat().st_mode & 0o777 == 0o600
    assert "proxy_pass http://myapp_live;" in (d / SITE_NAME).read_text()


@pytest.mark.unit
def test_mix_project_by_hand(tmp_path: Path) -> None:
    (tmp_path / "mix.exs").write_text(SHOP_MIX)
    result = scaffold(tmp_path)
    assert (result.app, result.runner, result.version) == ("shop", "elixir", "0.1.0")
    cfg = config.load(tmp_path / "bluegreen.toml")
    assert (cfg.app.name, cfg.app.runner, cfg.app.release_name) == ("shop", "elixir", "shop")
    text = (tmp_path / "bluegreen.toml").read_text()
    assert "bg deploy _build/prod/shop-0.1.0.tar.gz" in text
    assert any(":tar" in h for h in result.hints)  # mix.exs does not build a tarball yet


@pytest.mark.unit
def test_phoenix_project_gets_its_env(tmp_path: Path) -> None:
    (tmp_path / "mix.exs").write_text(PHOENIX_MIX)
    mix = read_mix(tmp_path)
    assert mix is not None and (mix.app, mix.version, mix.release, mix.phoenix) == (
        "store", "2.3.4", "store_web", True)
    result = scaffold(tmp_path, templates=True)
    env = (tmp_path / ENV_NAME).read_text()
    for var in ("PHX_SERVER=true", "PHX_HOST=", "SECRET_KEY_BASE=", "DATABASE_URL=ecto://"):
        assert var in env
    secret = next(ln for ln in env.splitlines() if ln.startswith("SECRET_KEY_BASE="))
    assert len(secret.split("=", 1)[1]) >= 64
    assert (tmp_path / ENV_NAME).stat().st_mode & 0o777 == 0o600
    cfg = config.load(tmp_path / "bluegreen.toml")
    assert cfg.app.release_name == "store_web" and cfg.health.path == "/"
    assert cfg.nginx.template == tmp_path / "bluegreen-templates" / "upstream.conf.j2"
    assert "bluegreen-templates/upstream.conf.j2" in result.files
    assert not any(":tar" in h for h in result.hints)


@pytest.mark.unit
def test_refuses_to_overwrite_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bluegreen.toml").write_text("# mine\n")
    with pytest.raises(ConfigError, match=r"already exists.*bluegreen\.toml") as err:
        scaffold(tmp_path)
    assert "--force" in err.value.hint
    assert (tmp_path / "bluegreen.toml").read_text() == "# mine\n"
    assert not (tmp_path / ENV_NAME).exists() and not (tmp_path / SITE_NAME).exists()
    scaffold(tmp_path, force=True, app="other")
    assert config.load(tmp_path / "bluegreen.toml").app.name == "other"


@pytest.mark.unit
def test_force_keeps_the_env_file_private(tmp_path: Path) -> None:
    env = tmp_path / ENV_NAME
    env.write_text("OLD=1\n")
    env.chmod(0o644)
    scaffold(tmp_path, force=True, app="shop")
    assert env.stat().st_mode & 0o777 == 0o600 and "OLD=1" not in env.read_text()


@pytest.mark.unit
def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--runner"):
        scaffold(tmp_path, runner="docker")
    with pytest.raises(ConfigError, match="app name"):
        scaffold(tmp_path, app="Bad Name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.elixir
def test_cli_in_a_mix_new_project(tmp_path: Path) -> None:
    need(shutil.which("mix") is not None, "elixir (mix) is not installed")
    subprocess.run(["mix", "new", "shop"], cwd=tmp_path, check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MIX_HOME":
                        str(tmp_path / ".mix")})
    project = tmp_path / "shop"
    proc = run_bg("init", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "app shop (runner elixir, version 0.1.0)" in proc.stdout
    data = tomllib.loads((project / "bluegreen.toml").read_text())
    assert (data["app"]["name"], data["app"]["runner"]) == ("shop", "elixir")
    again = run_bg("init", cwd=project)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "--force" in again.stderr
