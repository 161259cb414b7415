"""The real Elixir sample app (tests/fixtures/elixir_app) builds and runs as two slots.

Needs ``mix``/``elixir`` (Debian's ``elixir`` package). Skipped without them, unless
BG_REQUIRE_ROOT_TESTS=1, where a missing toolchain is a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.elixir_release import build_release, elixir_available, extract
from tests.helpers import need

pytestmark = pytest.mark.elixir

BLUE_PORT = 4101
GREEN_PORT = 4102
EXTRA_PORT = 4103
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def require_elixir() -> None:
    """Skip without mix/elixir; fail instead under BG_REQUIRE_ROOT_TESTS=1."""
    need(elixir_available(), "mix/elixir not on PATH (apt-get install elixir)")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def proc_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return []
    if state in ("Z", "X"):  # zombies wait for a reaper; they are not running nodes
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class Slot:
    """One unpacked copy of a release, run with its own node name, port and RELEASE_TMP."""

    root: Path
    node: str
    port: int
    cookie: str
    started: bool = field(default=False)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELEASE_", "HELLO_"))}
        env.update(
            RELEASE_NODE=self.node,
            RELEASE_COOKIE=self.cookie,
            RELEASE_TMP=str(self.root / "tmp"),
            PORT=str(self.port),
            # A node that fails to boot writes its crash dump here, not into our cwd.
            ERL_CRASH_DUMP=str(self.root / "tmp" / "erl_crash.dump"),
        )
        env.update(extra)
        return env

    def bin(
        self, *args: str, timeout: float = 30.0, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / "bin" / "hello"), *args],
            cwd=self.root,
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        assert port_is_free(self.port), f"port {self.port} is already in use on 127.0.0.1"
        self.started = True
        result = self.bin("daemon")
        assert result.returncode == 0, result.stderr
        # `daemon` exits 0 even when the node then fails to boot: watch the process too.
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT:
            try:
                httpx.get(self.url("/"), timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
            if time.monotonic() - started > 2.0 and not self.os_pids():
                pytest.fail(f"{self.node} died while booting:\n{self.logs()}")
        pytest.fail(f"{self.node} did not answer HTTP within {START_TIMEOUT}s:\n{self.logs()}")

    def os_pids(self, program: str = "beam.smp") -> list[int]:
        """Running OS processes of ``program`` that belong to this copy."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            argv = proc_argv(int(entry.name))
            if argv and Path(argv[0]).name == program and any(map(self._inside, argv)):
                pids.append(int(entry.name))
        return pids

    def _inside(self, arg: str) -> bool:
        root = str(self.root)
        return arg == root or arg.startswith(root + "/")

    def wait_down(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Poll ``bin/hello pid`` until it fails, then until no beam.smp of this copy runs."""
        deadline = time.monotonic() + timeout
        pid_failed = False
        while not pid_failed and time.monotonic() < deadline:
            pid_failed = self.bin("pid", timeout=10).returncode != 0
            time.sleep(0 if pid_failed else 0.05)
        while self.os_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid_failed and not self.os_pids()

    def cleanup(self) -> None:
        """Stop the node however it can be stopped; never raises."""
        if not self.started:
            return
        try:
            if self.os_pids():
                self.bin("stop", timeout=10)
                self.wait_down(timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        for program in ("beam.smp", "run_erl"):
            for pid in self.os_pids(program):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def logs(self) -> str:
        parts = []
        for log in sorted((self.root / "tmp" / "log").glob("erlang.log.*")):
            parts.append(log.read_text(errors="replace")[-4000:])
        return "\n".join(parts) or "(no erlang.log)"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_elixir()
    base = tmp_path_factory.mktemp("releases")
    return {
        "v1": build_release("1.0.0", out_dir=base / "good"),
        "v2": build_release("2.0.0", out_dir=base / "good"),
        "bad": build_release("1.0.0", out_dir=base / "bad", health_status=500),
    }


SlotFactory = Callable[[Path, str, int], Slot]


@pytest.fixture
def make_slot(tmp_path: Path) -> Iterator[SlotFactory]:
    cookie = f"bg-test-{secrets.token_hex(12)}"
    slots: list[Slot] = []

    def make(tarball: Path, node: str, port: int) -> Slot:
        root = tmp_path / node
        root.mkdir()
        extract(tarball, root)
        (root / "tmp").mkdir()
        slot = Slot(root=root, node=node, port=port, cookie=cookie)
        slots.append(slot)
        return slot

    yield make
    for slot in slots:
        slot.cleanup()


def test_build_gives_a_cached_tarball_named_after_the_version(tmp_path: Path) -> None:
    require_elixir()
    first = build_release("1.0.0", out_dir=tmp_path / "a")
    assert first == tmp_path / "a" / "hello-1.0.0.tar.gz"
    with tarfile.open(first) as tar:
        names = set(tar.getnames())
    assert {"bin/hello", "releases/1.0.0/start.boot", "releases/COOKIE"} <= names
    assert any(name.startswith("lib/hello-1.0.0/") for name in names)
    assert any(name.startswith("erts-") for name in names)

    started = time.monotonic()
    again = build_release("1.0.0", out_dir=tmp_path / "b")
    assert time.monotonic() - started < 1.0, "second build of the same variant must hit the cache"
    assert again.read_bytes() == first.read_bytes()


def test_concurrent_builds_of_one_variant_agree(tmp_path: Path) -> None:
    require_elixir()
    code = (
        "import sys; from pathlib import Path; from tests.elixir_release import build_release; "
        "print(build_release('3.1.4', out_dir=Path(sys.argv[1]), name_suffix='race'))"
    )
    env = dict(
        os.environ,
        BG_TEST_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(Path(__file__).parent.parent),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"out{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    a, b = (tmp_path / f"out{i}" / "hello-3.1.4.tar.gz" for i in range(2))
    assert a.read_bytes() == b.read_bytes()
    assert len(list((tmp_path / "cache").glob("elixir-releases/*/*.tar.gz"))) == 1


def test_two_slots_run_side_by_side(releases: dict[str, Path], make_slot: SlotFactory) -> None:
    blue = make_slot(releases["v1"], "hello_blue", BLUE_PORT)
    green = make_slot(releases["v2"], "hello_green", GREEN_PORT)
    blue.start()
    green.start()

    for slot, version in ((blue, "1.0.0"), (green, "2.0.0")):
        root = httpx.get(slot.url("/"), timeout=5)
        assert root.status_code == 200
        assert root.text.strip() == f"hello v{version} slot={slot.node}"
        health = httpx.get(slot.url("/health"), timeout=5)
        assert (health.status_code, health.text) == (200, "ok")
        posted = httpx.post(slot.url("/"), content=b"x" * 1234, timeout=5)
        assert (posted.status_code, posted.text.strip()) == (200, "1234")

        pid = slot.bin("pid")
        assert pid.returncode == 0, pid.stderr
        assert [int(pid.stdout.strip())] == slot.os_pids()
        rpc = slot.bin("rpc", "IO.puts(:ok)")
        assert (rpc.returncode, rpc.stdout.strip()) == (0, "ok"), rpc.stderr
        # The cookie comes from RELEASE_COOKIE, not from the release's own COOKIE file.
        cookie = slot.bin("rpc", "IO.puts(Node.get_cookie())")
        assert cookie.stdout.strip() == slot.cookie
        assert (slot.root / "releases" / "COOKIE").read_text().strip() != slot.cookie

    stopped = blue.bin("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert blue.wait_down(), f"hello_blue still running: {blue.os_pids()}"
    assert blue.os_pids() == []
    down = blue.bin("pid")
    assert down.returncode != 0
    assert "nodedown" in down.stderr
    # The other slot is untouched.
    assert httpx.get(green.url("/"), timeout=5).text.startswith("hello v2.0.0")

    assert green.bin("stop").returncode == 0
    assert green.wait_down()


def test_keep_alive_and_nginx_style_http11(
    releases: dict[str, Path], make_slot: SlotFactory
) -> None:
    slot = make_slot(releases["v1"], "hello_blue", BLUE_PORT)
    slot.start()
    # What nginx sends with `proxy_http_version 1.1; proxy_set_header Connection "";`:
    # HTTP/1.1, no Connection header, several requests on one connection.
    with socket.create_connection(("127.0.0.1", slot.port), timeout=5) as sock:
        stream = sock.makefile("rb")
        for method, body, expected in (
            ("GET", b"", b"hello v1.0.0"),
            ("POST", b"abcdef", b"6"),
            ("GET", b"", b"hello v1.0.0"),
        ):
            request = (
                f"{method} / HTTP/1.1\r\nHost: upstream\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            sock.sendall(request + body)
            status = stream.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            assert headers.get("connection", "").lower() != "close"
            assert stream.read(int(headers["content-length"])).startswith(expected)

    with httpx.Client(timeout=5) as client:
        for _ in range(50):
            assert client.get(slot.url("/health")).status_code == 200


def test_bad_variant_fails_health(releases: dict[str, Path], make_slot: SlotFactory) -> None:
    slot = make_slot(releases["bad"], "hello_bad", EXTRA_PORT)
    slot.start()
    assert httpx.get(slot.url("/health"), timeout=5).status_code == 500
    assert httpx.get(slot.url("/"), timeout=5).status_code == 200


def test_migrate_task_and_pid_of_a_stopped_node(
    releases: dict[str, Path], make_slot: SlotFactory
) -> None:
    slot = make_slot(releases["v1"], "hello_blue", BLUE_PORT)
    ok = slot.bin("eval", "Hello.Release.migrate()")
    assert (ok.returncode, ok.stdout.strip()) == (0, "migrated"), ok.stderr
    failed = slot.bin("eval", "Hello.Release.migrate()", HELLO_MIGRATE_FAIL="1")
    assert failed.returncode != 0
    assert "migrated" not in failed.stdout

    down = slot.bin("pid")
    assert down.returncode == 1
    assert down.stdout == ""
    assert "nodedown" in down.stderr
