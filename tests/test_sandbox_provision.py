"""``provision(host)``: the repo's nginx/provision.sh on a sandbox host, over its SSH, changing
that host only (never this machine's /etc)."""

from __future__ import annotations

import hashlib
import http.client
import subprocess
from pathlib import Path

import pytest

from bluegreen.sandbox.hosts import Sandbox, SandboxError, SandboxHost
from bluegreen.sandbox.provision import provision
from tests import sandbox_fixtures
from tests.sandbox_fixtures import MakeSandbox, mountinfo_sources

make_sandbox = sandbox_fixtures.make_sandbox

pytestmark = pytest.mark.root


def tree_digest(*roots: str) -> str:
    """Names, link targets and contents under ``roots``: equal digests, unchanged trees."""
    digest = hashlib.sha256()
    for root in roots:
        base = Path(root)
        if not base.exists():
            digest.update(f"{root} missing\n".encode())
            continue
        for path in sorted(base.rglob("*")):
            digest.update(str(path).encode())
            if path.is_symlink():
                digest.update(str(path.readlink()).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def ssh(sandbox: Sandbox, host: SandboxHost, script: str) -> subprocess.CompletedProcess[str]:
    argv = sandbox.ssh_argv(host, script)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def nginx_status(host: SandboxHost) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection(host.address, 80, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        return reply.status, reply.getheader("X-BG-Slot")
    finally:
        conn.close()


def test_provision_runs_the_real_script_on_one_host_only(make_sandbox: MakeSandbox) -> None:
    machine = ("/etc/nginx", "/etc/sudoers.d", "/tmp/bg-site.conf.j2")
    before = tree_digest(*machine)
    sandbox = make_sandbox(2)
    done, other = sandbox.hosts

    provision(done)
    provision(done)  # idempotent, like the script

    inside = ssh(sandbox, done, (
        "readlink /etc/nginx/sites-enabled/hello;"
        " test ! -e /etc/sudoers.d/bg-root && echo no-sudoers-for-root; "
        "test -e /etc/nginx/sites-enabled/default && echo default-kept; "
        "cat /etc/nginx/conf.d/hello-bluegreen-include.conf; nginx -q -t && echo valid"
    ))
    assert inside.returncode == 0, inside.stderr
    lines = inside.stdout.splitlines()
    assert lines[0] == "/etc/nginx/sites-available/hello"
    assert lines[1] == "no-sudoers-for-root"  # root needs no sudo rule
    # Debian's default site stays (tests/test_nonroot.py: the host's own sites are left alone)
    assert lines[2:] == ["default-kept", "include /srv/hello/nginx/*.conf;", "valid"]
    upstream = done.srv("/srv/hello/nginx/hello.bluegreen.conf").read_text()
    assert "upstream hello_live { server 127.0.0.1:4001; }" in upstream
    # The other host and this machine are untouched; the host's own nginx still serves.
    elsewhere = ssh(sandbox, other, "ls /etc/nginx/sites-enabled/hello /srv/hello/nginx 2>&1; true")
    assert elsewhere.stdout.count("No such file") == 2, elsewhere.stdout
    assert tree_digest(*machine) == before
    assert nginx_status(done) == (502, "none")

    sources = {f"{done.mount_tag}-provision"}
    assert sources <= mountinfo_sources()
    sandbox.teardown()
    assert not sources & mountinfo_sources()
    assert tree_digest(*machine) == before


def test_provision_failure_names_the_host_and_step(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(1)
    host = sandbox.hosts[0]
    with pytest.raises(SandboxError, match=f"{host.netns}: provisioning failed") as info:
        provision(host, app="hello", user="no-such-user-bg")
    # Where sudo is missing the script stops at installing it (packages are only checked on
    # a sandbox host); where it is there, at the unknown user. Either way the failing
    # step's own words reach the error.
    detail = info.value.detail
    assert "no-such-user-bg" in detail or "not installed on this machine: sudo" in detail, detail


def test_provision_gives_a_hyphenated_app_valid_nginx_names(make_sandbox: MakeSandbox) -> None:
    """`my-shop`'s placeholder upstream, log format and site use nginx's names (`my_shop_live`,
    `$my_shop_slot`, `my_shop_bg`): with the raw name nginx refused them ("unknown "my"
    variable"), so provisioning failed."""
    sandbox = make_sandbox(1)
    (host,) = sandbox.hosts
    provision(host, app="my-shop")
    inside = ssh(sandbox, host, "cat /srv/my-shop/nginx/my-shop.bluegreen.conf"
                                " /etc/nginx/sites-available/my-shop; nginx -q -t && echo valid")
    assert inside.returncode == 0, inside.stderr
    text = inside.stdout
    assert "upstream my_shop_live" in text and "$my_shop_slot" in text and "my_shop_bg" in text
    assert "my-shop_" not in text and text.rstrip().endswith("valid")
