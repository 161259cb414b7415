"""nginx's master remembered on the host (bluegreen/mastercache.py): a reload with the
default pid_file finds the master by `nginx -T` once, then reuses the answer while the
same process (pid and start time) runs; a restarted nginx, a reused pid or another
configuration runs the full discovery again."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from bluegreen import mastercache, nginx
from bluegreen.config import Config, load
from tests.helpers import Workspace, make_workspace


def _sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)


def _counting_nginx(ws: Workspace, cfg: Config) -> tuple[Config, Path]:
    """``cfg`` whose nginx is a wrapper logging each of its command lines (still named
    nginx, so bg reads it as the binary), its pid_file naming no nginx, and no reload."""
    log = ws.dir / "nginx-calls.log"
    wrapper = ws.dir / "bin" / "nginx"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec /usr/sbin/nginx "$@"\n')
    wrapper.chmod(0o755)
    argv = ws.nginx.argv("-q", "-t")
    test = " ".join([str(wrapper), *argv[1:]])
    return dataclasses.replace(cfg, nginx=dataclasses.replace(
        cfg.nginx, test_command=test, reload_command="true",
        pid_file=str(ws.dir / "nowhere.pid"))), log


def _calls(log: Path) -> list[str]:
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def test_master_remembered_while_the_same_process_runs(workspace: Workspace) -> None:
    cfg, log = _counting_nginx(workspace, load(workspace.config))
    real = workspace.nginx.master_pid()
    expected = (real, f"nginx -T {workspace.nginx.pid_file}")

    first = _sh(nginx.reload_script(cfg))
    assert first.returncode == 0, first.stderr
    assert nginx.parse_master(first.stdout) == expected
    assert any(c.endswith("-T") for c in _calls(log))  # found the expensive way, once

    again = _sh(nginx.reload_script(cfg))
    assert nginx.parse_master(again.stdout) == expected
    assert _calls(log) == []  # no nginx -T, no nginx -V: the cache answered
    assert len(nginx.parse_old_workers(again.stdout)) == workspace.nginx.workers

    # the master restarted (a new process): the cache misses and finds the new one
    workspace.nginx.stop()
    workspace.nginx.start()
    restarted = workspace.nginx.master_pid()
    assert restarted is not None
    out = _sh(nginx.reload_script(cfg)).stdout
    assert nginx.parse_master(out) == (restarted, expected[1])
    assert any(c.endswith("-T") for c in _calls(log))


def test_cache_not_believed_for_another_process_or_config(workspace: Workspace) -> None:
    cfg, log = _counting_nginx(workspace, load(workspace.config))
    real = workspace.nginx.master_pid()
    cache = Path(mastercache.cache_file(cfg))
    _sh(nginx.reload_script(cfg))
    _calls(log)
    k, pid, start, method, where = cache.read_text().split()
    assert (int(pid), method, where) == (real, "nginx-T", workspace.nginx.pid_file)

    def rediscovered(line: str) -> None:
        """With ``line`` in the cache, the master is found again by nginx -T."""
        cache.write_text(line + "\n")
        assert nginx.parse_master(_sh(nginx.reload_script(cfg)).stdout)[0] == real
        assert any(c.endswith("-T") for c in _calls(log))

    # the same pid with another start time: a reused pid, not the master recorded
    rediscovered(f"{k} 1 {start} {method} {where}")
    rediscovered(f"{k} {pid} {int(start) + 1} {method} {where}")

    # the pid file it was found through names another process now (a binary upgrade: the
    # new master's pid while the old one still runs): not believed
    moved = workspace.dir / "upgraded.pid"
    moved.write_text("1\n")
    rediscovered(f"{k} {pid} {start} {method} {moved}")
    rediscovered(f"{k} {pid} {start} {method} {workspace.dir / 'gone.pid'}")
    # ... and the untouched line is believed (the check above is not always a miss)
    cache.write_text(f"{k} {pid} {start} {method} {where}\n")
    assert nginx.parse_master(_sh(nginx.reload_script(cfg)).stdout)[0] == real
    assert _calls(log) == []

    # another configuration (here: another pid_file) does not read this one's answer
    other = dataclasses.replace(cfg, nginx=dataclasses.replace(
        cfg.nginx, pid_file=str(workspace.dir / "elsewhere.pid")))
    assert mastercache.key(other) != mastercache.key(cfg)
    assert nginx.parse_master(_sh(nginx.reload_script(other)).stdout)[0] == real
    assert any(c.endswith("-T") for c in _calls(log))

    # a garbled cache line is a miss too, never an error
    cache.write_text("garbage\n")
    r = _sh(nginx.reload_script(cfg))
    assert r.returncode == 0 and nginx.parse_master(r.stdout)[0] == real


@pytest.mark.unit
@pytest.mark.parametrize(("method", "pid_file"), [
    ("process tree", ""), ("nginx -T", "x y.pid"), ("pid_file", "nginx.pid")])
def test_cache_line_round_trips_every_method(tmp_path: Path, method: str,
                                             pid_file: str) -> None:
    """A method with a space is one word in the file and comes back whole (a path with a
    space too); on a hit the discovery does not run. PID 1 stands in for a master that
    keeps running."""
    cfg = load(make_workspace(tmp_path).config)
    Path(mastercache.cache_file(cfg)).parent.mkdir(parents=True)
    where = str(tmp_path / pid_file) if pid_file else ""
    if where:
        Path(where).write_text("1\n")
    found = (f'master=1; method="{method}"; where="{where}"; '
             'echo "master: $master $method${where:+ $where}"')
    said = f"{method}{' ' + where if where else ''}"
    assert nginx.parse_master(_sh(mastercache.cached(cfg, found)).stdout) == (1, said)
    never = 'echo "master: - none"; echo discovery-ran'
    hit = _sh(mastercache.cached(cfg, never)).stdout
    assert "discovery-ran" not in hit
    assert nginx.parse_master(hit) == (1, said)
