"""The built-in upstream template rendered without Jinja2 (bluegreen/upstream_builtin.py)
writes the same bytes as templates/upstream.conf.j2 rendered by Jinja2, through every
branch of the template: a change to one without the other fails here."""

from __future__ import annotations

import itertools
from typing import Any

import jinja2
import pytest

from bluegreen import upstream_builtin
from bluegreen.resources import resource_dir

pytestmark = pytest.mark.unit

CANARIES: list[dict[str, Any] | None] = [
    None, {},
    {"slot": "green", "version": "2.0.0", "percent": 10, "sticky": False,
     "since": "2026-01-01T00:00:00+00:00"},
    {"slot": "blue", "version": "1.0-rc.1", "percent": 33.5, "sticky": True, "since": "x"},
]
SERVERS: list[list[dict[str, Any]]] = [
    [{"address": "127.0.0.1", "port": 4001, "host": "", "weight": 0}],
    [{"address": "10.0.0.1", "port": 4002, "host": "web-1", "weight": 9},
     {"address": "[fd00::2]", "port": 4002, "host": "web-2", "weight": 0},
     {"address": "10.0.0.3", "port": 4001, "host": "", "weight": 1}],
    [],
]


def _jinja(values: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.get_template("upstream.conf.j2").render(**values)


@pytest.mark.parametrize(("canary", "servers", "probe"), list(itertools.product(
    CANARIES, SERVERS, [(14001, "127.0.0.2"), (14001, None), (0, None), (0, "127.0.0.3")])))
def test_same_bytes_as_the_template(canary: dict[str, Any] | None,
                                    servers: list[dict[str, Any]],
                                    probe: tuple[int, str | None]) -> None:
    values: dict[str, Any] = {
        "app": "my-app", "ident": "my_app", "slot": "green", "port": 4002,
        "version": "1.2.3+build.7", "slots": {"blue": 4001, "green": 4002},
        "servers": servers, "time": "2026-12-03T10:00:00.000+00:00",
        "probe_port": probe[0], "probe_address": probe[1], "canary": canary}
    assert upstream_builtin.render(**values) == _jinja(values)
