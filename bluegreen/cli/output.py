"""What bg prints: live progress on stderr, results on stdout, one JSON envelope.

With ``--json`` stdout carries exactly one JSON document::

    {"schema": 1, "ok": true,  "command": "deploy", "result": {...}}
    {"schema": 1, "ok": false, "command": "deploy", "error": {"message", "hint", ...}}

``schema`` is :data:`bluegreen.results.SCHEMA_VERSION`; ``result`` is the command's
result value (bluegreen/results.py) as its ``to_json()``.

A command that ran but found problems (``status``, ``check``) reports ``ok: false`` with
both its ``result`` and an ``error``. Progress and warnings always go to stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, NoReturn

from bluegreen.cli.globalopts import GlobalOptions
from bluegreen.errors import BgError, HostFailures

# The envelope's keys, documented in the README ("JSON output") and checked by tests.
ENVELOPE_KEYS = ("schema", "ok", "command", "result", "error")


def envelope(opts: GlobalOptions, *, result: Any = None, error: BgError | None = None
             ) -> dict[str, Any]:
    from bluegreen.results import SCHEMA_VERSION

    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "ok": error is None,
                           "command": opts.command}
    if result is not None or error is None:
        out["result"] = result
    if error is not None:
        out["error"] = error.to_json()
    return out


def emit(opts: GlobalOptions, result: Any) -> None:
    """The successful result as the JSON envelope (only with --json)."""
    print(json.dumps(envelope(opts, result=result), indent=2, default=str), flush=True)


def fail(opts: GlobalOptions, exc: BgError, *, result: Any = None) -> NoReturn:
    """Report ``exc`` (JSON envelope or human text) and exit with its code."""
    if opts.json:
        print(json.dumps(envelope(opts, result=result, error=exc), indent=2, default=str),
              flush=True)
    else:
        err = sys.stderr
        print(f"error: {exc.message}", file=err)
        if isinstance(exc, HostFailures) and len(exc.outcomes) > 1:
            for name, outcome in exc.outcomes.items():
                print(f"  {name}: {outcome}", file=err)
        for line in exc.detail.rstrip().splitlines():
            print(f"  | {line}", file=err)
        for other in exc.secondary:
            print(f"also: {other.message}", file=err)
        if exc.hint:
            print(f"hint: {exc.hint}", file=err)
    # SystemExit, not Typer's Exit: the operation commands also run without Typer
    # (bluegreen.cli.quick); under click it passes through to the same exit.
    raise SystemExit(int(exc.exit_code))


class Printer:
    """The operations' Reporter: a line per finished step (with its duration) on stderr.

    On a terminal a spinner shows what is running and for how long (rich, imported only
    then); NO_COLOR turns colour off; ``--quiet`` and ``--json`` print no progress.
    Steps may finish on several host threads at once, hence the lock.
    """

    def __init__(self, opts: GlobalOptions, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.silent = opts.quiet or opts.json
        self.color = not opts.no_color and self.stream.isatty()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._status: Any = None
        self._console: Any = None
        if not self.silent and self.stream.isatty():
            from rich.console import Console

            self._console = Console(file=self.stream, no_color=opts.no_color, highlight=False)
            self._status = self._console.status("working", spinner="dots")
            self._status.start()

    def _line(self, text: str, style: str = "") -> None:
        if self._console is not None:
            from rich.text import Text

            # soft_wrap: a step line is one line however narrow the terminal.
            self._console.print(Text(text, style=style if self.color else ""), soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def step_started(self, title: str) -> None:
        """Optional in the Reporter protocol: names the step the spinner waits on."""
        if self._status is not None:
            with self._lock:
                self._status.update(f"{title} ...")

    def step_done(self, title: str, seconds: float, ok: bool, note: str) -> None:
        if self.silent:
            return
        mark = "ok  " if ok else "FAIL"
        extra = f"  ({note})" if note else ""
        with self._lock:
            self._line(f"  {mark} {title:<58} {seconds:6.2f}s{extra}",
                       "green" if ok else "bold red")
            if self._status is not None:
                self._status.update("working")

    def info(self, text: str) -> None:
        if self.silent:
            return
        with self._lock:
            self._line(text, "yellow" if text.startswith("warning") else "")

    def close(self) -> None:
        with self._lock:
            if self._status is not None:
                self._status.stop()
                self._status = None
