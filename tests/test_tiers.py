"""The tier rule of tests/conftest.py: every test in a tier, `unit` only for tests that need
nothing real."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import tier_problem, tiers_of

pytestmark = pytest.mark.unit


@dataclass
class FakeItem:
    nodeid: str
    marks: list[str] = field(default_factory=list)
    fixturenames: list[str] = field(default_factory=list)

    def iter_markers(self) -> Iterator[pytest.Mark]:
        return iter(getattr(pytest.mark, name).mark for name in self.marks)


def problem(item: FakeItem) -> str | None:
    return tier_problem(item, tiers_of(item))


def test_fixtures_give_the_tier() -> None:
    assert tiers_of(FakeItem("t", fixturenames=["tmp_path", "workspace"])) == {
        "nginx"}
    assert tiers_of(FakeItem("t", ["elixir"], ["make_sandbox"])) == {
        "elixir", "root"}
    assert problem(FakeItem("t", ["nginx", "parametrize"], ["stock"])) is None


def test_a_test_without_a_tier_is_named() -> None:
    message = problem(FakeItem("tests/test_x.py::test_y", ["parametrize"], ["tmp_path"]))
    assert message is not None and message.startswith("tests/test_x.py::test_y: no tier")


def test_a_unit_test_that_needs_more_is_refused() -> None:
    message = problem(FakeItem("tests/test_x.py::test_y", ["unit"], ["sshd", "client_key"]))
    assert message == "tests/test_x.py::test_y: marked unit but needs root; drop the unit mark"
