"""The Vagrant path, without booting a VM: the Vagrantfile validates, its provisioning
renders the same site as the sandbox, and `vagrant ssh-config` output becomes a target."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from bluegreen import config
from bluegreen.errors import ConfigError
from bluegreen.vagrant import parse_ssh_config, target_toml
from tests.helpers import need

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "vagrant-ssh-config.txt"


def test_vagrantfile_validates() -> None:
    need(shutil.which("vagrant") is not None, "vagrant is not installed (apt-get install vagrant)")
    proc = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_provisioned_site_matches_the_sandbox_site(tmp_path: Path) -> None:
    """provision.sh renders nginx/site.conf.j2 with sed; it must equal the Jinja rendering."""
    script = (ROOT / "nginx" / "provision.sh").read_text()
    sed_line = next(line for line in script.splitlines() if line.startswith("sed "))
    template = ROOT / "nginx" / "site.conf.j2"
    cmd = sed_line.replace("$APP", "hello").replace("/tmp/bg-site.conf.j2", str(template))
    cmd = cmd.split(" > ")[0].rstrip("\\ ")
    rendered = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    jinja = jinja2.Template(template.read_text(), keep_trailing_newline=True).render(
        app="hello", listen="80 default_server")
    expected = "".join(line + "\n" for line in jinja.splitlines() if not line.startswith("#"))
    assert rendered == expected
    assert "X-BG-Slot $hello_slot" in rendered and "{{" not in rendered


def test_ssh_config_to_target(tmp_path: Path) -> None:
    hosts = parse_ssh_config(FIXTURE.read_text())
    assert [(h.name, h.spec) for h in hosts] == [("default", "vagrant@127.0.0.1:2222")]
    toml = target_toml(hosts)
    assert "known_hosts = \".vagrant/known_hosts\"" in toml  # never /dev/null
    base = (
        '[app]\nname = "hello"\nroot = "/srv/hello"\ncommand = "bin/server"\n'
        '[nginx]\nupstream_file = "/srv/hello/nginx/hello.bluegreen.conf"\n'
    )
    path = tmp_path / "bluegreen.toml"
    path.write_text(base + toml)
    target = config.load(path).target("vagrant")
    assert target.hosts == ("vagrant@127.0.0.1:2222",)
    assert target.identity_file and target.identity_file.endswith("private_key")
    assert target.host_key_policy == "strict"


def test_ssh_config_garbage() -> None:
    with pytest.raises(ConfigError, match="no Host block"):
        parse_ssh_config("")
    with pytest.raises(ConfigError, match="has no port"):
        parse_ssh_config("Host x\n  HostName 127.0.0.1\n  User v\n")
