"""Provision a sandbox host with the repo's own ``nginx/provision.sh``, as the Vagrantfile does
a VM: the site template is uploaded to /tmp/bg-site.conf.j2, then the script runs over the
host's SSH as ``provision.sh APP USER``.

A sandbox host shares this machine's root file system, so before the script runs, the host's
mount namespace (only) gets a copy-on-write /etc and /var/log (overlays whose upper layers live
in a tmpfs of that namespace), and /tmp likewise while the script runs: what the script writes
there (the site, /etc/sudoers.d, removing the default site) never reaches this machine and
vanishes with the host. Two programs are replaced on the script's PATH, since a sandbox host
has no package manager or systemd of its own: ``apt-get`` checks that the packages are installed
here and installs nothing; ``systemctl reload|restart nginx`` reloads the host's own nginx (prefix
/srv/nginx), which keeps serving: the provisioned /etc/nginx is validated by the script's
``nginx -t`` but not run.
"""

from __future__ import annotations

import shlex
import subprocess

from bluegreen.resources import resource_dir
from bluegreen.sandbox.host import SandboxHost
from bluegreen.sandbox.netns import SandboxError, run

SITE_UPLOAD = "/tmp/bg-site.conf.j2"  # where the Vagrantfile's file provisioner puts it
_OVERLAID = ("/etc", "/var/log")
# Only while the script runs: the host's sshd (and the tests) keep reading and writing the
# sandbox's own files under this machine's /tmp, which a lasting overlay would hide from here.
_OVERLAID_WHILE_PROVISIONING = ("/tmp",)

# Shell run inside the host's mount namespace with $1 the host's provisioning directory and $2
# the source name its mounts carry, so a rerun finds them (and nothing else) in mountinfo.
_MOUNTED = """\
set -eu
base=$1 src=$2
shift 2
mounted() {  # TYPE SOURCE DIR
  awk -v t="$1" -v s="$2" -v d="$3" '$5 == d {
    for (i = 6; i < NF; i++) if ($i == "-") { if ($(i+1) == t && $(i+2) == s) found = 1; break }
  } END { exit !found }' /proc/self/mountinfo
}
"""
# Then: overlay each directory given.
_ISOLATE = _MOUNTED + """\
mkdir -p "$base/layers"
mounted tmpfs "$src" "$base/layers" || mount -t tmpfs -o size=64m,mode=0700 "$src" "$base/layers"
for dir in "$@"; do
  if ! mounted overlay "$src" "$dir"; then
    name=$(echo "$dir" | tr / _)
    mkdir -p "$base/layers/$name.upper" "$base/layers/$name.work"
    mount -t overlay "$src" \\
      -o "lowerdir=$dir,upperdir=$base/layers/$name.upper,workdir=$base/layers/$name.work" "$dir"
  fi
done
# The Vagrant box has sudo, hence /etc/sudoers.d, which the script writes into; this machine
# may not, and the overlay keeps that difference the host's alone.
if mounted overlay "$src" /etc && [ ! -d /etc/sudoers.d ]; then
  install -d -m 0750 /etc/sudoers.d
fi
"""
# Then: remove the overlays of the directories given.
_RELEASE = _MOUNTED + """\
for dir in "$@"; do
  if mounted overlay "$src" "$dir"; then umount -l "$dir"; fi
done
"""

_APT_GET = """\
#!/bin/sh
# sandbox host: it runs this machine's programs; packages are checked, never installed.
[ "${1:-}" = update ] && exit 0
missing=""
for p in "$@"; do
  case "$p" in
    -*|install) ;;
    nginx*) [ -x /usr/sbin/nginx ] || missing="$missing $p" ;;
    *) dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p" ;;
  esac
done
[ -z "$missing" ] && exit 0
echo "sandbox host: not installed on this machine:$missing" >&2
exit 100
"""

_SYSTEMCTL = """\
#!/bin/sh
# sandbox host: its nginx is its own (prefix /srv/nginx), not a systemd unit.
case "$*" in
  "reload nginx"|"restart nginx") exec {reload} ;;
esac
echo "sandbox host: systemctl $* is not supported here" >&2
exit 1
"""


def provision(
    host: SandboxHost, *, app: str | None = None, user: str = "root", timeout: float = 120.0
) -> str:
    """Run ``nginx/provision.sh APP USER`` on ``host`` over its SSH (``app`` defaults to the
    host's nginx app); returns the script's output. Idempotent, like the script."""
    app = app or host.nginx.app
    base = host.confdir / "provision"
    bin_dir = base / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("apt-get", _APT_GET),
        ("systemctl", _SYSTEMCTL.format(reload=host.nginx.reload_command)),
    ):
        shim = bin_dir / name
        shim.write_text(text)
        shim.chmod(0o755)
    args = [str(base), f"{host.mount_tag}-provision"]
    overlaid = [*_OVERLAID, *_OVERLAID_WHILE_PROVISIONING]
    run(host.exec_argv(["sh", "-c", _ISOLATE, "isolate", *args, *overlaid]))
    try:
        nginx_files = resource_dir("nginx")
        site = (nginx_files / "site.conf.j2").read_text()
        _ssh(host, f"cat > {shlex.quote(SITE_UPLOAD)}", site, timeout)
        command = f"PATH={shlex.quote(str(bin_dir))}:$PATH sh -s -- {shlex.join([app, user])}"
        return _ssh(host, command, (nginx_files / "provision.sh").read_text(), timeout)
    finally:
        release = ["sh", "-c", _RELEASE, "release", *args, *_OVERLAID_WHILE_PROVISIONING]
        run(host.exec_argv(release))


def _ssh(host: SandboxHost, command: str, stdin: str, timeout: float) -> str:
    argv = host.ssh_argv(command)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise SandboxError(
            f"{host.netns}: provisioning failed at `{command}` (exit {proc.returncode})",
            detail=(proc.stdout + proc.stderr).strip(),
        )
    return proc.stdout + proc.stderr
