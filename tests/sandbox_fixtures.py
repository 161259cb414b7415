"""pytest fixtures for simulated hosts (``bluegreen.sandbox.hosts``).

A test module imports the fixtures it uses, e.g.
``from tests.sandbox_fixtures import make_sandbox, sandbox_1``. Without root (or the tools) the
tests skip, except under ``BG_REQUIRE_ROOT_TESTS=1`` (CI), where they fail: root tests never
vanish silently. Every sandbox a test made is torn down after it, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import paramiko
import pytest
from fabric import Config, Connection

from bluegreen.sandbox.hosts import Sandbox, SandboxError, SandboxHost, require_root_or_skip_reason
from tests.helpers import need


def need_root() -> None:
    """Skip the test when sandbox hosts cannot run here; fail instead when CI requires them."""
    reason = require_root_or_skip_reason()
    need(reason is None, reason or "")


class MakeSandbox(Protocol):
    def __call__(
        self, count: int = 1, *, app: str = "hello", shared_network: bool = False
    ) -> Sandbox: ...


@pytest.fixture
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeSandbox]:
    """A factory of started sandboxes; all of them are torn down after the test."""
    need_root()
    made: list[Sandbox] = []

    def make(count: int = 1, *, app: str = "hello", shared_network: bool = False) -> Sandbox:
        workdir = tmp_path_factory.mktemp("sandbox")
        sandbox = Sandbox(workdir, count, app=app, shared_network=shared_network)
        made.append(sandbox)
        sandbox.start()
        return sandbox

    yield make
    failures: list[str] = []
    for sandbox in reversed(made):
        try:
            sandbox.teardown()
        except SandboxError as exc:
            failures.append(f"{sandbox.workdir}: {exc.message}\n{exc.detail}")
    if failures:
        pytest.fail("sandbox teardown failed:\n" + "\n".join(failures))


@pytest.fixture
def sandbox_1(make_sandbox: MakeSandbox) -> Sandbox:
    """One started host."""
    return make_sandbox(1)


@pytest.fixture
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh $HOME, so paramiko and Fabric never read or write the real ~/.ssh."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def mountinfo_sources() -> set[str]:
    """The source of every mount any process on this machine sees."""
    sources: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "mountinfo").read_text()
        except OSError:
            continue  # exited meanwhile
        for line in text.splitlines():
            after = line.partition(" - ")[2].split()
            if len(after) >= 2:
                sources.add(after[1])
    return sources


def fabric_connection(
    sandbox: Sandbox, host: SandboxHost, *, known_hosts: Path | None = None
) -> Connection:
    """A Fabric connection to ``host`` that trusts only the keys in ``known_hosts``
    (the sandbox's by default) and authenticates only with the sandbox's client key."""
    conn = Connection(
        host.spec,
        # No ssh_config files; no reading of pytest's (captured) stdin.
        config=Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}}),
        connect_timeout=10,
        connect_kwargs={
            "key_filename": str(sandbox.identity_file),
            "allow_agent": False,
            "look_for_keys": False,
        },
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(known_hosts or sandbox.known_hosts))
    return conn
