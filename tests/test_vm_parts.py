"""The VM's parts that need no VM: the KVM probe's verdicts, Vagrant's progress lines kept out
of bg's output, the box list, the choice of the libvirt provider. Real processes (stand-in
`qemu-system-x86_64` and `vagrant` scripts on PATH), no QEMU, no libvirt."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bluegreen.rehearse.vagrantenv import VagrantEnv
from bluegreen.vm import accel, box

pytestmark = pytest.mark.unit


def script(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"not a kernel: the stand-in qemu never reads it")
    return k


@pytest.fixture
def device(tmp_path: Path) -> str:
    d = tmp_path / "kvm"
    d.write_text("")
    return str(d)


def test_a_kvm_guest_that_hangs_means_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          kernel: Path, device: str) -> None:
    """As seen here: KVM opens, the guest prints a line and then nothing, ever."""
    script(tmp_path / "bin", "qemu-system-x86_64", "echo 'Probing EDD'\nexec sleep 600\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.delenv("BG_VM_DRIVER", raising=False)
    began = time.monotonic()
    found = accel.probe(kernel, timeout=0.5, kvm=device)
    assert found.driver == "qemu" and found.emulated
    assert "Probing EDD" in found.why and time.monotonic() - began < 5


def test_a_kvm_guest_that_boots_means_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          kernel: Path, device: str) -> None:
    script(tmp_path / "bin", "qemu-system-x86_64",
           "echo '[0.9] VFS: Unable to mount root fs on unknown-block(0,0)'\nexec sleep 600\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.delenv("BG_VM_DRIVER", raising=False)
    found = accel.probe(kernel, timeout=5, kvm=device)
    assert found.driver == "kvm" and not found.emulated


def test_no_kvm_device_or_a_crashing_qemu_means_tcg(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    kernel: Path, device: str) -> None:
    monkeypatch.delenv("BG_VM_DRIVER", raising=False)
    assert accel.probe(kernel, kvm=str(tmp_path / "none")).driver == "qemu"
    script(tmp_path / "bin", "qemu-system-x86_64", "echo 'kvm_buf_set_msrs: Assertion' >&2\n"
           "exit 134\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    found = accel.probe(kernel, timeout=5, kvm=device)
    assert found.driver == "qemu" and "Assertion" in found.why


def test_vagrant_progress_lines_stay_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """vagrant redraws "Progress: N%" with CR and ESC[K; only its real lines reach stderr."""
    script(tmp_path / "bin", "vagrant",
           r"""printf '==> default: Uploading base box image as volume into Libvirt storage...\n'
printf '\033[KProgress: 0%%\r\033[KProgress: 1%%\r\033[KProgress: 100%%\r'
printf '\033[K==> default: Creating image (snapshot of base box volume).\n'
printf '    box: Progress: 42%% (Rate: 1024k/s, Estimated time remaining: 0:00:09)\r\n'
echo 'Progress: 5% of it on stderr' >&2
""")
    env = VagrantEnv()
    env._env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    assert env._vagrant("up", show=True).returncode == 0
    err = capsys.readouterr().err
    assert "Progress" not in err
    assert err.splitlines() == [
        "==> default: Uploading base box image as volume into Libvirt storage...",
        "==> default: Creating image (snapshot of base box volume)."]


def test_box_list_for_libvirt(tmp_path: Path) -> None:
    """`vagrant box list -i --machine-readable`: libvirt boxes only, with their info.json."""
    script(tmp_path / "bin", "vagrant", """cat <<'OUT'
1796280589,,box-name,bluegreen/bookworm64
1796280589,,box-provider,libvirt
1796280589,,box-version,0
1796280589,,box-info,bg_box_key,08ea0fa077a4182e
1796280589,,box-name,debian/bookworm64
1796280589,,box-provider,virtualbox
1796280589,,box-version,12.20240905.1
1796280589,,box-name,debian/bookworm64
1796280589,,box-provider,libvirt
1796280589,,box-version,12.20240905.1
OUT
""")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    assert box.installed(env) == {"bluegreen/bookworm64": {"bg_box_key": "08ea0fa077a4182e"},
                                  "debian/bookworm64": {}}


def test_the_box_key_follows_its_inputs(tmp_path: Path) -> None:
    """The cache key is a hash of the builder (its package list included)."""
    key = box.key()
    assert len(key) == 16 and key == box.key()
    copy = tmp_path / "build-box.sh"
    copy.write_text(box.script().read_text().replace("python3", "python3,curl", 1))
    import subprocess

    other = subprocess.run(["sh", str(copy), "--key"], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other != key


def test_target_connect_timeout_reaches_ssh(tmp_path: Path) -> None:
    """An emulated VM's sshd can take over 10 s for a key exchange: the rehearsal raises
    ``connect_timeout``, and it reaches paramiko (TCP connect, banner, key exchange)."""
    from bluegreen import config
    from bluegreen.errors import ConfigError
    from bluegreen.ops.core import open_hosts

    def parse(value: object) -> config.Config:
        return config.parse(
            {"app": {"name": "hello", "root": "/srv/hello", "command": "bin/server"},
             "nginx": {"upstream_file": "/srv/hello/n.conf"},
             "targets": {"vm": {"hosts": ["vagrant@10.0.0.5"], "connect_timeout": value}}},
            tmp_path / "bluegreen.toml")

    cfg = parse(90)
    host = open_hosts(cfg, cfg.target("vm"))[0]
    kwargs = host._conn.connect_kwargs  # type: ignore[attr-defined]
    assert kwargs["timeout"] == kwargs["banner_timeout"] == 90
    with pytest.raises(ConfigError, match="connect_timeout"):
        parse(0)
