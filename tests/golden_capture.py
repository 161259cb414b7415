"""Capture the golden outputs: each host script run on a real host with a real nginx.

``unshare --pid --fork --mount-proc python -m tests.golden_capture`` (root: a process
table of its own, so no other process of this machine shows in the outputs) sets up bg
in a temporary root behind a private real nginx (tests/helpers.py's workspace), deploys
the sample app, runs each script family's builders there and writes what they printed
to tests/fixtures/golden/<family>/<case>.json: the config they ran with (its TOML), the
exit code and stdout. The parser tests (tests/test_facts.py) read those files; run this
again after changing what a script prints.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bluegreen import nginx
from bluegreen.config import Config, load
from bluegreen.facts import check, drain, upstream
from bluegreen.facts.observe import observe_script
from bluegreen.layout import Layout
from bluegreen.runners import runner_for
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, make_workspace, serving

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
MARKER = "@@bg-0123456789abcdef"  # the marker every golden output was printed with


def run(script: str) -> tuple[int, str]:
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60,
                       check=False)
    return r.returncode, r.stdout


def save(family: str, case: str, ws: Workspace, script: str) -> str:
    code, stdout = run(script)
    out = GOLDEN / family / f"{case}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": ws.config.read_text(), "exit_code": code,
                               "stdout": stdout}, indent=1) + "\n")
    print(f"{out.relative_to(GOLDEN)}: exit {code}, {len(stdout)} bytes")
    return stdout


def observe(cfg: Config, version: str | None) -> str:
    runner = runner_for(cfg)
    files = nginx.files(cfg)
    return observe_script(Layout(cfg.app.root), MARKER, upstream_file=files.live,
                          backup_file=files.backup, version=version,
                          alive_scripts={s: runner.alive_script(s) for s in cfg.slots},
                          nginx_test=cfg.nginx.test_command)


def capture(tmp: Path) -> None:
    ws = make_workspace(tmp)
    cfg = load(ws.config)
    save("observe", "before-setup", ws, observe(cfg, None))
    save("check", "before-setup", ws, check.host_script(cfg, MARKER))
    with serving(ws):
        ws.bg("deploy", str(build_sample(tmp / "art", "1.0.0")))
        save("observe", "deployed", ws, observe(cfg, "1.0.0"))
        save("check", "deployed", ws, check.host_script(cfg, MARKER))
        green = nginx.render_upstream(cfg, slot="green", version="2.0.0")
        save("upstream", "stage", ws, upstream.stage_script(cfg, green))
        run(upstream.discard_staged_script(cfg))
        save("upstream", "stage-rejected", ws,
             upstream.stage_script(cfg, "upstream broken {\n"))
        reloaded = save("drain", "reload", ws, drain.reload_script(cfg))
        old = drain.parse_old_workers(reloaded)
        save("drain", "drained", ws, drain.drain_noted_script(old, 5.0))
        with socket.create_connection(("127.0.0.1", ws.ports["blue"])):
            save("drain", "port-timeout", ws,
                 drain.drain_noted_script([], 0.3, port=ws.ports["blue"]))
    save("check", "nginx-stopped", ws, check.host_script(cfg, MARKER))


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bg-golden-") as tmp:
        capture(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

