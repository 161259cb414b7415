"""`bg rehearse` end to end: real nginx, real sshd (sandbox hosts), the real CLI, real load.

Each rehearsal runs the whole sequence (deploy A, deploy B, a refused release, rollback,
switch) under new-connection, keep-alive and POST load, and its JSON report must say that
nothing failed. The local one runs as an unprivileged user; a SIGINT in the middle must leave
nothing behind.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.sandbox.nginx import NGINX_BIN
from bluegreen.sandbox.sample import build_sample
from bluegreen.tomlwriter import dumps
from tests.helpers import bg_argv, need
from tests.sandbox_fixtures import need_root

ROOT = Path(__file__).resolve().parent.parent
# deploy A, deploy B, refused, undone (the sample app's failing release), canary, abort,
# rollback, switch
EXPECTED_EXITS = [0, 0, 3, 10, 0, 0, 0, 0]
USER_EXITS = [0, 0, 3, 0, 0]  # the user's own releases: no failing one to undo


def bg_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def rehearse(*args: str, cwd: Path, env: dict[str, str] | None = None, prefix: list[str] | None
             = None, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    argv = [*(prefix or []), *bg_argv("rehearse", "--json", *args)]
    proc = subprocess.run(argv, cwd=cwd, env=env or bg_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stderr


def assert_clean_report(data: dict[str, Any], environment: str, hosts: int, stderr: str,
                        exits: list[int] | None = None, sockets: bool = True) -> None:
    assert data, f"no JSON report; stderr:\n{stderr[-3000:]}"
    assert data["environment"] == environment
    assert data["hosts"] == hosts
    assert [s["exit"] for s in data["steps"]] == (exits or EXPECTED_EXITS), data["steps"]
    assert data["totals"]["failed"] == 0, (data["totals"], data["steps"])
    assert all(s["failed"] == 0 for s in data["steps"])
    # Enough traffic that "nothing failed" means something, from every kind of client.
    assert data["totals"]["requests"] >= 300, data["totals"]
    assert all(c["requests"] >= 30 for c in data["totals"]["by_client"].values()), data["totals"]
    assert data["ok"] is True, data["problems"]
    assert set(data["steps"][0]) >= {"name", "exit", "seconds", "requests", "failed"}
    ws = data["totals"]["websockets"]
    if not sockets:  # a user's app: the rehearsal cannot know that it serves /ws
        assert ws is None, ws
        return
    # The sample app's sockets, held through every step: each retire closed them with 1001
    # and each reconnected (to the release nginx served: else "problems" says so).
    assert set(ws["ends"]) == {"close 1001"} and ws["reconnects"] == sum(ws["ends"].values())
    assert ws["ends"]["close 1001"] == 3 * ws["held"], ws  # deploy B, rollback, switch


def nobody_prefix(home: Path) -> list[str]:
    """A command prefix that runs as nobody, with ``home`` as HOME.

    When the interpreter, the checkout or a directory on ``sys.path`` lies under a directory
    nobody cannot enter (pyenv in a 0700 /root, a clone under ``mktemp -d``), a private mount
    namespace shows nobody that directory's needed children and nothing else, instead of
    changing the machine's permissions.
    """
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env",
               f"HOME={home}"]
    needed = [Path(os.path.realpath(sys.executable)), Path(sys.executable), ROOT,
              *(Path(p) for p in sys.path if p and os.path.isdir(p))]
    children: dict[Path, set[str]] = {}
    for target in needed:
        for parent in reversed(target.parents):
            if not os.stat(parent).st_mode & 0o001:
                children.setdefault(parent, set()).add(target.relative_to(parent).parts[0])
    if not children:
        return setpriv
    stashes = home.parent / "stash"
    stashes.mkdir(exist_ok=True)
    steps: list[str] = []
    # Outer directories first: an inner blocked one is reached again through its re-bound
    # parent.
    for n, blocked in enumerate(sorted(children, key=lambda p: len(p.parts))):
        moves: list[str] = []
        for m, child in enumerate(sorted(children[blocked])):
            source, stash = blocked / child, stashes / f"{n}-{m}"
            make = "mkdir" if source.is_dir() else "touch"
            stash.mkdir() if source.is_dir() else stash.touch()
            steps.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(stash))}")
            moves.append(f"{make} {shlex.quote(str(source))}"
                          f" && mount --move {shlex.quote(str(stash))} {shlex.quote(str(source))}")
        steps.append(f"mount -t tmpfs -o mode=755 bg {shlex.quote(str(blocked))}")
        steps.extend(moves)
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *setpriv]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write in (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bg-rehearse-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.nginx
def test_local_rehearsal_as_an_unprivileged_user(shared_dir: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    need(shutil.which("setpriv") is not None or os.geteuid() != 0, "setpriv is missing")
    home, tmp, out = shared_dir / "home", shared_dir / "tmp", shared_dir / "out"
    for d in (home, tmp, out):
        d.mkdir(mode=0o777)
        d.chmod(0o777)
    prefix = nobody_prefix(home) if os.geteuid() == 0 else []
    started = time.monotonic()
    code, data, stderr = rehearse("--local", cwd=out, env=bg_env(TMPDIR=str(tmp)), prefix=prefix)
    wall = time.monotonic() - started
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "local", 1, stderr)
    assert "hello 2.0.0" in data["steps"][-1]["serving"]  # B serves again after the switch
    assert data["steps"][2]["serving"] == data["steps"][1]["serving"]  # refused: B stayed
    assert list(tmp.iterdir()) == [], "the rehearsal left its temporary directory behind"
    if os.geteuid() == 0:
        assert (out / "bg-rehearsal.json").stat().st_uid != 0  # it really ran as nobody
    if data["plot"]:
        assert (out / "bg-rehearsal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert wall < 90, f"the local rehearsal took {wall:.0f}s"


class OwnNamespaces:
    """Records, while a rehearsal runs, the network namespaces whose processes mention
    ``marker`` (its temporary directory): other sandboxes on this machine come and go at the
    same time, so "no namespace more than before" would not say whose it is."""

    def __init__(self, marker: Path) -> None:
        import threading

        self.marker = str(marker)
        self.seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        from bluegreen.sandbox.hosts import netns_pids

        while not self._stop.wait(0.2):
            for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
                try:
                    inode = os.stat(f"/run/netns/{name}").st_ino
                except OSError:
                    continue
                if (name, inode) in self.seen:
                    continue
                for pid in netns_pids([name]):
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if self.marker.encode() in cmd:
                        self.seen.add((name, inode))
                        break

    def __enter__(self) -> OwnNamespaces:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _mine(self, name: str) -> bool | None:
        """Whether ``name`` runs processes of the rehearsal; None when it runs none."""
        from bluegreen.sandbox.hosts import netns_pids

        pids = netns_pids([name])
        if not pids:
            return None
        for pid in pids:
            try:
                if self.marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False

    def left(self) -> list[str]:
        """The recorded namespaces still there. Namespace inodes are reused at once, and other
        sandboxes take free names at once, so one of the same name is the rehearsal's if it
        runs the rehearsal's processes, or stays empty (a new one gets its processes within
        a moment)."""
        out = []
        for name, _ in self.seen:
            mine = self._mine(name)
            if mine is None:
                time.sleep(1.0)
                mine = self._mine(name)
                if mine is None and not os.path.exists(f"/run/netns/{name}"):
                    continue
            if mine is not False:
                out.append(name)
        return out


@pytest.mark.root
def test_sandbox_rehearsal_with_two_hosts(tmp_path: Path) -> None:
    need_root()
    with OwnNamespaces(tmp_path) as namespaces:
        code, data, stderr = rehearse("--sandbox", "--hosts", "2", cwd=tmp_path,
                                      env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "sandbox", 2, stderr)
    assert "2 hosts" in stderr  # the environment said what it started
    assert "cleanup:" not in stderr
    assert len(namespaces.seen) == 2, namespaces.seen
    assert namespaces.left() == [], "the rehearsal left network namespaces behind"


def _user_project(where: Path, app: str = "shop") -> tuple[Path, list[Path]]:
    """A user's project: two release tarballs and a hand-written bluegreen.toml that points
    at production (which the rehearsal must redirect, never touch)."""
    arts = [build_sample(where / "rel", v, app=app) for v in ("4.1.0", "4.2.0")]
    (where / "prod.env").write_text("GREETING=howdy\n")
    (where / "prod.env").chmod(0o600)
    config = {
        "app": {"name": app, "root": f"/srv/{app}", "runner": "command",
                "command": "bin/server", "env_file": "prod.env", "keep_releases": 4},
        "slots": {"blue": 4001, "green": 4002},
        "health": {"path": "/health", "interval": 0.2, "timeout": 1.0, "deadline": 20.0},
        "nginx": {"upstream_file": f"/etc/nginx/conf.d/{app}.bluegreen.conf",
                  "test_command": "sudo nginx -t", "reload_command": "sudo nginx -s reload",
                  "probe_url": "http://127.0.0.1/"},
        "hooks": {"after_deploy": ["true"]},
        "targets": {"production": {"hosts": ["deploy@prod1.invalid", "deploy@prod2.invalid"]}},
    }
    path = where / "bluegreen.toml"
    path.write_text(dumps(config))
    return path, arts


@pytest.mark.nginx
def test_rehearsal_of_the_users_artifacts_and_config(tmp_path: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    config, arts = _user_project(tmp_path)
    code, data, stderr = rehearse("--local", *map(str, arts), cwd=tmp_path,
                                  env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert_clean_report(data, "local", 1, stderr, USER_EXITS, sockets=False)
    # The user's env file was used; their app served A, then B, and B again at the end.
    assert data["steps"][0]["serving"].startswith("howdy 4.1.0")
    assert data["steps"][-1]["serving"].startswith("howdy 4.2.0")
    # The refusal is a real health-gate failure of B on a path it cannot answer.
    refused = data["steps"][2]
    assert refused["name"].startswith("refused (4.2.0-refused")
    assert "health" in refused["message"].lower(), refused
    assert f"your app shop ({config})" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bluegreen.toml", "prod.env", "rel", "bg-rehearsal.json", "bg-rehearsal.png"][
            : 5 if data["plot"] else 4])


@pytest.mark.nginx
def test_one_user_artifact_is_rehearsed_as_two_versions(tmp_path: Path) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    _, arts = _user_project(tmp_path)
    code, data, stderr = rehearse("--local", str(arts[0]), cwd=tmp_path,
                                  env=bg_env(TMPDIR=str(tmp_path)))
    assert code == 0, stderr[-3000:]
    assert [s["name"].split(" (")[1].rstrip(")") for s in data["steps"][:3]] == [
        "4.1.0", "4.1.0-b", "4.1.0-b-refused"]


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    code, _, stderr = rehearse("--local", str(tmp_path / "nope.tar.gz"), cwd=tmp_path)
    assert code != 0 and "no such release tarball" in stderr
    code, _, stderr = rehearse("--local", "--sandbox", cwd=tmp_path)
    assert code != 0 and "choose one of" in stderr
    code, _, stderr = rehearse("--app", "rails", cwd=tmp_path)
    assert code == 2 and "--app must be sample or elixir" in stderr
    assert list(tmp_path.iterdir()) == []


def _mounts_mentioning(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in line]


def _processes_mentioning(path: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmd:
                found.append(f"{entry}: {cmd}")
    return found


@pytest.mark.parametrize("where", [pytest.param("--sandbox", marks=pytest.mark.root),
                                   pytest.param("--local", marks=pytest.mark.nginx)])
def test_sigint_in_the_middle_leaves_nothing_behind(tmp_path: Path, where: str) -> None:
    need(os.access(NGINX_BIN, os.X_OK), "nginx is not installed")
    if where == "--sandbox":
        need_root()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    namespaces = OwnNamespaces(tmp).__enter__()
    proc = subprocess.Popen(
        bg_argv("rehearse", where, "--hosts", "2"), cwd=tmp_path,
        env=bg_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # until the load runs and bg is deploying B
        seen.append(line)
        if line.startswith("[2/") or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    workdirs = list(tmp.iterdir())
    assert len(workdirs) == 1, (workdirs, "".join(seen))
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    namespaces.__exit__()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert list(tmp.iterdir()) == [], "the temporary directory is still there"
    assert _processes_mentioning(workdirs[0]) == []
    assert _mounts_mentioning(workdirs[0]) == []
    if where == "--sandbox":
        assert len(namespaces.seen) == 2, namespaces.seen
    assert namespaces.left() == [], "a namespace is still there"


# ----------------------------------------------------------------------------- unit tier
@pytest.mark.unit
def test_windows_and_buckets_count_failures_by_kind() -> None:
    from bluegreen.loadclient import RESET, STALE, buckets, window

    records = {"close": [(10.0, 0.01, 200), (10.3, 0.01, 502), (11.2, 0.01, RESET)],
               "keepalive": [(10.1, 0.01, 200), (10.6, 0.01, STALE)]}
    w = window(records, 10.0, 11.0)
    assert w.requests == {"close": 2, "keepalive": 2}
    assert w.failed == {"close": {"HTTP 502": 1}, "keepalive": {"stale keep-alive": 1}}
    assert (w.total, w.total_failed) == (4, 2)
    xs, reqs, fails = buckets(records, 10.0, 11.5, width=0.5)
    assert xs == [0.0, 0.5, 1.0, 1.5] and reqs == [3, 1, 1, 0] and fails == [1, 1, 1, 0]


def _half_keepalive_server() -> tuple[int, Any]:
    """Answers the first request of each connection (keep-alive), then reads the second and
    closes without answering: the race a reload causes on a reused connection."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve(conn: socket.socket) -> None:
        with conn:
            for n in range(2):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                if n == 0:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                 b"X-App-Version: 9.9.9\r\n\r\nok\n")

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return port, server


@pytest.mark.unit
@pytest.mark.parametrize("retry", [True, False])
def test_keepalive_client_retries_a_stale_get_once_and_counts_it(retry: bool) -> None:
    from bluegreen.loadclient import MIX_BY_NAME, STALE, ClientStats, Record, client_loop

    port, server = _half_keepalive_server()
    out: list[Record] = []
    stats = ClientStats()
    try:
        client_loop(MIX_BY_NAME["keepalive"], "127.0.0.1", port, rate=0, stop=lambda: False,
                    deadline=time.monotonic() + 10, max_requests=4, timeout=2.0, out=out,
                    stats=stats, retry_stale=retry)
    finally:
        server.close()
    codes = [code for _, _, code in out]
    assert len(codes) == 4
    if retry:
        assert codes == [200] * 4 and stats.stale_retries >= 1
    else:
        assert STALE in codes and stats.stale_retries == 0
    assert stats.versions == {"9.9.9"}


@pytest.mark.unit
def test_the_users_config_is_redirected_into_the_rehearsal(tmp_path: Path) -> None:
    import tomllib

    from bluegreen import config as configuration
    from bluegreen.rehearse import apps
    from bluegreen.rehearse.envs import Prepared

    user_config, arts = _user_project(tmp_path)
    plan = apps.user(arts, user_config)
    env = Prepared(name="local", hosts=1, root=str(tmp_path / "srv" / "shop"),
                   nginx={"upstream_file": "/x/shop.conf", "test_command": "nginx -t -p /x",
                          "reload_command": "nginx -s reload -p /x", "pid_file": "/x/pid",
                          "probe_url": "http://127.0.0.1:18001/"},
                   endpoints=[("127.0.0.1", 18001)], slots={"blue": 11001, "green": 11002})
    normal = tomllib.loads(apps.redirect(plan, env))
    refused = tomllib.loads(apps.redirect(plan, env, refused=True))
    # Redirected: root, ports, nginx, targets (production is never named in the rehearsal).
    assert normal["app"]["root"] == env.root and normal["slots"] == env.slots
    assert normal["nginx"]["upstream_file"] == "/x/shop.conf" and "targets" not in normal
    # Kept: runner, command, health, hooks; the env file, made absolute.
    assert normal["app"]["runner"] == "command" and normal["app"]["command"] == "bin/server"
    assert normal["app"]["env_file"] == str(tmp_path / "prod.env")
    assert normal["health"]["path"] == "/health" and normal["hooks"] == {"after_deploy": ["true"]}
    # The refused release: a health path and status nothing answers, and a short deadline.
    assert refused["health"]["path"] == apps.REFUSED_HEALTH_PATH
    assert refused["health"]["expect"] == 599 and refused["health"]["deadline"] == 3.0
    for text in (apps.redirect(plan, env), apps.redirect(plan, env, refused=True)):
        path = tmp_path / "check.toml"
        path.write_text(text)
        configuration.load(path)  # bg itself accepts both
    assert [apps.version_of(r, "shop") for r in (plan.a, plan.b, plan.refused)] == [
        "4.1.0", "4.2.0", "4.2.0-refused"]


@pytest.mark.unit
def test_vagrant_http_endpoint() -> None:
    from bluegreen.rehearse.vagrantenv import FORWARDED_HTTP_PORT, http_endpoint
    from bluegreen.vagrant import VagrantHost

    assert http_endpoint(VagrantHost("default", "127.0.0.1", 2222, "vagrant", "")) == (
        "127.0.0.1", FORWARDED_HTTP_PORT)
    assert http_endpoint(VagrantHost("default", "192.168.121.5", 22, "vagrant", "")) == (
        "192.168.121.5", 80)


@pytest.mark.unit
def test_the_table_says_fail_and_why() -> None:
    from bluegreen.rehearse.report import table

    step = {"name": "refused (3.0.0)", "exit": 0, "expected": 3, "seconds": 1.0,
            "requests": 10, "failed": 2, "failed_by_kind": {"close: HTTP 502": 2},
            "serving": "hello 3.0.0", "started_at": 1.0}
    data = {"ok": False, "environment": "local", "hosts": 1, "steps": [step], "seconds": 5.0,
            "totals": {"requests": 10, "failed": 2, "by_client": {"close": {"requests": 10,
                                                                           "failed": 2}},
                       "stale_keepalive_retries": 0, "stale_keepalive_reconnects": 0},
            "problems": ["refused (3.0.0): exit 0, expected 3", "2 requests failed"]}
    text = table(data)
    assert "rehearsal on local (1 host): FAIL" in text
    assert "0 (!=3)" in text and "close: HTTP 502" in text
    assert "problem: 2 requests failed" in text and "safe to deploy" not in text
