"""Every --json output is one envelope that validates against the README's schema, with the
documented exit code repeated in it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bluegreen.errors import ExitCode
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace
from tests.operator_fixtures import bg, envelope, envelope_problems, stock  # noqa: F401


@pytest.mark.unit
def test_the_checker_rejects_what_the_schema_forbids() -> None:
    v = {"schema": 1}
    assert envelope_problems({**v, "ok": True, "command": "x", "result": None}) == []
    assert envelope_problems({"ok": True, "command": "x", "result": None})  # no schema
    assert envelope_problems({**v, "ok": True, "command": "x"})  # no result
    assert envelope_problems({**v, "ok": "yes", "command": "x", "result": {}})
    assert envelope_problems({**v, "ok": False, "command": "x", "error": {"message": "m"}})
    assert envelope_problems({**v, "ok": True, "command": "x", "result": {}, "extra": 1})
    good_error = {"message": "m", "hint": "", "detail": "", "exit_code": 2, "kind": "E"}
    assert envelope_problems({**v, "ok": False, "command": "x", "error": good_error}) == []
    assert envelope_problems({**v, "ok": False, "command": "x",
                              "error": {**good_error, "phase": "health"}})  # hosts missing


@pytest.mark.unit
def test_the_readme_documents_the_envelope() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### JSON output", 1)[1].split("\n### ", 1)[0]
    keys = set(re.findall(r"^\| `([a-z_.]+)`", section, re.M))
    assert {"schema", "ok", "command", "result", "error.message", "error.hint", "error.exit_code",
            "error.detail", "error.kind"} <= keys


def run(ws: Workspace, *args: str, code: int = 0) -> dict[str, object]:
    proc = ws.bg(*args, check=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    doc = envelope(proc)
    assert doc["ok"] is (code == 0)
    if code:
        error = doc["error"]
        assert isinstance(error, dict) and error["exit_code"] == code
    assert proc.stdout.count('"command"') >= 1 and json.loads(proc.stdout) == doc
    return doc


def test_every_command_with_json(stock: Workspace, tmp_path: Path) -> None:  # noqa: F811
    ws = stock
    ws.config.write_text(ws.config.read_text().replace("deadline = 15.0", "deadline = 2.0"))
    v1 = str(build_sample(tmp_path / "art", "1.0.0"))
    v2 = str(build_sample(tmp_path / "art", "2.0.0"))
    bad = str(build_sample(tmp_path / "art", "3.0.0", health_status=500))

    # Before the command and after it, the same envelope.
    assert run(ws, "--json", "setup")["command"] == "setup"
    assert run(ws, "setup", "--json")["command"] == "setup"
    status = run(ws, "status", "--json")
    assert status["command"] == "status" and isinstance(status["result"], dict)
    plan = run(ws, "deploy", v1, "--dry-run", "--json")["result"]
    assert isinstance(plan, dict) and plan["dry_run"] is True
    deployed = run(ws, "deploy", v1, "--json")["result"]
    assert isinstance(deployed, dict) and deployed["version"] == "1.0.0"
    run(ws, "deploy", v2, "--keep-old", "--json")
    assert run(ws, "switch", "--json")["command"] == "switch"
    run(ws, "rollback", "--json")
    assert run(ws, "history", "--json", "-n", "3")["command"] == "history"
    assert run(ws, "lock", "status", "--json")["command"] == "lock status"
    assert run(ws, "lock", "release", "--json")["command"] == "lock release"
    assert run(ws, "check", "--json")["command"] == "check"
    assert run(ws, "logs", "--json", "-n", "1")["command"] == "logs"

    # Failures: the error object, its exit code, a phase with every host's outcome.
    health = run(ws, "deploy", bad, "--json", code=ExitCode.HEALTH)
    assert "3.0.0" in str(health["error"])
    run(ws, "migrate", "--json", code=ExitCode.USAGE)  # app.migrate is not configured
    run(ws, "switch", "--to", "purple", "--json", code=ExitCode.USAGE)
    run(ws, "status", "--hosts", "nothing-*", "--json", code=ExitCode.USAGE)
    (ws.root / "bg" / "lock").mkdir()
    (ws.root / "bg" / "lock" / "holder.json").write_text(json.dumps(
        {"user": "ann", "controller": "elsewhere.example", "pid": 1, "command": "deploy",
         "time": "2026-01-01T00:00:00+00:00"}))
    locked = run(ws, "deploy", v2, "--json", code=ExitCode.LOCKED)
    assert "ann" in str(locked["error"])
    check = run(ws, "check", "--json", code=ExitCode.USAGE)
    assert isinstance(check["result"], dict)  # a command that ran and found problems
    (ws.root / "bg" / "lock" / "holder.json").unlink()
    (ws.root / "bg" / "lock").rmdir()
    refused = run(ws, "remove", "--json", code=ExitCode.USAGE)  # the stock site uses it
    assert "traffic is live" in str(refused["error"])
    assert run(ws, "remove", "--dry-run", "--json")["command"] == "remove"
    assert run(ws, "--json", "remove", "--force")["command"] == "remove"


@pytest.mark.nginx  # starts processes: not in the quick tier
def test_init_and_config_errors_with_json(tmp_path: Path) -> None:
    doc = envelope(bg("init", "--json", "--app", "shop", cwd=tmp_path))
    assert doc["ok"] is True and "bluegreen.toml" in doc["result"]["files"]
    again = bg("--json", "init", cwd=tmp_path)
    assert again.returncode == ExitCode.USAGE
    assert envelope(again)["error"]["hint"] == "pass --force to overwrite"
    missing = bg("--json", "status", cwd=tmp_path / "..")
    assert missing.returncode == ExitCode.USAGE and envelope(missing)["ok"] is False
    usage = bg("--json", "deploy")  # the artifact argument is missing
    assert usage.returncode == ExitCode.USAGE and envelope(usage)["command"] == "deploy"
