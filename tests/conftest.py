from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Workspace, make_workspace, need, serving
from tests.operator_fixtures import stock  # noqa: F401  (registered once)
from tests.sandbox_fixtures import isolated_home, make_sandbox, sandbox_1  # noqa: F401
from tests.ssh_fixtures import (  # noqa: F401  (registered once: one session-wide sshd)
    authorized,
    client_key,
    closed_port,
    fresh_sshd,
    ssh_home,
    ssh_host,
    sshd,
    unpermitted_web_port,
    web_port,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `vm` tier boots a VM (minutes): it runs only when asked for, with ``-m vm``."""
    if "vm" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("vm") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """bg set up on this machine in a temporary root, with a real nginx in front."""
    need(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(),
         "nginx is not installed (apt-get install nginx-light)")
    ws = make_workspace(tmp_path)
    with serving(ws):
        yield ws
