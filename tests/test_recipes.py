"""The README's recipes for releases that are not Elixir, run as written (issue 18, item 4).

Each build block is read from README.md (the fenced block after its ``<!-- recipe: NAME``
marker) and run in a project directory, offline: the Python venv installs a wheel of a tiny
datasette-like package built here (``python -m tinyweb serve DB --host H --port P``), the
Node build installs a local ``file:`` dependency. The releases are deployed through a real
nginx. Also here: a release without the command's executable is refused before upload, and
a start that finds none is no health failure.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen import artifact
from bluegreen.config import parse as parse_config
from bluegreen.errors import ArtifactError, ExitCode
from bluegreen.runners.base import release_executable
from bluegreen.sandbox.sample import build_sample
from tests.helpers import Workspace, make_workspace, need, serving

README = Path(__file__).resolve().parent.parent / "README.md"

TINYWEB = '''"""A datasette-like command line: python -m tinyweb serve DB --host H --port P."""
import argparse, json, os, signal, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/-/versions.json":
            body = json.dumps({"tinyweb": "0.1"}).encode()
        else:
            body = "tinyweb {} slot={}\\n".format(os.environ.get("BG_VERSION"),
                                                os.environ.get("BG_SLOT")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(prog="tinyweb")
    serve = parser.add_subparsers(dest="command", required=True).add_parser("serve")
    serve.add_argument("db")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("tinyweb serving", args.db, "on", args.host, args.port, flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
'''


def recipe(name: str) -> str:
    """The fenced block after ``<!-- recipe: NAME`` in the README."""
    m = re.search(rf"<!-- recipe: {re.escape(name)}\b[^\n]*\n```\w*\n(.*?)```", README.read_text(),
                  re.S)
    assert m, f"README has no recipe {name!r}"
    return m.group(1)


def build_wheel(out: Path) -> Path:
    """tinyweb-0.1-py3-none-any.whl, written by hand (no build backend, no network)."""
    files = {
        "tinyweb/__init__.py": b"",
        "tinyweb/__main__.py": TINYWEB.encode(),
        "tinyweb-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinyweb\nVersion: 0.1\n",
        "tinyweb-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: bg-tests\n"
                                       b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        "tinyweb-0.1.dist-info/entry_points.txt": b"[console_scripts]\n"
                                                  b"tinyweb = tinyweb.__main__:main\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinyweb-0.1.dist-info/RECORD,,")
    files["tinyweb-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tinyweb-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


def run_recipe(script: str, cwd: Path, **env: str) -> None:
    proc = subprocess.run(["sh", "-e", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def config_workspace(tmp_path: Path, command: str, health_path: str) -> Iterator[Workspace]:
    need(os.path.exists("/usr/sbin/nginx"), "nginx is not installed")
    ws = make_workspace(tmp_path / "ws", app_section={"runner": "command", "command": command},
                        health={"path": health_path, "interval": 0.1, "timeout": 1.0,
                                "deadline": 20.0})
    with serving(ws):
        yield ws


def as_release(built: Path, out: Path, version: str) -> Path:
    """The recipe's myapp-1.0.0.tar.gz, named for the workspace's app (hello)."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(built, out / f"hello-{version}.tar.gz"))


# ----------------------------------------------------------------------------- Python


@pytest.fixture
def python_release(tmp_path: Path) -> Path:
    """The README's Python recipe, run with Debian's python3 first on PATH."""
    need(os.path.exists("/usr/bin/python3"), "no /usr/bin/python3 (Debian's python3)")
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "data.db").write_bytes(b"")
    wheel = build_wheel(tmp_path / "wheels")
    (project / "requirements.txt").write_text(f"{wheel}\n")
    script = recipe("python-build").replace("datasette", "tinyweb")
    run_recipe(script, project, PATH="/usr/bin:/bin", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return project / "myapp-1.0.0.tar.gz"


@pytest.mark.nginx
def test_python_venv_recipe_deploys_through_nginx(python_release: Path, tmp_path: Path
                                                   ) -> None:
    with tarfile.open(python_release) as tar:
        python3 = tar.getmember("./venv/bin/python3")
        assert python3.issym() and python3.linkname == "/usr/bin/python3"  # issue 18's shape
        script = tar.extractfile("./venv/bin/tinyweb")
        assert script is not None
        assert str(tmp_path) in script.readline().decode()  # why the recipe uses -m
    config = recipe("python-config")
    command = re.search(r'^command = "(.*)"$', config, re.M)
    path = re.search(r'^path = "(.*)"$', config, re.M)
    assert command and path
    for ws in config_workspace(tmp_path, command.group(1), path.group(1)):
        ws.bg("deploy", str(as_release(python_release, tmp_path / "arts", "1.0.0")))
        assert ws.get().text == "tinyweb 1.0.0 slot=blue\n"
        ws.bg("deploy", str(as_release(python_release, tmp_path / "arts", "2.0.0")))
        assert ws.get().text == "tinyweb 2.0.0 slot=green\n"
        link = ws.root / "releases" / "1.0.0" / "venv" / "bin" / "python3"
        assert link.is_symlink() and os.readlink(link) == "/usr/bin/python3"
        assert ws.status()["ok"]


# ----------------------------------------------------------------------------- Node

SERVER_JS = """const http = require("http");
const greeting = require("greeting");
http.createServer((req, res) => {
  res.end(req.url === "/health" ? "ok\\n"
    : `${greeting} ${process.env.BG_VERSION} slot=${process.env.BG_SLOT}\\n`);
}).listen(Number(process.env.PORT), process.env.BG_BIND);
process.on("SIGTERM", () => process.exit(0));
"""


@pytest.mark.nginx
def test_node_recipe_deploys_through_nginx(tmp_path: Path) -> None:
    need(shutil.which("node") is not None and shutil.which("npm") is not None, "no node/npm")
    project = tmp_path / "project"
    lib = project / "lib" / "greeting"
    lib.mkdir(parents=True)
    (lib / "package.json").write_text(json.dumps(
        {"name": "greeting", "version": "1.0.0", "main": "index.js",
         "bin": {"greet": "index.js"}}))
    (lib / "index.js").write_text('module.exports = "hello from node";\n')
    (project / "package.json").write_text(json.dumps(
        {"name": "myapp", "version": "1.0.0", "private": True,
         "dependencies": {"greeting": "file:lib/greeting"}}))
    (project / "server.js").write_text(SERVER_JS)
    offline = " --offline --no-audit --no-fund"
    run_recipe("npm install --package-lock-only" + offline, project)
    run_recipe(recipe("node-build").replace("npm ci --omit=dev", "npm ci --omit=dev" + offline),
               project)
    built = project / "myapp-1.0.0.tar.gz"
    with tarfile.open(built) as tar:
        assert tar.getmember("./node_modules/greeting").issym()  # npm's link, inside
    for ws in config_workspace(tmp_path, "./start.sh", "/health"):
        ws.bg("deploy", str(as_release(built, tmp_path / "arts", "1.0.0")))
        assert ws.get().text == "hello from node 1.0.0 slot=blue\n"
        ws.bg("deploy", str(as_release(built, tmp_path / "arts", "2.0.0")))
        assert ws.get().text == "hello from node 2.0.0 slot=green\n"


# ----------------------------------------------------------------------------- any $PORT app


def _tar(path: Path, files: dict[str, tuple[bytes, int]], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.nginx
def test_any_port_app_from_the_readme_deploys(tmp_path: Path) -> None:
    command = 'python3 -m http.server "$PORT" --bind "$BG_BIND"'
    assert f"`command = '{command}'`" in README.read_text()
    files = {"index.html": (b"static 1\n", 0o644), "health": (b"ok\n", 0o644)}
    for ws in config_workspace(tmp_path, command, "/health"):
        ws.bg("deploy", str(_tar(tmp_path / "arts" / "hello-1.0.0.tar.gz", files)))
        assert ws.get().text == "static 1\n"


# ----------------------------------------------------------------------------- the command's file


@pytest.fixture
def start_sh(tmp_path: Path) -> Iterator[Workspace]:
    yield from config_workspace(tmp_path, "./start.sh", "/health")


def _refused_before_upload(ws: Workspace, art: Path, *words: str) -> str:
    proc = ws.bg("deploy", str(art), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.USAGE, out
    for w in words:
        assert w in out, out
    assert "Traceback" not in out and "health" not in out.lower(), out
    assert list((ws.root / "releases").iterdir()) == []
    assert not (ws.root / "bg" / "journal.jsonl").exists()  # no operation even started
    return out


@pytest.mark.nginx
def test_a_release_without_the_command_is_refused_before_upload(start_sh: Workspace,
                                                                tmp_path: Path) -> None:
    ws, arts = start_sh, tmp_path / "arts"
    _refused_before_upload(ws, _tar(arts / "hello-1.0.0.tar.gz", {"app.py": (b"", 0o644)}),
                           "has no ./start.sh", "[app] command = './start.sh'")
    nested = _tar(arts / "hello-2.0.0.tar.gz", {"start.sh": (b"#!/bin/sh\n", 0o755)},
                  prefix="build/")
    _refused_before_upload(ws, nested, "has no ./start.sh", "build/start.sh",
                           "tar -C build -czf")
    _refused_before_upload(ws, _tar(arts / "hello-3.0.0.tar.gz",
                                    {"start.sh": (b"#!/bin/sh\n", 0o644)}),
                           "./start.sh is not executable (mode 644)", "chmod +x")


@pytest.mark.unit
def test_what_a_release_must_hold_follows_links_and_runners(tmp_path: Path) -> None:
    def cfg(**app: str) -> tuple[str, str] | None:
        raw = {"app": {"name": "hello", "root": "/srv/hello", **app},
               "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.conf"}}
        return release_executable(parse_config(raw, tmp_path / "bluegreen.toml").app)

    assert cfg(command="python3 app.py") is None  # found on PATH on the host
    need_venv = cfg(command='venv/bin/python -m datasette serve --port "$PORT"')
    assert need_venv is not None and need_venv[0] == "venv/bin/python"
    elixir = cfg(runner="elixir", release_name="shop")
    assert elixir is not None and elixir[0] == "bin/shop"

    def tar_with(*members: tarfile.TarInfo) -> Path:
        path = tmp_path / "hello-1.0.0.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
        return path

    def member(name: str, mode: int = 0o755, link: str = "") -> tarfile.TarInfo:
        m = tarfile.TarInfo(name)
        m.mode = mode
        if link:
            m.type, m.linkname = tarfile.SYMTYPE, link
        else:
            m.size = 1
        return m

    # venv/bin/python -> python3 -> /usr/bin/python3: outside, so it cannot be checked here
    venv = tar_with(member("venv/bin/python", link="python3"),
                    member("venv/bin/python3", link="/usr/bin/python3"))
    assert artifact.check_members(venv, need=need_venv) == 2
    # bin/shop -> ../lib/shop inside the release: followed, found executable
    inside = tar_with(member("lib/shop"), member("bin/shop", link="../lib/shop"))
    assert artifact.check_members(inside, need=elixir) == 2
    with pytest.raises(ArtifactError, match="has no bin/shop"):
        artifact.check_members(tar_with(member("bin/other")), need=elixir)
    with pytest.raises(ArtifactError, match="not executable"):
        artifact.check_members(tar_with(member("lib/shop", 0o644),
                                        member("bin/shop", link="../lib/shop")), need=elixir)


@pytest.mark.nginx
def test_a_start_without_the_command_is_no_health_failure(start_sh: Workspace,
                                                          tmp_path: Path) -> None:
    """The release is already on the host, so nothing is uploaded or checked before: the
    start itself names the missing file (and shows no older run's log)."""
    ws, arts = start_sh, tmp_path / "arts"
    files = {"start.sh": (b"#!/bin/sh\necho old run says hi\nexec python3 -m http.server"
                          b' "$PORT" --bind "$BG_BIND"\n', 0o755), "health": (b"ok\n", 0o644)}
    ws.bg("deploy", str(_tar(arts / "hello-1.0.0.tar.gz", files)))
    ws.bg("deploy", str(_tar(arts / "hello-2.0.0.tar.gz", files)))
    ws.config.write_text(ws.config.read_text().replace('"./start.sh"', '"./missing.sh"'))
    proc = ws.bg("rollback", check=False)  # 1.0.0 again, in blue, with the new command
    out = proc.stdout + proc.stderr
    assert proc.returncode != ExitCode.HEALTH and proc.returncode != 0, out
    assert "release 1.0.0 has no executable ./missing.sh" in out, out
    assert "old run says hi" not in out and "never became healthy" not in out, out
    assert ws.get().status_code == 200  # 2.0.0 in green still serves
    assert ws.status()["hosts"][0]["version"] == "2.0.0"


@pytest.mark.nginx
def test_a_failed_gate_shows_this_starts_log_only(tmp_path: Path) -> None:
    need(os.path.exists("/usr/sbin/nginx"), "nginx is not installed")
    ws = make_workspace(tmp_path, health={"interval": 0.1, "timeout": 1.0, "deadline": 3.0})
    with serving(ws):
        arts = tmp_path / "arts"
        for version in ("1.0.0", "2.0.0"):
            ws.bg("deploy", str(build_sample(arts, version)))
        proc = ws.bg("deploy", str(build_sample(arts, "3.0.0", crash=True)), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == ExitCode.HEALTH, out
        assert "crashing on purpose" in out
        assert "sample 1.0.0 listening" not in out, out  # blue's earlier run
        assert "sample 1.0.0 listening" in (ws.root / "logs" / "blue.log").read_text()
