"""The rehearsal: deploy A, deploy B, a release refused, rollback, switch, under load.

bg runs as ``sys.executable -m bluegreen`` subprocesses, exactly as a user runs it, so the
rehearsal tests the CLI, its exit codes and its output. Everything started here (load
clients, bg, the environment, the app's slots, the temporary directory) is stopped and
removed on every exit, Ctrl-C and SIGTERM included, unless ``keep``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import ExitCode
from bluegreen.loadclient import Connection, Load, window
from bluegreen.rehearse import apps, report
from bluegreen.rehearse.cleanup import kill_under, sigterm_as_interrupt
from bluegreen.rehearse.envs import Environment, Prepared, RehearsalError
from bluegreen.rehearse.steps import Step, steps_for
from bluegreen.rehearse.tally import load_totals, step_problems, tally_steps
from bluegreen.wsload import SocketClients, allowed_by_steps

BG_TIMEOUT = 300.0
SOCKETS = 4  # WebSockets held through every step (an app that serves /ws)
WARM_UP = 0.5  # load before the first measured step, so the clients are already going


@dataclass
class Options:
    app: str = "sample"  # sample or elixir (ignored with artifacts)
    artifacts: list[Path] = field(default_factory=list)
    config: Path | None = None
    json: bool = False
    keep: bool = False
    workdir: Path | None = None
    out: Path = Path(".")
    plot: bool = True


class Rehearsal:
    def __init__(self, env: Environment, reason: str, opts: Options) -> None:
        self.env = env
        self.reason = reason
        self.opts = opts
        self.say: Callable[[str], None] = lambda text: print(
            text, file=sys.stderr if opts.json else sys.stdout, flush=True)
        self.workdir = opts.workdir
        self.own_workdir = opts.workdir is None
        self.prepared: Prepared | None = None
        self.child: subprocess.Popen[str] | None = None
        self.load: Load | None = None
        self.sockets: SocketClients | None = None
        self.results: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        began = time.monotonic()
        self.say(f"environment: {self.env.name} ({self.reason})")
        with sigterm_as_interrupt():
            try:
                code = self._run(began)
            except KeyboardInterrupt:
                self.say("interrupted: stopping everything the rehearsal started")
                code = int(ExitCode.INTERRUPTED)
            finally:
                clean = self.cleanup()
            # Something left running is a failure of the rehearsal, whatever else happened.
            return code if clean or code else int(ExitCode.FAILED)

    def _run(self, began: float) -> int:
        """Start the environment, run every step under load, report; 0 when all went well."""
        plan, env = self._start()
        configs = self._write_configs(plan, env)
        first = ("--accept-new-host-keys",) if env.first_contact else ()
        code, _, out = self._bg(configs[0], (*first, "setup"))
        if code != 0:
            raise RehearsalError(f"bg setup failed (exit {code})", detail=out)
        steps = steps_for(plan)
        load = Load(endpoints=env.endpoints, limit=BG_TIMEOUT * len(steps))
        self._steps(steps, load, configs, websockets=plan.websockets)
        time.sleep(WARM_UP)
        load.stop()
        if self.sockets is not None:
            self.sockets.stop()
        under_load = time.monotonic() - load.origin if load.origin else 0.0
        final = self._final_status()
        data = self._report(load, began, final, apps.version_of(plan.b, plan.name))
        # The totals are what the load saw; the environment's start (a VM boot) is apart.
        data["load_seconds"] = round(under_load, 2)
        data["notes"] = list(env.notes)
        self._emit(data, load)
        return 0 if data["ok"] else 1

    def _start(self) -> tuple[apps.AppPlan, Prepared]:
        """Make the work directory, choose the app and start the environment, saying which."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="bg-rehearse-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        plan = self._plan()
        self.say(f"app: {plan.title}")
        for note in plan.notes:
            self.say(f"  {note}")
        self.prepared = env = self.env.start(plan.name, self.workdir)
        for note in env.notes:
            self.say(f"  {note}")
        return plan, env

    def _write_configs(self, plan: apps.AppPlan, env: Prepared) -> tuple[Path, Path, Path]:
        """The rehearsal's bluegreen.toml, and its variants for the refused release and for
        the step that verifies."""
        assert self.workdir is not None
        config = self.workdir / "bluegreen.toml"
        config.write_text(apps.redirect(plan, env))
        refused = self.workdir / "bluegreen-refused.toml"
        refused.write_text(apps.redirect(plan, env, refused=True))
        verifying = self.workdir / "bluegreen-verify.toml"
        verifying.write_text(apps.redirect(plan, env, verify=True))
        return config, refused, verifying

    def _steps(self, steps: list[Step], load: Load, configs: tuple[Path, Path, Path], *,
               websockets: bool) -> None:
        """Run the steps in order, the load started before the first under load; stop at the
        first unexpected exit."""
        assert self.prepared is not None
        config, refused, verifying = configs
        for i, step in enumerate(steps, 1):
            if step.under_load and self.load is None:
                self.load = load
                load.start()
                if websockets:
                    self.sockets = SocketClients(self.prepared.endpoints, count=SOCKETS)
                    self.sockets.start()
                time.sleep(WARM_UP)
            self.say(f"[{i}/{len(steps)}] bg {' '.join(_short(a) for a in step.args)}")
            started = time.monotonic()
            code, seconds, out = self._bg(
                refused if step.refused else verifying if step.verify else config, step.args)
            ended = time.monotonic()
            serving = self._serving()
            row = {"name": step.name, "exit": code, "expected": int(step.expect),
                   "tolerated": step.tolerated,
                   "seconds": round(seconds, 2), "start": started, "end": ended,
                   "serving": serving, "message": _last_line(out)}
            self.results.append(row)
            verdict = "as expected" if code == step.expect else f"EXPECTED {int(step.expect)}"
            self.say(f"      exit {code} ({verdict}) in {seconds:.2f}s; serving {serving}")
            if code != step.expect:
                if row["message"]:
                    self.say(f"      bg said: {row['message']}")
                # What follows depends on this step: going on would only pile up noise.
                self.skipped = [later.name for later in steps[i:]]
                if self.skipped:
                    self.say(f"      stopping here; not run: {', '.join(self.skipped)}")
                break

    def _plan(self) -> apps.AppPlan:
        assert self.workdir is not None
        if self.opts.artifacts:
            return apps.user(self.opts.artifacts, self.opts.config)
        if self.opts.app == "elixir":
            return apps.elixir(self.workdir)
        if self.opts.app != "sample":
            raise RehearsalError(f"--app must be sample or elixir, not {self.opts.app!r}")
        return apps.sample(self.workdir)

    # ------------------------------------------------------------------ bg
    def _bg(self, config: Path, args: tuple[str, ...]) -> tuple[int, float, str]:
        """``bg -c CONFIG ARGS``: exit code, seconds, and its output (also in bg.log)."""
        assert self.workdir is not None and self.prepared is not None
        here = str(Path(__file__).resolve().parent.parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH", "")) if p)}
        if self.prepared.home is not None:
            env["HOME"] = str(self.prepared.home)  # a private ~/.ssh: the user's cannot interfere
        argv = [sys.executable, "-m", "bluegreen", "-c", str(config), *args]
        started = time.monotonic()
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env,
                                      cwd=self.workdir)
        try:
            out, _ = self.child.communicate(timeout=BG_TIMEOUT)
            code = self.child.returncode
        except subprocess.TimeoutExpired:
            self.child.kill()
            out, _ = self.child.communicate()
            code = 124
        self.child = None
        seconds = time.monotonic() - started
        with (self.workdir / "bg.log").open("a") as log:
            log.write(f"$ bg {' '.join(args)}  -> exit {code} in {seconds:.2f}s\n{out}\n")
        return code, seconds, out

    def _serving(self) -> str:
        """What nginx answers on / now, on every endpoint (first line of the body)."""
        assert self.prepared is not None
        seen = []
        for host, port in self.prepared.endpoints:
            try:
                conn = Connection(host, port, 5.0)
                try:
                    status, body, _ = conn.exchange(
                        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
                        "GET")
                finally:
                    conn.close()
                text = body.decode(errors="replace").strip().splitlines()
                seen.append(text[0][:48] if status == 200 and text else f"HTTP {status}")
            except OSError as exc:
                seen.append(type(exc).__name__)
        return " | ".join(dict.fromkeys(seen))

    def _final_status(self) -> dict[str, Any]:
        """`bg status` after the sequence: B must be live again everywhere."""
        assert self.workdir is not None
        code, _, out = self._bg(self.workdir / "bluegreen.toml", ("--json", "status"))
        try:
            data: dict[str, Any] = json.loads(out[out.index("{"):])
        except ValueError:
            return {"ok": False, "exit": code}
        result = data.get("result")  # the --json envelope: {"ok", "command", "result"}
        return result if isinstance(result, dict) else data

    # ------------------------------------------------------------------ report
    def _report(self, load: Load, began: float, final: dict[str, Any],
                expected_live: str | None) -> dict[str, Any]:
        """The rehearsal's outcome as data (the JSON report): steps, totals, problems."""
        assert self.prepared is not None
        tally = tally_steps(self.results, load)
        everything = window(load.records, 0.0, float("inf"))
        self.problems += step_problems(tally, everything, self.skipped)
        if load.alive() or (self.sockets is not None and self.sockets.alive()):
            self.problems.append("a load client did not stop")
        sockets = self._sockets_report()
        live = {h.get("version") for h in final.get("hosts", [])}
        if final.get("hosts") is None or not final.get("ok") or (
                expected_live and live != {expected_live}):
            self.problems.append(f"after the rehearsal bg status says live {sorted(map(str, live))}"
                                 f" (ok={final.get('ok')}), expected {expected_live}")
        return {
            "ok": not self.problems,
            "environment": self.prepared.name,
            "hosts": self.prepared.hosts,
            "reason": self.reason,
            "steps": tally.steps,
            "skipped": self.skipped,
            "totals": load_totals(load, everything, tally, sockets),
            "seconds": round(time.monotonic() - began, 2),
            "problems": self.problems,
        }

    def _sockets_report(self) -> dict[str, Any] | None:
        """The sockets held through the steps: how they ended, where they reconnected."""
        ws = self.sockets
        if ws is None:
            return None
        steps = [(r["start"], r["end"], r["serving"]) for r in self.results]
        self.problems += ws.problems(allowed_by_steps(steps))
        return {"held": ws.count, "ends": dict(ws.ends), "reconnects": len(ws.reconnects),
                "reconnect_max_s": round(max((r.delay for r in ws.reconnects), default=0), 3),
                "failed_connects": dict(ws.failures)}

    def _emit(self, data: dict[str, Any], load: Load) -> None:
        out = self.opts.out
        data["plot"] = None
        if self.opts.plot:
            png = out / "bg-rehearsal.png"
            why = report.plot(png, load, data)
            if why is None:
                data["plot"] = str(png)
            else:
                self.say(f"no plot: {why}")
        table = report.table(data)
        if self.opts.json:
            print(json.dumps(data, indent=2))
        else:
            print("\n" + table)
        with contextlib.suppress(OSError):
            (out / "bg-rehearsal.json").write_text(json.dumps(data, indent=2) + "\n")

    # ------------------------------------------------------------------ cleanup
    def cleanup(self) -> bool:
        """Stop what was started, in reverse order; every part runs even if one fails.
        True when nothing was left behind."""
        problems: list[str] = []
        child = self.child
        if child is not None and child.poll() is None:
            # bg handles SIGINT: it releases its lock and exits 130.
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.load is not None:
            self.load.stop()
        if self.sockets is not None:
            self.sockets.stop()
        if self.opts.keep:
            self.say(f"kept: everything in {self.workdir}")
            return True
        if self.workdir is not None:
            problems += kill_under(self.workdir / "srv")  # the local slots
        try:
            self.env.stop(keep=False)
        except Exception as exc:  # the remaining cleanup must still run
            problems.append(f"{self.env.name}: {exc} {getattr(exc, 'detail', '')}".strip())
        if self.workdir is not None:
            problems += kill_under(self.workdir)
            if self.own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        for problem in problems:
            self.say(f"cleanup: {problem}")
        return not problems


def _short(arg: str) -> str:
    return Path(arg).name if "/" in arg else arg


def _last_line(out: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    return (errors or lines or [""])[-1][:200]
