"""Every host script bg generates (each builder inside at least one), rendered with
sample values: what shellcheck reads (tests/test_facts.py) and hostile values are fed to
(tests/test_quoting.py)."""

from __future__ import annotations

import dataclasses
from typing import cast

from bluegreen import nginx, releases, teardown
from bluegreen.config import Config
from bluegreen.facts import check, drain, hooks, retire, upstream
from bluegreen.facts.observe import observe_script
from bluegreen.host import Host
from bluegreen.journal import Journal
from bluegreen.layout import Layout
from bluegreen.lock import lock_script
from bluegreen.runners.base import leftover_script, stop_pid_script
from bluegreen.runners.command import CommandRunner
from bluegreen.runners.elixir import ElixirRunner, cookie_script
from bluegreen.runners.systemd import SystemdRunner
from bluegreen.state import HostState, write_state_script

MARKER = "@@bg-0123456789abcdef"


def builders(cfg: Config, *, root: str, upstream_file: str, pid_file: str, version: str,
             ok: str = "1.2.3") -> dict[str, str]:
    """name -> script. ``version`` reaches the builders that quote it; those that
    validate versions (safe_token) get ``ok``."""
    cfg = dataclasses.replace(cfg, app=dataclasses.replace(cfg.app, root=root),
                              nginx=dataclasses.replace(cfg.nginx, upstream_file=upstream_file,
                                                        pid_file=pid_file))
    paths = Layout(root)
    state = HostState(live="blue", versions={"blue": version, "green": None},
                      previous=version)
    journal = Journal(cast(Host, None), paths, f"deploy {version}")
    journal.record("switch", "ok", version=version, slot="blue")
    holder = {"user": version, "controller": version, "pid": 1, "command": f"bg {version}"}
    command = CommandRunner(paths, "bin/server", 1.0)
    alive = command.alive_script("blue")
    scripts = {
        "upstream.abort": upstream.abort_script(cfg),
        "upstream.stage": upstream.stage_script(cfg, f"# {version}\n"),
        "upstream.commit": upstream.commit_script(cfg),
        "upstream.discard_backup": upstream.discard_backup_script(cfg),
        "upstream.discard_staged": upstream.discard_staged_script(cfg),
        # drain.master_discovery_script and drain.reload_script: inside upstream.commit
        "drain.workers": drain.drain_noted_script([12, 13], 0.2, accepting_only=True),
        "drain.port": drain.drain_noted_script([], 0.2, port=4001),
        "drain.none": drain.drain_noted_script([], 0.2),
        "retire.pids": retire.retire_drain_script([12], 0.2, port=4001, grace=0.1,
                                                  stop=retire.stop_while_alive(alive, "true")),
        "retire.found": retire.retire_drain_script(None, 0.2, port=4001, grace=0.1,
                                                   stop="true",
                                                   master=drain.master_discovery_script(cfg)),
        "check": check.host_script(cfg, MARKER),  # with listeners.script
        "observe": observe_script(paths, MARKER, upstream_file=upstream_file,
                                  backup_file=upstream_file + ".bak",
                                  alive_scripts={"blue": alive}, version=ok,
                                  nginx_test="nginx -t",
                                  leftover_scripts={"blue": leftover_script(
                                      alive, paths.pid("blue"), 4001, root, "blue")}),
        "hooks.command": hooks.command_script({"BG_APP": version}, "echo hi", paths.slot("blue")),
        "teardown.nginx": teardown.nginx_script(cfg, f"# {version}\n"),
        "state.write": write_state_script(paths, state),
        "state.lock": lock_script(paths, holder),
        "state.journal": journal.script(),
        "stop_pid": stop_pid_script(paths.pid("blue"), 0.2),
        "cookie": cookie_script(paths),
        "releases.layout": releases.layout_script(paths),
        "releases.probe": releases.probe_script(paths, ok),
        "releases.extract": releases.extract_script(paths, ok, "ab" * 32),
        "releases.receive": releases.receive_script(paths, ok),
        "releases.require": releases.require_script(paths, ok),
        "releases.prune": releases.prune_script(paths, 3, [ok, "1.2.4"]),
        "releases.setup": releases.setup_script(
            paths, upstream_file=upstream_file, initial_upstream=f"# {version}\n",
            initial_state=state.to_json().decode(), runner_setup="true"),
        "nginx.setup_lb": releases.lb_setup_script(upstream_file, f"# {version}\n"),
    }
    assert nginx.stage_script is upstream.stage_script  # one builder, two names
    for runner in (command, ElixirRunner(paths, cfg.app), SystemdRunner(paths, cfg.app)):
        scripts[f"{runner.name}.start"] = runner.start_script("blue", 4001, version)
        scripts[f"{runner.name}.stop"] = runner.stop_script("green")
    return scripts
