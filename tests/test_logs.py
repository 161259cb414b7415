"""`bg logs`: the slot's log per host, prefixed by host; live/idle from state; -f follows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bluegreen import logtail
from bluegreen.host import LocalHost
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, bg_argv
from tests.operator_fixtures import envelope, stock  # noqa: F401  (fixture)


@pytest.mark.unit
def test_tail_then_follow_a_file_shows_each_byte_once(tmp_path: Path) -> None:
    log = tmp_path / "blue.log"
    log.write_text("one\ntwo\nthree\n")
    host, src = LocalHost(), logtail.LogSource(path=str(log))
    text, pos = logtail.split_output(src, host.run(logtail.tail_script(src, 2)).stdout, "")
    assert (text, pos) == ("two\nthree\n", str(len("one\ntwo\nthree\n")))
    with log.open("a") as f:
        f.write("four\nfi")
    text, pos = logtail.split_output(src, host.run(logtail.since_script(src, pos)).stdout, pos)
    assert text == "four\nfi"
    text, pos = logtail.split_output(src, host.run(logtail.since_script(src, pos)).stdout, pos)
    assert text == ""
    log.write_text("new\n")  # truncated (rotated): start again from its beginning
    text, _ = logtail.split_output(src, host.run(logtail.since_script(src, pos)).stdout, pos)
    assert text == "new\n"


@pytest.mark.unit
def test_a_missing_log_is_empty(tmp_path: Path) -> None:
    src = logtail.LogSource(path=str(tmp_path / "none.log"))
    out = LocalHost().run(logtail.tail_script(src, 5))
    assert out.ok and logtail.split_output(src, out.stdout, "") == ("", "0")


@pytest.mark.unit
def test_journald_source_keeps_its_cursor() -> None:
    src = logtail.LogSource(unit="shop@blue.service")
    assert "journalctl -u shop@blue.service -n 5" in logtail.tail_script(src, 5)
    text, cursor = logtail.split_output(src, "a\nb\n-- cursor: s=abc;i=1\n", "")
    assert (text, cursor) == ("a\nb\n", "s=abc;i=1")
    assert "--after-cursor='s=abc;i=1'" in logtail.since_script(src, cursor)


def test_logs_per_slot_and_follow(stock: Workspace, tmp_path: Path) -> None:  # noqa: F811
    ws = stock
    ws.bg("deploy", str(build_sample(tmp_path / "art", "1.0.0")))
    ws.bg("deploy", str(build_sample(tmp_path / "art", "2.0.0")), "--keep-old")

    live = ws.bg("logs", "-n", "5").stdout.splitlines()
    assert live and all(line.startswith("local green| ") for line in live)
    assert any("2.0.0" in line for line in live)
    idle = ws.bg("logs", "--slot", "idle", "-n", "1").stdout.splitlines()
    assert len(idle) == 1 and idle[0].startswith("local blue| ")

    doc = envelope(ws.bg("logs", "--json", "--slot", "blue", "-n", "2"))
    assert doc["result"]["hosts"]["local"]["slot"] == "blue"
    assert len(doc["result"]["hosts"]["local"]["lines"]) == 2

    bad = ws.bg("logs", "--slot", "purple", check=False)
    assert bad.returncode == 2 and "--slot must be one of" in bad.stderr

    follower = subprocess.Popen(
        bg_argv("logs", "-f", "-n", "0", config=ws.config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # the follower took its starting position
        with (ws.root / "logs" / "green.log").open("a") as f:
            f.write("marker appended by the test\n")
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert line == "local green| marker appended by the test\n"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            os.kill(follower.pid, signal.SIGKILL)
