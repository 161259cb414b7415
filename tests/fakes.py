"""A fake :class:`~bluegreen.host.Host` for the unit tier: a seam bg owns, faked.

:class:`FakeHost` records every script it is sent (``scripts``; ``bodies`` and
:meth:`FakeHost.sent` leave out the journal entries riding in front) and answers it

1. from the test's own rules (:meth:`FakeHost.on`: a regex or predicate on the script's body
   and a :class:`CommandResult`, an ``(exit, stdout)`` pair or a callable, which may call
   :meth:`FakeHost.emulate` and edit its answer), newest first, else
2. by emulating, in a small model of one host, the scripts bg's builders produce: the lock
   (``mkdir``, takeover, release), the one-round-trip observation (its section marker is
   parsed from the script, as a real shell would echo it), the write-ahead journal, the
   state file, the nginx upstream file with its staged/backup copies, reloads, and slots
   starting and stopping.

The emulation recognises scripts by the builders' own text (``nginx.abort_script``,
``state.release_script``...), so a changed builder shows up here as a failing test, not as
a silently different fake. :meth:`FakeHost.http_transport` returns an
``httpx.MockTransport``: a slot's health answers by port (200 while the model says the slot
runs; :attr:`FakeHost.health` overrides), and the nginx probe answers with the slot the
upstream file named at the last reload in ``X-BG-Slot``.

Nothing here needs root, nginx, sshd or Elixir.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bluegreen import config as bgconfig
from bluegreen import lock, nginx, probe
from bluegreen import state as st
from bluegreen.config import SLOTS, Config
from bluegreen.facts import drain, observe, sections
from bluegreen.facts.observe import Observation
from bluegreen.host import CommandResult, Host
from bluegreen.layout import Layout
from bluegreen.ops.core import Context, StepTiming
from bluegreen.ops.reconcile import served_slot
from bluegreen.runners import runner_for
from bluegreen.runners.base import read_pid
from bluegreen.shell import ScriptExit

Reply = CommandResult | tuple[int, str]  # a tuple is (exit code, stdout)
Answer = Reply | Callable[["FakeHost", str], Reply]
Match = str | re.Pattern[str] | Callable[[str], bool]
HealthAnswer = int | Callable[[httpx.Request], httpx.Response]

_MARKER = re.compile(r"echo '(@@bg-[0-9a-f]+) state'")


@dataclass
class Rule:
    match: Match
    answer: Answer
    times: int | None = None  # None: every time
    hits: int = 0

    def matches(self, script: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if isinstance(self.match, str):
            return re.search(self.match, script) is not None
        if isinstance(self.match, re.Pattern):
            return self.match.search(script) is not None
        return self.match(script)


@dataclass
class Model:
    """What the fake host has: the files and processes bg's scripts look at."""

    state: st.HostState | None = None  # None: no state.json
    upstream: str | None = None
    backup: str | None = None  # "" stands for "there was no upstream file before"
    staged: str | None = None  # tested, waiting for the commit
    links: dict[str, str] = field(default_factory=dict)  # slot -> release (version)
    alive: set[str] = field(default_factory=set)
    releases: dict[str, str] = field(default_factory=dict)  # version -> recorded sha256
    lock: dict[str, Any] | None = None  # holder.json of the lock, None when free
    claims: set[str] = field(default_factory=set)  # takeover claims made in the lock dir
    serving: str | None = None  # the slot nginx sends traffic to (as of the last reload)
    reloads: int = 0
    journal: list[dict[str, Any]] = field(default_factory=list)


class FakeHost:
    """A host that answers bg's scripts from rules, then from a model of a host."""

    def __init__(self, name: str, config: Config, *, state: st.HostState | None = None,
                 upstream_slot: str | None = None, alive: Sequence[str] = (),
                 old_workers: Sequence[int] = (101, 102),
                 trace: list[tuple[str, str]] | None = None) -> None:
        self._name = name
        self.config = config
        self.paths = Layout(config.app.root)
        self.files_of = nginx.files(config)
        self.rules: list[Rule] = []
        self.scripts: list[str] = []  # as received
        self.bodies: list[str] = []  # the same without the journal entries in front
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.health: dict[str, HealthAnswer] = {}  # slot -> status or handler (override)
        self.probe: HealthAnswer | None = None  # override of the nginx probe's answer
        self.nginx_test_exit = 0  # what `nginx -t` exits with while staging
        self.old_workers = list(old_workers)
        self.closed = False
        self.trace = trace  # shared by a fleet: (host, script) in the order received
        self.model = Model(state=state, alive=set(alive))
        if state is not None:
            self.model.links = {s: v for s, v in state.versions.items() if v}
            self.model.releases = dict.fromkeys(self.model.links.values(), "0" * 64)
        slot = upstream_slot or (state.live if state else None)
        if slot is not None:
            self.model.upstream = self.render(slot)
            self.model.serving = slot
        self._runner = runner_for(config)
        self._count = 0
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ Host protocol

    @property
    def name(self) -> str:
        return self._name

    @property
    def commands_run(self) -> int:
        return self._count

    def run(self, script: str, *, timeout: float | None = None,
            stdin: Path | None = None) -> CommandResult:
        with self._mutex:
            self._count += 1
            self.scripts.append(script)
            received = re.search(r'mv -f "\$t" (\S+)\)', script)
            if stdin is not None and received:  # receive_script: the release on stdin
                self.files[shlex.split(received.group(1))[0]] = Path(stdin).read_bytes()
                self.modes[shlex.split(received.group(1))[0]] = 0o600
            if self.trace is not None:
                self.trace.append((self._name, script))
            # Written ahead: the journal runs first, whatever follows fails. Rules and
            # sent() look at the rest, so a journaled hook command matches only its hook.
            body = self._journal(script)
            self.bodies.append(body)
            for rule in self.rules:
                if rule.matches(body):
                    rule.hits += 1
                    answer = rule.answer
                    if callable(answer):
                        answer = answer(self, script)
                    return self._tail(_result(script, answer), body)
            return self._tail(self.emulate(script), body)

    def put(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        with self._mutex:
            self._count += 1
            self.files[remote] = Path(local).read_bytes()
            self.modes[remote] = mode

    def read(self, path: str) -> bytes | None:
        with self._mutex:
            self._count += 1
            if path == f"{self.paths.lock}/holder.json":
                return None if self.model.lock is None else json.dumps(self.model.lock).encode()
            if path == self.paths.state:
                return None if self.model.state is None else self.model.state.to_json()
            return self.files.get(path)

    def write_atomic(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        with self._mutex:
            self._count += 1
            self.files[path] = data
            self.modes[path] = mode

    def http_transport(self) -> httpx.BaseTransport:
        return httpx.MockTransport(self._http)

    def http_probe(self, url: str, *, timeout: float,
              headers: Mapping[str, str] | None = None) -> probe.Answer:
        return probe.ViaHttpx(self.http_transport()).http_probe(url, timeout=timeout,
                                                               headers=headers)

    def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ test helpers

    def on(self, match: Match, answer: Answer, *, times: int | None = None) -> Rule:
        """Answer scripts matching ``match`` with ``answer`` (checked before older rules)."""
        rule = Rule(match, answer, times)
        self.rules.insert(0, rule)
        return rule

    def render(self, slot: str) -> str:
        return nginx.render_upstream(self.config, slot=slot, version="x")

    @property
    def upstream_slot(self) -> str | None:
        """The slot the live upstream file sends traffic to."""
        return served_slot(self.config, self.model.upstream)

    def sent(self, pattern: str) -> list[str]:
        """The scripts received (journal entries in front left out) that match ``pattern``,
        a regex; :meth:`sent_text` for a literal."""
        return [s for s in self.bodies if re.search(pattern, s, re.M)]

    def sent_text(self, text: str) -> list[str]:
        return [s for s in self.bodies if text in s]

    def journal_steps(self) -> list[tuple[str, str]]:
        return [(e["step"], e["outcome"]) for e in self.model.journal]

    # ------------------------------------------------------------------ the emulation

    def emulate(self, script: str) -> CommandResult:
        """Answer ``script`` as a host in :attr:`model` would (the default answer)."""
        m, config, paths, files = self.model, self.config, self.paths, self.files_of
        out: list[str] = []

        def done(code: int = 0) -> CommandResult:
            return CommandResult(script, code, "".join(out), "")

        holder_file = f"{paths.lock}/holder.json"
        if f"if mkdir {shlex.quote(paths.lock)} 2>/dev/null" in script:
            if m.lock is not None:
                out.append(json.dumps(m.lock) + "\n")
                return done(ScriptExit.LOCKED)
            m.lock = _printf_arg(script, "> " + shlex.quote(paths.lock) + "/holder.json")
        elif "/taken-" in script and holder_file + ".tmp" in script:
            claim = re.search(r"taken-(\S+?)'? 2>/dev/null", script)
            key = claim.group(1) if claim else "?"
            if key in m.claims or m.lock is None:
                out.append(json.dumps(m.lock or {}) + "\n")
                return done(ScriptExit.LOCKED)
            m.claims.add(key)
            m.lock = _printf_arg(script, "> " + shlex.quote(paths.lock) + "/holder.json.tmp")

        if nginx.abort_script(config) in script:  # undo a switch from its backup
            if m.backup:
                m.upstream = m.backup
            elif m.backup == "":  # there was no upstream file before
                m.upstream = None
            m.backup = m.staged = None

        for slot in SLOTS:
            if read_pid(paths.pid(slot)) + '\nif alive "$pid"; then bg_left=' in script:
                # stop_pid_script
                m.alive.discard(slot)
            link = re.search(r"ln -sfn '?\.\./releases/([^'\s]+)'? '?"
                             + re.escape(paths.slot(slot)) + r"\.tmp", script)
            if link:
                m.links[slot] = link.group(1)
            if "setsid" in script and f"cd {shlex.quote(paths.slot(slot))}\n" in script:
                m.alive.add(slot)
            if script.endswith(self._runner.alive_script(slot)):  # a liveness check alone
                return done(0 if slot in m.alive else 1)

        if nginx.discard_staged_script(config) in script:
            m.staged = None
        if f"{shlex.quote(files.live)}.bg-tmp" in script:  # stage and test (phase one)
            m.staged = _printf_arg_text(script, "> " + shlex.quote(files.staged))
            if self.nginx_test_exit != 0:
                m.staged = None
                out.append("nginx: [emerg] fake test failure\n")
                return done(ScriptExit.NGINX_TEST_FAILED)
        if "the staged upstream file is gone" in script:  # commit (phase two)
            if m.staged is None:
                out.append("the staged upstream file is gone\n")
                return done(1)
            m.backup = m.upstream if m.upstream is not None else ""
            m.upstream, m.staged = m.staged, None
        if "old-workers:" in script:
            out.append("old-workers: " + " ".join(map(str, self.old_workers)) + "\n")
        if config.nginx.reload_command in script and (
                "old-workers:" in script or nginx.abort_script(config) in script):
            m.reloads += 1
            m.serving = served_slot(config, m.upstream)

        state_tmp = "> " + shlex.quote(paths.state + ".tmp")
        if state_tmp in script:
            m.state = st.HostState.from_json(_printf_arg_text(script, state_tmp).encode(),
                                             where="fake")
        if nginx.discard_backup_script(config) in script:
            m.backup = m.staged = None
        if drain.NOTED_TAIL in script:
            out.append(drain.DRAINED + "\n")

        marker = _MARKER.search(script)
        if marker:
            out.append(self._observation(marker.group(1), script))
        if lock.release_script(paths) in script:
            m.lock, m.claims = None, set()
        return done()

    def _observation(self, marker: str, script: str) -> str:
        m = self.model
        release = re.search(r"(?:cat |< )'?" + re.escape(self.paths.releases)
                            + r"/([^/]+)/\.bg-sha256", script)
        env = self.files.get(self.paths.env_file)
        obs = Observation(
            state_raw=m.state.to_json().decode() if m.state is not None else "",
            upstream=m.upstream, backup=m.backup, links=dict(m.links),
            alive={slot: slot in m.alive for slot in SLOTS},
            release_sha=m.releases.get(release.group(1), "") if release else "",
            env_sha=hashlib.sha256(env).hexdigest() if env is not None else "",
            lock=json.dumps(m.lock) + "\n" if m.lock is not None else None)  # holder.json
        asked = [n for n in observe.SECTIONS if sections.header(marker, n) in script]
        return observe.printed(obs, marker, asked)

    def _tail(self, result: CommandResult, body: str) -> CommandResult:
        """Journal entries later in a script (with the lock release, at the end of the
        last step) reach the host only when the script got that far: when it succeeded."""
        if result.ok:
            self._journal(body, anywhere=True)
        return result

    def _journal(self, script: str, *, anywhere: bool = False) -> str:
        """Append the journal entries riding in front of ``script`` (``Journal.script``);
        returns the rest of the script."""
        target = f">> {shlex.quote(self.paths.journal)} 2>/dev/null || true"
        if target not in script or not (anywhere or script.startswith("printf '%s' ")):
            return script
        text = _printf_arg_text(script, target)
        self.model.journal.extend(json.loads(line) for line in text.splitlines() if line)
        return script[script.index(target) + len(target):].lstrip("\n")

    def _http(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        port = url.port or 80
        for slot, slot_port in self.config.slots.items():
            if port == slot_port:
                answer = self.health.get(slot)
                if answer is None:
                    if slot not in self.model.alive:
                        raise httpx.ConnectError("connection refused", request=request)
                    return httpx.Response(200, text="ok")
                return answer(request) if callable(answer) else httpx.Response(answer)
        probes = {urlsplit(u).port or 80 for u in nginx.probe_urls(self.config)}
        if port in probes:
            if callable(self.probe):
                return self.probe(request)
            if isinstance(self.probe, int):
                return httpx.Response(self.probe)
            # What bg's probe server in the upstream file answers (and a site's add_header).
            serving = self.model.serving
            headers = {nginx.APP_HEADER: self.config.app.name}
            if serving:
                headers[nginx.SLOT_HEADER] = serving
                headers[nginx.UPSTREAM_HEADER] = f"127.0.0.1:{self.config.slots[serving]}"
            return httpx.Response(200, headers=headers, text="ok")
        raise httpx.ConnectError(f"nothing listens on port {port}", request=request)


def _result(script: str, answer: CommandResult | tuple[int, str]) -> CommandResult:
    if isinstance(answer, CommandResult):
        return answer
    code, stdout = answer
    return CommandResult(script, code, stdout, "")


def _printf_arg_text(script: str, redirect: str) -> str:
    """The (unquoted) argument of the ``printf '%s' ARG REDIRECT`` in ``script``."""
    end = script.index(redirect)
    start = script.rfind("printf '", 0, end)
    lex = shlex.shlex(script[start:end], posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    tokens = list(lex)
    return tokens[2]


def _printf_arg(script: str, redirect: str) -> dict[str, Any]:
    data = json.loads(_printf_arg_text(script, redirect))
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------- contexts


def make_config(tmp: Path | None = None, *, hosts: Sequence[str] = ("a",),
                **sections: Mapping[str, Any]) -> Config:
    """A parsed config for fake hosts: fast health gate, small timeouts, no real files.

    ``sections`` are merged over the defaults (``health={"deadline": 1}``...)."""
    raw: dict[str, dict[str, Any]] = {
        "app": {"name": "hello", "root": "/srv/hello", "command": "bin/server",
                "stop_timeout": 1},
        "nginx": {"upstream_file": "/etc/nginx/conf.d/hello.bluegreen.conf"},
        # A healthy fake slot passes on the first attempt, which is made whatever the
        # deadline, so a short deadline only shortens the tests of failing gates.
        "health": {"interval": 0.01, "timeout": 0.5, "deadline": 0.15},
        "switch": {"drain_timeout": 1},
        "targets": {"prod": {"hosts": list(hosts)}},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return bgconfig.parse(raw, (tmp or Path("/nonexistent")) / "bluegreen.toml")


@dataclass
class Recorder:
    """A reporter that keeps what it was told (the CLI prints it)."""

    steps: list[StepTiming] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)

    def step_done(self, title: str, seconds: float, ok: bool, note: str) -> None:
        self.steps.append(StepTiming(title, seconds, ok, note))

    def info(self, text: str) -> None:
        self.infos.append(text)


def make_context(config: Config, hosts: Sequence[FakeHost]) -> Context:
    host_list: list[Host] = list(hosts)
    return Context(config=config, target=config.target("prod"), hosts=host_list,
                   reporter=Recorder())


def fleet(config: Config, names: Sequence[str] = ("a",), **kwargs: Any
          ) -> tuple[Context, list[FakeHost]]:
    """A context over fake hosts named ``names``, each built with ``kwargs``."""
    hosts = [FakeHost(n, config, **kwargs) for n in names]
    return make_context(config, hosts), hosts


def deployed(version: str = "1.0.0", slot: str = "blue", *, idle: str | None = None
             ) -> st.HostState:
    """The state after ``version`` went live on ``slot`` (``idle``: the other slot's)."""
    s = st.HostState()
    if idle is not None:
        s = s.switched("green" if slot == "blue" else "blue", idle)
    return s.switched(slot, version)


def make_artifact(tmp: Path, version: str = "2.0.0", app: str = "hello") -> Path:
    """A small valid release tarball named like bg expects."""
    path = tmp / f"{app}-{version}.tar.gz"
    server = tmp / "server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)  # bg refuses a release whose command cannot run
    with tarfile.open(path, "w:gz") as tar:
        tar.add(server, arcname="bin/server")
    return path


def journal_outcomes(host: FakeHost, step: str) -> list[str]:
    return [e["outcome"] for e in host.model.journal if e["step"] == step]
