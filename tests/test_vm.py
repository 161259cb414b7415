"""The `vm` tier: a real Debian 12 VM (QEMU, KVM or TCG, through vagrant-libvirt), booted once
for this module, in a network namespace of its own; the VM is a real host (systemd as PID 1,
Debian's stock nginx, the non-root `vagrant` user over SSH).

Run with ``pytest -m vm`` (CI: `.ci/run` runs this tier by itself after `./dev vm-bootstrap`).
The pytest process joins the VM's network namespace while these tests run, so nothing here
reaches the guest from this machine's own namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bluegreen.rehearse.envs import Prepared
from bluegreen.rehearse.vagrantenv import VagrantEnv
from bluegreen.tomlwriter import dumps
from tests.helpers import bg_argv, need, run_bg
from tests.test_rehearse import EXPECTED_EXITS

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parent.parent
APP = "hello"


def vm_unavailable() -> str | None:
    """Why no VM can boot here, or None."""
    if os.geteuid() != 0:
        return "the VM tier needs root (a network namespace, libvirtd)"
    for tool in ("vagrant", "virsh", "libvirtd", "qemu-system-x86_64", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (./dev vm-bootstrap)"
    return None


@dataclass
class Vm:
    prepared: Prepared
    workdir: Path
    env: dict[str, str]  # for `bg rehearse --vagrant` to find and reuse this VM
    ssh_config: Path

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0
           ) -> subprocess.CompletedProcess[str]:
        """``script`` on the VM as the `vagrant` user, over SSH (OpenSSH's own client)."""
        proc = subprocess.run(["ssh", "-F", str(self.ssh_config), "default", script],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"{script}: {proc.stdout}{proc.stderr}"
        return proc

    def bg(self, config: Path, *args: str, timeout: float = 600.0
           ) -> subprocess.CompletedProcess[str]:
        return run_bg(*args, config=config, cwd=self.workdir, timeout=timeout,
                      env={**os.environ, "PYTHONPATH": str(ROOT),
                           "HOME": str(self.workdir / "home")})


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    reason = vm_unavailable()
    need(reason is None, str(reason))
    workdir = tmp_path_factory.mktemp("vm")
    saved = {k: os.environ.get(k) for k in ("VAGRANT_DOTFILE_PATH", "VAGRANT_DEFAULT_PROVIDER")}
    # This VM's own Vagrant state, apart from a developer's `vagrant up` in the checkout.
    os.environ["VAGRANT_DOTFILE_PATH"] = str(workdir / ".vagrant")
    os.environ["VAGRANT_DEFAULT_PROVIDER"] = "libvirt"
    env = VagrantEnv(ROOT / "Vagrantfile")
    try:
        prepared = env.start(APP, workdir)
        ssh_config = workdir / "ssh-config"
        ssh_config.write_text(env._vagrant("ssh-config").stdout)
        yield Vm(prepared, workdir,
                 {**os.environ, **{k: env._env[k] for k in ("BG_VM_NETNS", "BG_VAGRANT_BOX",
                                                            "BG_VM_DRIVER")}},
                 ssh_config)
    finally:
        env.stop(keep=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fresh_app(vm: Vm) -> None:
    """The app's root as provisioning left it: no slot running, nothing deployed."""
    # A command slot runs `bin/server` from its release directory: found by its cwd.
    vm.sh(f"sudo -n systemctl stop '{APP}@*.service' 2>/dev/null; "
          "sudo -n sh -c 'for p in /proc/[0-9]*; do "
          f"case $(readlink $p/cwd) in /srv/{APP}/*) kill -KILL ${{p#/proc/}};; esac; "
          "done'; "
          f"cd /srv/{APP} && sudo -n rm -rf releases slots bg shared run logs; "
          f"sudo -n rm -f /etc/systemd/system/{APP}@.service; true")
    left = vm.sh("ss -Hltn '( sport = :4001 or sport = :4002 )'").stdout.strip()
    assert left == "", left


def test_the_vm_is_a_stock_debian_host(vm: Vm) -> None:
    """systemd as PID 1, the non-root `vagrant` user (Debian's PATH: no /usr/sbin) with the
    documented sudo rule, Debian's own nginx: /etc/nginx, its stock default site, a systemd
    service, workers as www-data."""
    out = vm.sh("ps -o comm= -p 1; id -un; id -u; echo $PATH; "
                "sudo -n /usr/sbin/nginx -t 2>&1; "
                "systemctl is-active nginx; systemctl is-system-running || true; "
                "ps -o user= -C nginx | sort | uniq -c; "
                "dpkg-query -W -f '${Status}\\n' nginx-light; "
                "grep -c default_server /etc/nginx/sites-available/default; "
                f"readlink -f /etc/nginx/sites-enabled/{APP}; "
                "cat /etc/os-release | grep VERSION_ID").stdout.splitlines()
    assert out[0] == "systemd"
    assert out[1] == "vagrant" and out[2] != "0"
    assert "/usr/sbin" not in out[3].split(":")
    assert any("test is successful" in line for line in out)
    assert "active" in out and "install ok installed" in out
    workers = [line.split() for line in out if line.strip().endswith(("www-data", "root"))]
    assert ["1", "root"] in workers and any(w[1] == "www-data" for w in workers)
    assert f"/etc/nginx/sites-available/{APP}" in out
    assert 'VERSION_ID="12"' in out
    # The host keys were made by this VM at its first boot (the box has none).
    keys = vm.sh("ls /etc/ssh/ssh_host_ed25519_key.pub && "
                 "systemctl show -p ActiveState bg-ssh-host-keys.service").stdout
    assert "ssh_host_ed25519_key.pub" in keys


def test_rehearsal_with_the_command_runner(vm: Vm, tmp_path: Path) -> None:
    """`bg rehearse --vagrant` on this VM (joined, used, left running): PASS, 0 failed."""
    fresh_app(vm)
    proc = subprocess.run(
        bg_argv("rehearse", "--vagrant", "--json", "--workdir", str(tmp_path / "work"),
                "--out", str(tmp_path)),
        cwd=tmp_path, env={**vm.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=1500, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout)
    assert data["ok"] and data["environment"] == "vagrant", data["problems"]
    assert [s["exit"] for s in data["steps"]] == EXPECTED_EXITS, data["steps"]
    assert data["totals"]["failed"] == 0 and data["totals"]["requests"] > 100
    assert "already running; left running" in proc.stderr
    assert "Progress:" not in proc.stderr


def systemd_config(vm: Vm, releases: Path) -> Path:
    p = vm.prepared
    assert p.target is not None
    raw = {
        "app": {"name": APP, "root": p.root, "runner": "systemd", "release_name": APP,
                "stop_timeout": 30, "keep_releases": 3},
        # TCG: the BEAM boots in seconds, not in a fraction of one.
        "health": {"interval": 0.5, "timeout": 5.0, "deadline": 180.0},
        "switch": {"drain_timeout": 10},
        "nginx": dict(p.nginx),
        "targets": {"vm": {**p.target}},
    }
    path = vm.workdir / "systemd.toml"
    path.write_text(dumps(raw))
    (vm.workdir / "home").mkdir(exist_ok=True)
    return path


def unit_state(vm: Vm, slot: str) -> tuple[str, str]:
    out = vm.sh(f"systemctl show -p ActiveState -p MainPID --value {APP}@{slot}.service").stdout
    state, pid = out.split()[:2] if len(out.split()) >= 2 else ("?", "0")
    # systemctl show prints MainPID first, then ActiveState (property order of the unit).
    return (pid, state) if state.isdigit() else (state, pid)


def served(vm: Vm) -> str:
    host, port = vm.prepared.endpoints[0]
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as resp:
        return str(resp.read().decode().splitlines()[0])


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.elixir_release import build_release, elixir_available

    need(elixir_available(), "elixir/mix are not installed")
    out = tmp_path_factory.mktemp("releases")
    return {v: build_release(v, out_dir=out / v) for v in ("1.0.0", "2.0.0")}


def test_systemd_runner_slot_lifecycle(vm: Vm, releases: dict[str, Path]) -> None:
    """Each slot is an instance of the template unit: started and health-gated by bg through
    systemd, switched, and the old one stopped by systemd; `systemctl` agrees with `bg
    status` at every step."""
    fresh_app(vm)
    config = systemd_config(vm, releases["1.0.0"].parent)
    first = ("--accept-new-host-keys",)
    setup = vm.bg(config, *first, "-t", "vm", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    unit = vm.sh(f"cat /etc/systemd/system/{APP}@.service").stdout
    assert "User=vagrant" in unit and "Restart=on-failure" in unit
    d1 = vm.bg(config, "-t", "vm", "deploy", str(releases["1.0.0"]))
    assert d1.returncode == 0, d1.stdout + d1.stderr
    assert unit_state(vm, "blue")[0] == "active"
    assert unit_state(vm, "green")[0] == "inactive"
    assert "1.0.0" in served(vm)
    d2 = vm.bg(config, "-t", "vm", "deploy", str(releases["2.0.0"]))
    assert d2.returncode == 0, d2.stdout + d2.stderr
    assert unit_state(vm, "green")[0] == "active"
    assert unit_state(vm, "blue")[0] == "inactive"  # retired through `systemctl stop`
    assert "2.0.0" in served(vm)
    status = vm.bg(config, "-t", "vm", "--json", "status")
    data = json.loads(status.stdout[status.stdout.index("{"):])["result"]
    host = data["hosts"][0]
    assert host["version"] == "2.0.0" and host["live"] == "green", host
    for slot in ("blue", "green"):
        assert host["slots"][slot]["running"] == (unit_state(vm, slot)[0] == "active"), host
    # As systemd sees it: exactly the live slot's unit runs, as the deploy user.
    running = vm.sh(f"systemctl list-units --state=active --plain --no-legend '{APP}@*'"
                    ).stdout.split()
    assert running[:1] == [f"{APP}@green.service"]
    pid = unit_state(vm, "green")[1]
    assert vm.sh(f"ps -o user= -p {pid}").stdout.strip() == "vagrant"


def test_a_crashed_slot_is_restarted_by_systemd(vm: Vm, releases: dict[str, Path]) -> None:
    """SIGKILL to the live node: systemd starts the unit again (Restart=on-failure) and nginx
    serves the same release again, with no bg command."""
    config = vm.workdir / "systemd.toml"
    if unit_state(vm, "green")[0] != "active":  # run alone: deploy first
        test_systemd_runner_slot_lifecycle(vm, releases)
    state, before = unit_state(vm, "green")
    assert state == "active" and before != "0"
    vm.sh(f"sudo -n kill -KILL {before}")
    deadline = time.monotonic() + 180
    after = before
    while time.monotonic() < deadline:
        state, after = unit_state(vm, "green")
        if state == "active" and after not in ("0", before):
            break
        time.sleep(1)
    assert state == "active" and after not in ("0", before), (state, before, after)
    restarts = vm.sh(f"systemctl show -p NRestarts --value {APP}@green.service").stdout
    assert int(restarts.strip()) >= 1
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if "2.0.0" in served(vm):
                break
        except OSError:
            pass
        time.sleep(1)
    assert "2.0.0" in served(vm)
    status = vm.bg(config, "-t", "vm", "status")
    assert status.returncode == 0, status.stdout + status.stderr
