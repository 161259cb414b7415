"""The suite's tiers, and the fixtures every module shares.

Marks are the only tier switch (``pytest -m unit``, ``-m nginx``, ...). A test's tier comes
from the fixtures it uses (``FIXTURE_TIERS``) or from a mark written on it; collection fails
for a test that has none, so no test runs in no tier, and for a ``unit`` test that needs a real
nginx, root or Elixir, so ``-m unit`` stays quick and needs nothing.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import settings

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

# Heaviest last: a test in several tiers is timed under its heaviest (``--tier-durations``).
TIERS = ("unit", "nginx", "elixir", "root", "vm")

# Fixtures that start something real, and the tier that takes. A test's fixtures are read
# with everything they use in turn, so a fixture built on one of these needs no entry.
FIXTURE_TIERS = {
    "workspace": "nginx",  # a real nginx in a temporary root
    "stock": "nginx",
    "debian_nginx": "nginx",
    "make_sandbox": "root",  # network namespaces, sshd, mounts
    "debian_host": "root",
    "client_key": "root",  # every throwaway sshd (ssh_fixtures) starts from it
}

# Property tests: half Hypothesis's default examples, so the unit tier stays quick, and no
# per-example deadline, which a loaded machine misses. HYPOTHESIS_PROFILE=thorough for more.
settings.register_profile("bg", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bg"))

_TIER_OF: dict[str, str] = {}  # nodeid -> heaviest tier, for the durations table
_SECONDS: dict[str, float] = defaultdict(float)
_COUNT: dict[str, set[str]] = defaultdict(set)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier-durations", action="store_true",
                     help="print the seconds each tier took (./dev test)")


class Marked(Protocol):
    """What the tier rule reads of a test item."""

    @property
    def nodeid(self) -> str: ...

    def iter_markers(self) -> Iterator[pytest.Mark]: ...


def tiers_of(item: Marked) -> set[str]:
    """The tiers ``item`` is in: its marks and those its fixtures imply."""
    marked = {m.name for m in item.iter_markers() if m.name in TIERS}
    names = getattr(item, "fixturenames", ())
    return marked | {FIXTURE_TIERS[name] for name in names if name in FIXTURE_TIERS}


def tier_problem(item: Marked, tiers: set[str]) -> str | None:
    if not tiers:
        return (f"{item.nodeid}: no tier; mark it with one of {', '.join(TIERS)} "
                f"(or use a fixture of tests/conftest.py FIXTURE_TIERS)")
    if "unit" in tiers and len(tiers) > 1:
        heavy = ", ".join(sorted(tiers - {"unit"}))
        return f"{item.nodeid}: marked unit but needs {heavy}; drop the unit mark"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects: it sees the derived marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        tiers = tiers_of(item)
        if (problem := tier_problem(item, tiers)) is not None:
            problems.append(problem)
        for tier in sorted(tiers):
            if item.get_closest_marker(tier) is None:
                item.add_marker(tier)
        _TIER_OF[item.nodeid] = max(tiers or {"unit"}, key=TIERS.index)
    if problems:
        raise pytest.UsageError("tests outside the tiers:\n  " + "\n  ".join(problems))
    # The vm tier boots a VM (minutes): it runs only when asked for, with ``-m vm``.
    if "vm" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("vm") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = _TIER_OF.get(report.nodeid)
    if tier is not None:  # setup and teardown count: they start nginx, sandboxes, ...
        _SECONDS[tier] += report.duration
        _COUNT[tier].add(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    if not config.getoption("--tier-durations") or not _COUNT:
        return
    write = terminalreporter.write_line
    terminalreporter.section("seconds per tier (a test counts in its heaviest tier)")
    for tier in TIERS:
        if tier in _COUNT:
            write(f"{tier:<8}{len(_COUNT[tier]):>5} tests {_SECONDS[tier]:>9.1f} s")
    write(f"{'all':<8}{sum(map(len, _COUNT.values())):>5} tests "
          f"{sum(_SECONDS.values()):>9.1f} s")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """bg set up on this machine in a temporary root, with a real nginx in front."""
    need(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(),
         "nginx is not installed (apt-get install nginx-light)")
    ws = make_workspace(tmp_path)
    with serving(ws):
        yield ws
