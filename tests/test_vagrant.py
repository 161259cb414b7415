"""The Vagrant path, without booting a VM, for machines without QEMU: the Vagrantfile
validates, its provisioning renders the same site as the sandbox, `vagrant ssh-config` output
(several shapes) becomes a target, and `bg rehearse --vagrant` runs end to end against a
stand-in `vagrant` whose "VM" is a sandbox host provisioned by the VM's own script
(tests/fixtures/vagrant_standin.py).

What the stand-in does NOT cover (tests/test_vm.py, the `vm` tier, does, on a real VM): a
kernel booting, systemd as PID 1 and the systemd runner, Debian's nginx as a systemd service,
the box, the choice of KVM or TCG, libvirt and its network namespace, Vagrant's own output, the
timing of an emulated host. The stand-in's "VM" is a network namespace with sshd; its
`systemctl` is a stand-in too, and its user is root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from bluegreen import config
from bluegreen.errors import ConfigError
from bluegreen.vagrant import parse_ssh_config, target_toml
from tests.helpers import bg_argv, need
from tests.sandbox_fixtures import need_root
from tests.test_rehearse import EXPECTED_EXITS, OwnNamespaces

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "vagrant-ssh-config.txt"


@pytest.mark.nginx
def test_vagrantfile_validates() -> None:
    need(shutil.which("vagrant") is not None, "vagrant is not installed (apt-get install vagrant)")
    proc = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


@pytest.mark.unit
def test_provisioned_site_matches_the_sandbox_site(tmp_path: Path) -> None:
    """provision.sh renders nginx/site.conf.j2 with sed; it must equal the Jinja rendering."""
    script = (ROOT / "nginx" / "provision.sh").read_text()
    sed_line = next(line for line in script.splitlines() if line.startswith("sed "))
    template = ROOT / "nginx" / "site.conf.j2"
    cmd = sed_line.replace("$APP", "hello").replace("$IDENT", "hello")
    cmd = cmd.replace('"$TEMPLATE"', str(template))
    cmd = cmd.split(" > ")[0].rstrip("\\ ")
    names = "app.example localhost 127.0.0.1"
    env = {**os.environ, "LISTEN": "80", "NAMES": names}
    rendered = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True,
                              env=env).stdout
    jinja = jinja2.Template(template.read_text(), keep_trailing_newline=True).render(
        app="hello", listen="80", access_log="/srv/hello/logs/nginx-access.log",
        server_name=names).replace("server_name _;", f"server_name {names};")
    expected = "".join(line + "\n" for line in jinja.splitlines() if not line.startswith("#"))
    assert f"server_name {names};" in expected and "listen 80;" in expected
    assert rendered == expected
    assert "X-BG-Slot $hello_slot" in rendered and "{{" not in rendered


@pytest.mark.unit
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


@pytest.mark.unit
def test_ssh_config_garbage() -> None:
    with pytest.raises(ConfigError, match="no Host block"):
        parse_ssh_config("")
    with pytest.raises(ConfigError, match="has no port"):
        parse_ssh_config("Host x\n  HostName 127.0.0.1\n  User v\n")


@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "expected"), [
    ("vagrant-ssh-config.txt", [("default", "vagrant@127.0.0.1:2222",
                                 "/home/dev/app/.vagrant/machines/default/virtualbox/private_key")]),
    ("vagrant-ssh-config-libvirt.txt", [
        ("default", "vagrant@192.168.121.57:22",
         "/home/dev/My Projects/shop/.vagrant/machines/default/libvirt/private_key")]),
    ("vagrant-ssh-config-multi.txt", [
        ("web", "vagrant@127.0.0.1:2222",
         "/home/dev/shop/.vagrant/machines/web/virtualbox/private_key"),
        ("db", "vagrant@127.0.0.1:2200",
         "/home/dev/shop/.vagrant/machines/db/virtualbox/private_key")]),
    ("vagrant-ssh-config-crlf-tabs.txt", [
        ("default", "vagrant@127.0.0.1:2222",
         "C:/Users/dev/shop/.vagrant/machines/default/hyperv/private_key")]),
])
def test_ssh_config_shapes(fixture: str, expected: list[tuple[str, str, str]],
                           tmp_path: Path) -> None:
    """virtualbox, libvirt (a quoted key path with a space), two machines (the first
    IdentityFile counts, as in ssh), CRLF with tabs and `=`."""
    hosts = parse_ssh_config((FIXTURES / fixture).read_text())
    assert [(h.name, h.spec, h.identity_file) for h in hosts] == expected
    path = tmp_path / "bluegreen.toml"
    path.write_text('[app]\nname = "hello"\nroot = "/srv/hello"\ncommand = "bin/server"\n'
                    '[nginx]\nupstream_file = "/srv/hello/n.conf"\n' + target_toml(hosts))
    target = config.load(path).target("vagrant")  # the path with a space survives the TOML
    assert target.identity_file is not None and str(target.identity_file) == expected[0][2]


def _standin(tmp_path: Path) -> dict[str, str]:
    """PATH with the stand-in `vagrant` first, and its state directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "vagrant"
    script = FIXTURES / "vagrant_standin.py"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    # A provider of its own: bg prepares nothing of libvirt's (box, namespace, libvirtd).
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
            "BG_STANDIN_DIR": str(tmp_path / "vm"), "PYTHONPATH": str(ROOT),
            "VAGRANT_DEFAULT_PROVIDER": "standin"}


@pytest.mark.root
@pytest.mark.parametrize("shape", ["libvirt", "tabs"])
def test_rehearsal_on_the_vagrant_standin(tmp_path: Path, shape: str) -> None:
    need_root()
    env = _standin(tmp_path) | {"BG_STANDIN_SHAPE": shape}
    workdir = tmp_path / "work"
    with OwnNamespaces(tmp_path / "vm") as namespaces:
        proc = subprocess.run(
            bg_argv("rehearse", "--vagrant", "--json", "--workdir", str(workdir)),
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["ok"] and data["environment"] == "vagrant" and data["hosts"] == 1
    assert [s["exit"] for s in data["steps"]] == EXPECTED_EXITS, data["steps"]
    assert data["totals"]["failed"] == 0 and data["totals"]["requests"] >= 300
    calls = [line.split("  cwd=")[0] for line in
             (tmp_path / "vm" / "calls.log").read_text().splitlines()]
    assert calls == ["status --machine-readable", "up", "ssh-config", "destroy -f"]
    # The "VM" was provisioned by the VM's script, and the system nginx it set up served.
    provision = (tmp_path / "vm" / "provision.log").read_text()
    assert "test is successful" in provision
    # First contact recorded the VM's key; bg then verified it on every command (strict).
    host_key = next((tmp_path / "vm" / "sandbox").glob("host*/sshd/ssh_host_ed25519_key.pub"))
    key_material = host_key.read_text().split()[1]
    assert key_material in (workdir / "known_hosts").read_text()
    rehearsal_config = (workdir / "bluegreen.toml").read_text()
    assert "accept-new" not in rehearsal_config
    # It destroyed the VM it started: nothing of it is left.
    assert len(namespaces.seen) == 1 and namespaces.left() == []
    assert "cleanup:" not in proc.stderr
    assert not (tmp_path / "vm" / "running").exists()


@pytest.mark.root
def test_a_running_vm_is_used_and_left_running(tmp_path: Path) -> None:
    need_root()
    env = _standin(tmp_path)
    up = subprocess.run(["vagrant", "up"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        proc = subprocess.run(
            bg_argv("rehearse", "--vagrant", "--json"),
            cwd=tmp_path, env=env | {"TMPDIR": str(tmp_path)}, capture_output=True, text=True,
            timeout=240, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "already running; left running" in proc.stderr
        assert (tmp_path / "vm" / "running").exists()
        calls = (tmp_path / "vm" / "calls.log").read_text()
        assert "destroy" not in calls
    finally:
        subprocess.run(["vagrant", "destroy", "-f"], env=env, capture_output=True, timeout=60)
