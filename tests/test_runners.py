"""The runners' scripts: every value quoted, and the Elixir stop without a second BEAM.

The Elixir stop is exercised against stand-in processes: a Python interpreter started under
the name ``beam.smp`` with a BEAM-like command line, so the script's process matching,
SIGTERM, bounded wait and SIGKILL fallback run for real without Erlang.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen import config
from bluegreen.layout import Layout
from bluegreen.runners import CommandRunner, Runner, runner_for
from bluegreen.runners.elixir import ElixirRunner

pytestmark = pytest.mark.unit

HOSTILE = "blue x;$(echo > pwned1)`echo > pwned2`'\""


def _cfg(tmp_path: Path, runner: str, root: str = "/srv/my app", **app: object
         ) -> config.Config:
    section = {"name": "hello", "root": root, "runner": runner, **app}
    if runner == "command":
        section["command"] = "bin/server"
    return config.parse(
        {"app": section, "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.conf"}},
        tmp_path / "bluegreen.toml",
    )


def _scripts(runner: Runner, slot: str) -> list[str]:
    scripts = [
        runner.start_script(slot, 4001, "1.0.0"),
        runner.stop_script(slot),
        runner.alive_script(slot),
        runner.eval_script(slot, "true"),
        runner.log_script(slot, 5),
    ]
    return scripts + [s for s in [runner.check_script(slot)] if s]


def injected(script: str, cwd: Path) -> bool:
    """Whether running ``script`` runs what :data:`HOSTILE` injects: under ``sh`` with no
    PATH, so only builtins run (every other command fails harmlessly), and the injection
    is builtins only, leaving a file behind."""
    subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env={"PATH": "/nonexistent"},
                   capture_output=True, timeout=20, check=False)
    return any(cwd.glob("pwned*"))


def test_injected_sees_an_unquoted_value(tmp_path: Path) -> None:
    assert injected(f"echo \"{HOSTILE[:-2]}\"", tmp_path)  # double quotes expand $( )
    for p in tmp_path.glob("pwned*"):
        p.unlink()
    assert not injected(f"echo {shlex.quote(HOSTILE)}", tmp_path)


@pytest.mark.parametrize("kind", ["command", "elixir", "systemd"])
def test_every_value_in_runner_scripts_is_quoted(tmp_path: Path, kind: str) -> None:
    extra = {} if kind == "command" else {"release_name": "hello", "rpc_check": "1"}
    runner = runner_for(_cfg(tmp_path, kind, **extra))
    assert runner.name == kind
    for script in _scripts(runner, HOSTILE):
        assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0, script
        assert shlex.quote(HOSTILE)[1:-1] in script, script
        assert not injected(script, tmp_path), script


def test_command_runner_quotes_slot_in_exports(tmp_path: Path) -> None:
    runner = CommandRunner(Layout("/srv/my app"), "bin/server", 5)
    script = runner.start_script("blue", 4001, "1.0.0")
    assert "BG_SLOT=blue " in script and "'/srv/my app/slots/blue'" in script
    hostile = runner.start_script(HOSTILE, 4001, "1.0.0")
    assert f"BG_SLOT={shlex.quote(HOSTILE)} " in hostile
    assert f"BG_SLOT={HOSTILE}" not in hostile


def test_elixir_stop_and_alive_boot_no_erlang(tmp_path: Path) -> None:
    runner = ElixirRunner(Layout("/srv/hello"), _cfg(tmp_path, "elixir").app)
    for script in (runner.stop_script("blue"), runner.alive_script("blue")):
        assert "bin/" not in script  # neither `bin/<app> stop` nor `bin/<app> pid`
    assert "kill -TERM" in runner.stop_script("blue")
    assert "kill -KILL" in runner.stop_script("blue")


# -- the stop script against stand-in processes -----------------------------------------------


def _fake_beam(bin_dir: Path, root: Path, node: str, *, ignore_term: bool = False
               ) -> subprocess.Popen[bytes]:
    """A process named ``beam.smp`` whose command line looks like a release node's."""
    beam = bin_dir / "beam.smp"
    if not beam.exists():
        beam.symlink_to(os.path.realpath(sys.executable))
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(60)\n"
    argv = [str(beam), "-c", code, "--", "-root", "/usr/lib/erlang", "-sname", node,
            "-boot", f"{root}/releases/1.0.0/releases/1.0.0/start", "--", "-extra"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


@pytest.fixture
def beams(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _runner(tmp_path: Path, stop_timeout: float) -> tuple[ElixirRunner, Path]:
    root = tmp_path / "srv" / "hello"
    cfg = _cfg(tmp_path, "elixir", root=str(root), distribution="sname",
               stop_timeout=stop_timeout)
    return ElixirRunner(Layout(str(root)), cfg.app), root


def _sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)


def test_elixir_stop_terms_this_slots_beam_only(
    tmp_path: Path, beams: list[subprocess.Popen[bytes]]
) -> None:
    runner, root = _runner(tmp_path, stop_timeout=5)
    blue = _fake_beam(tmp_path, root, "hello_blue")
    green = _fake_beam(tmp_path, root, "hello_green")
    other_app = _fake_beam(tmp_path, tmp_path / "elsewhere", "hello_blue")
    beams.extend([blue, green, other_app])
    assert _sh(runner.alive_script("blue")).returncode == 0
    started = time.monotonic()
    result = _sh(runner.stop_script("blue"))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 3  # SIGTERM was enough: no wait to the timeout
    assert blue.wait(timeout=5) == -15  # SIGTERM, the BEAM's graceful init:stop()
    assert "killed" not in result.stdout
    assert green.poll() is None and other_app.poll() is None
    assert _sh(runner.alive_script("blue")).returncode == 1
    assert _sh(runner.alive_script("green")).returncode == 0
    assert _sh(runner.stop_script("blue")).returncode == 0  # nothing to stop: still fine


def test_elixir_stop_kills_after_the_bounded_wait(
    tmp_path: Path, beams: list[subprocess.Popen[bytes]]
) -> None:
    runner, root = _runner(tmp_path, stop_timeout=0.5)
    stubborn = _fake_beam(tmp_path, root, "hello_blue", ignore_term=True)
    beams.append(stubborn)
    started = time.monotonic()
    result = _sh(runner.stop_script("blue"))
    assert result.returncode == 0, result.stderr
    assert 0.4 < time.monotonic() - started < 5
    assert stubborn.wait(timeout=5) == -9
    assert "killed after 0.5s" in result.stdout


def test_elixir_stop_timeout_is_wall_time_when_each_look_is_slow(
    tmp_path: Path, beams: list[subprocess.Popen[bytes]]
) -> None:
    # Every `sleep` takes 0.4 s (an emulated VM's forks): 1 s counted in 0.02 s sleeps was 20 s.
    runner, root = _runner(tmp_path, stop_timeout=1)
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "sleep").write_text("#!/bin/sh\nexec /bin/sleep 0.4\n")
    (slow / "sleep").chmod(0o755)
    beams.append(_fake_beam(tmp_path, root, "hello_blue", ignore_term=True))
    started = time.monotonic()
    result = subprocess.run(["sh", "-c", runner.stop_script("blue")], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "PATH": f"{slow}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert "killed after 1s" in result.stdout
    assert beams[0].wait(timeout=5) == -9
    assert 0.9 < time.monotonic() - started < 6
