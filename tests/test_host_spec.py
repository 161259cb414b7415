"""Host specs (``user@host:port``) parsed strictly: pure functions, no sshd."""

from __future__ import annotations

import pytest

from bluegreen.errors import ConfigError
from bluegreen.ssh import SshTarget, parse_host_spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app1", SshTarget(None, "app1", None)),
        ("deploy@app1.example.com:2222", SshTarget("deploy", "app1.example.com", 2222)),
        ("user@host", SshTarget("user", "host", None)),
        ("host:22", SshTarget(None, "host", 22)),
        ("10.0.0.5", SshTarget(None, "10.0.0.5", None)),
        ("[::1]:22", SshTarget(None, "::1", 22)),
        ("root@[::1]", SshTarget("root", "::1", None)),
        ("::1", SshTarget(None, "::1", None)),
        ("a_b-c.d", SshTarget(None, "a_b-c.d", None)),
    ],
)
def test_parse_host_spec(spec: str, expected: SshTarget) -> None:
    assert parse_host_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "", " host", "host ", "ho st", "@host", "user@", "host:", "host:0", "host:65536",
        "host:22x", "host:-1", "[::1", "[::1]x", "[nope]:22", "::1:22:zz", "-oProxyCommand=x",
        "host/path", "user@@host", "a@b@c", "host..", "host:22:33",
    ],
)
def test_parse_host_spec_rejects_garbage(spec: str) -> None:
    with pytest.raises(ConfigError, match="invalid host"):
        parse_host_spec(spec)


def test_target_str_roundtrips() -> None:
    for spec in ("app1", "deploy@app1:2222", "root@[::1]:22", "::1"):
        assert str(parse_host_spec(spec)) == spec
