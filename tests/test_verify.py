"""The verification window and its automatic undo, through a real nginx on this machine.

A release whose /health answers 200 while 30% of its ``GET /`` answer 500 passes the health
gate, takes traffic, and must be switched back by bg within the window with the figures
journaled (exit 10); a good release must pass its window under load without a false alarm.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from bluegreen import accesslog
from bluegreen.errors import ExitCode
from bluegreen.loadclient import Load
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, make_workspace, serving, stop_workspace

ROOT = Path(__file__).resolve().parent.parent


def _workspace(tmp_path: Path, window: float = 4.0, **verify: object) -> Workspace:
    section = {"window": window, "min_requests": 20, "max_error_rate": 0.05, "interval": 0.5,
               **verify}
    ws = make_workspace(tmp_path, extra={"verify": section})
    ws.bg("setup")
    ws.nginx.start()
    return ws


@pytest.fixture
def ws(tmp_path: Path) -> object:
    ws = _workspace(tmp_path)
    try:
        yield ws
    finally:
        stop_workspace(ws)


def _journal(ws: Workspace) -> list[dict[str, object]]:
    lines = (ws.root / "bg" / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _deploy_under_load(ws: Workspace, artifact: Path, *args: str
                       ) -> tuple[int, str, Load, float]:
    with Load([("127.0.0.1", ws.listen_port)], clients={"close": 3, "keepalive": 2},
              rate=60) as load:
        time.sleep(0.5)
        proc = ws.bg("--json", "deploy", str(artifact), *args, check=False, timeout=120)
        returned = time.monotonic()
        time.sleep(1.0)
    return proc.returncode, proc.stdout, load, returned


@pytest.mark.nginx
def test_failing_release_is_undone_within_the_window(ws: Workspace, tmp_path: Path) -> None:
    ws.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")), "--no-verify")
    bad = build_sample(tmp_path / "b", "2.0.0", fail_share=0.3)
    started = time.monotonic()
    code, out, load, returned = _deploy_under_load(ws, bad)
    assert code == ExitCode.VERIFY, out
    assert returned - started < 4.0 + 8.0  # the verdict comes within the window
    error = json.loads(out)["error"]
    assert "verification failed" in error["message"] and "went back to blue" in error["message"]
    figures = error["figures"]
    assert figures["requests"] >= 20 and 0.2 < figures["rate"] < 0.4
    # nginx serves the old release again, and the bad slot is stopped, its log kept.
    status = ws.status()["hosts"][0]
    assert (status["live"], status["version"]) == ("blue", "1.0.0")
    assert "1.0.0" in ws.get().text
    assert not any("2.0.0" in ws.get().text for _ in range(10))
    assert (ws.root / "logs" / "green.log").exists()
    assert ws.bg("logs", "--slot", "green").returncode == 0
    entries = [e for e in _journal(ws) if e.get("step") == "verify"]
    assert entries and entries[-1]["outcome"] == "failed" and entries[-1]["requests"]
    # Not one failed request once bg returned; every failure was a 500 from the bad release.
    after = [r for rows in load.records.values() for r in rows if r[0] > returned]
    assert after and all(200 <= r[2] < 300 for r in after)
    codes = {r[2] for rows in load.records.values() for r in rows if not 200 <= r[2] < 300}
    assert codes <= {500}


@pytest.mark.nginx
def test_good_release_passes_its_window_under_load(ws: Workspace, tmp_path: Path) -> None:
    ws.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")), "--no-verify")
    code, out, load, _ = _deploy_under_load(ws, build_sample(tmp_path / "b", "2.0.0"))
    assert code == 0, out
    result = json.loads(out)["result"]
    assert any(w.startswith("verified for 4s") for w in result["warnings"]), result
    entry = [e for e in _journal(ws) if e.get("step") == "verify"][-1]
    assert entry["outcome"] == "ok" and int(str(entry["requests"])) >= 20
    assert entry["errors"] == 0
    assert load.counts()[1] == 0
    assert ws.status()["hosts"][0]["version"] == "2.0.0"


@pytest.mark.nginx
def test_no_verify_skips_the_window(ws: Workspace, tmp_path: Path) -> None:
    ws.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")))
    proc = ws.bg("deploy", str(build_sample(tmp_path / "b", "2.0.0", fail_share=0.5)),
                 "--no-verify")
    assert "verify" not in proc.stderr
    assert ws.status()["hosts"][0]["version"] == "2.0.0"


@pytest.mark.nginx
def test_failing_probe_path_undoes_without_traffic(tmp_path: Path) -> None:
    """No real traffic at all: a `paths` probe through nginx decides."""
    ws = _workspace(tmp_path, window=3.0, paths=["/health", "/"])
    try:
        ws.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")))
        # Every other GET / fails (probe_url's own GET / confirms the switch on a retry).
        proc = ws.bg("deploy", str(build_sample(tmp_path / "b", "2.0.0", fail_share=0.5)),
                     check=False)
        assert proc.returncode == ExitCode.VERIFY, proc.stderr
        assert "probe / through nginx" in proc.stderr and "HTTP 500" in proc.stderr
        assert ws.status()["hosts"][0]["version"] == "1.0.0"
    finally:
        stop_workspace(ws)


@pytest.mark.nginx
def test_site_without_the_log_line_is_judged_by_probes(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, extra={"verify": {"window": 2.0, "interval": 0.5}})
    site = ws.nginx.prefix / "sites" / "hello.conf"
    site.write_text(re.sub(r"\n\s*access_log [^\n]*", "", site.read_text()))
    with serving(ws):
        ws.bg("deploy", str(build_sample(tmp_path / "a", "1.0.0")))
        check = ws.bg("check", check=False)
        assert "access log" in check.stdout and "probes only" in check.stdout
        proc = ws.bg("deploy", str(build_sample(tmp_path / "b", "2.0.0")))
        assert "does not write" in proc.stderr and "judges by probes" in proc.stderr
        # Progress as it goes, and the verdict's figures: probes only, nothing counted.
        assert re.search(r"verify +\d+s/2s: 0 requests, 0 failed \(0.0%\), \d+/\d+ probes ok",
                         proc.stderr), proc.stderr
        assert "judged by probes: fewer than 50 requests" in proc.stderr


# ----------------------------------------------------------------------------- units


@pytest.mark.unit
def test_count_script_counts_complete_lines_of_the_new_slot(tmp_path: Path) -> None:
    """The awk counter, run by the real /bin/sh: new slot only, 5xx and 499, a retry to
    the new slot, a line nginx is still writing left for the next read."""
    import subprocess

    log = tmp_path / "access.log"
    rows = [
        ("200", "127.0.0.1:4001", "200"),  # the old slot: not the window's
        ("200", "127.0.0.1:4002", "200"),
        ("500", "127.0.0.1:4002", "500"),
        ("502", "127.0.0.1:4002", "502"),
        ("499", "127.0.0.1:4002", "-"),
        ("200", "127.0.0.1:4001, 127.0.0.1:4002", "502, 200"),
        ("502", "hello_live", "-"),  # nothing answered: counts with mode all
    ]
    text = "".join(f"1.0\t{s}\t{a}\t{u}\t10.0.0.1\tGET / HTTP/1.1\n" for s, a, u in rows)
    partial = "2.0\t500\t127.0.0.1:4002"
    log.write_text("x" * 7 + text + partial)

    def run(offset: int, mode: str = "all") -> accesslog.Count:
        script = accesslog.count_script(str(log), offset, new=["127.0.0.1:4002"],
                                        old=["127.0.0.1:4001"], mode=mode)
        out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                             check=True).stdout
        count = accesslog.parse_count(out)
        assert count is not None, out
        return count

    count = run(7)
    assert (count.requests, count.server_errors, count.unanswered) == (6, 3, 1)
    assert count.offset == 7 + len(text.encode())
    assert run(7, mode="canary").requests == 5
    with log.open("a") as f:
        f.write("\t-\t-\t-\n")
    assert run(count.offset).server_errors == 1  # the finished line, read once
    assert run(10**9).requests == 7  # a file truncated since: read from its start
    missing = subprocess.run(["/bin/sh", "-c", accesslog.count_script(
        str(tmp_path / "gone"), 0, new=[], old=[])], capture_output=True, text=True).stdout
    assert accesslog.parse_count(missing) is None


@pytest.mark.unit
def test_upstream_template_and_placeholders_define_the_same_format() -> None:
    from bluegreen.config import parse
    from bluegreen.nginx import render_upstream
    from bluegreen.scaffold import render_site

    config = parse({"app": {"name": "hello-web", "root": "/srv/hw", "command": "x"},
                    "nginx": {"upstream_file": "/etc/nginx/conf.d/hw.conf"}}, Path("b.toml"))
    text = render_upstream(config, slot="blue", version="1")
    assert accesslog.format_directive("hello-web").strip() in text.splitlines()
    provision = (ROOT / "nginx" / "provision.sh").read_text()
    assert accesslog.FORMAT in provision
    # The site template's {{ app }} is already the nginx identifier (render_site fills it in)
    site = render_site("hello-web", root="/srv/hw")
    assert accesslog.site_line("hello-web", accesslog.log_path("/srv/hw")) in site


@pytest.mark.unit
def test_verify_step_is_planned_only_with_a_window_and_something_to_go_back_to() -> None:
    from bluegreen.config import Config, parse
    from bluegreen.ops.plan import HostFacts, Verify, plan_deploy
    from bluegreen.state import HostState

    base = {"app": {"name": "hello", "root": "/srv/h", "command": "x"},
            "nginx": {"upstream_file": "/x/h.conf"}}
    on = parse({**base, "verify": {"window": 30}}, Path("b.toml"))
    off = parse(base, Path("b.toml"))
    live = HostState(live="blue", versions={"blue": "1", "green": None}, previous=None)
    empty = HostState(live=None, versions={"blue": None, "green": None}, previous=None)

    def verify_steps(config: Config, state: HostState, verify: bool = True) -> list[Verify]:
        plan = plan_deploy(config, {"h": HostFacts(state, {})}, "2", sha256="s", retire=True,
                           boot_batch=1, verify=verify)
        return [s for s in plan.steps if isinstance(s, Verify)]

    steps = verify_steps(on, live)
    assert len(steps) == 1 and steps[0].old == {"h": "blue"} and steps[0].slots == {"h": "green"}
    assert "verify for 30s" in steps[0].describe(on)
    assert verify_steps(off, live) == []
    assert verify_steps(on, live, verify=False) == []
    assert verify_steps(on, empty) == []


@pytest.mark.unit
@pytest.mark.parametrize(("key", "value", "says"), [
    ("window", -1, "verify.window must be a number >= 0"),
    ("max_error_rate", 1.5, "verify.max_error_rate must be a share between 0 and 1"),
    ("min_requests", -3, "verify.min_requests must be an integer >= 0"),
    ("paths", ["health"], "verify.paths must be a list of paths starting with /"),
    ("sticky", "yes", "verify.sticky must be true or false"),
    ("windw", 3, "unknown key verify.windw"),
])
def test_verify_config_errors_name_the_key(key: str, value: object, says: str) -> None:
    from bluegreen.config import parse
    from bluegreen.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(says)):
        parse({"app": {"name": "h", "root": "/srv/h", "command": "x"},
               "nginx": {"upstream_file": "/x/h.conf"}, "verify": {key: value}}, Path("b.toml"))


@pytest.mark.unit
def test_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| `{code.name}` \|", readme, re.M), code.name


@pytest.mark.unit
@pytest.mark.parametrize(("dump", "exists", "uses"), [
    ('echo "    access_log {log} hello_bg;"', False, True),
    ('echo "# access_log {log} hello_bg;"', True, False),  # a comment is no directive
    ("false", True, True),  # nginx -T refused (sudo allows -t only): the file tells
    ("false", False, False),
    (None, True, True),
])
def test_begin_script_finds_the_sites_access_log(tmp_path: Path, dump: str | None,
                                                 exists: bool, uses: bool) -> None:
    import subprocess

    log = tmp_path / "nginx-access.log"
    if exists:
        log.write_text("x" * 10)
    script = accesslog.begin_script(str(log), dump.format(log=log) if dump else None)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert accesslog.parse_begin(out) == accesslog.Begin(uses, 10 if exists else 0)
