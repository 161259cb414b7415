"""`bg check`'s "nginx master" line: the master of this configuration, found by the pid file
or, when that fails, told apart from other nginx instances by its ``-p``/``-c``."""

from __future__ import annotations

import shlex
from typing import Any

FAIL, OK = "fail", "ok"  # as bluegreen.facts.check names them


def _prefix_and_conf(words: list[str]) -> tuple[str | None, str | None]:
    """The ``-p`` and ``-c`` an nginx command line names (None: nginx's built-in default)."""
    found: dict[str, str] = {}
    for i, w in enumerate(words):
        if w in ("-p", "-c") and i + 1 < len(words):
            found[w] = words[i + 1]
    return found.get("-p"), found.get("-c")


def _masters_of(test_command: str, masters: list[str]) -> tuple[list[str], list[str]]:
    """The ``ps`` lines' master pids: (this configuration's, other nginx instances')."""
    ours_words = shlex.split(test_command)
    want = _prefix_and_conf(ours_words)
    ours: list[str] = []
    others: list[str] = []
    for line in masters:
        pid, _, args = line.strip().partition(" ")
        words = args.split("master process", 1)[-1].split()
        (ours if _prefix_and_conf(words) == want else others).append(pid)
    return ours, others


def master(add: Any, s: dict[str, list[str]], pid_file: str, pid_directive: str | None,
            test_command: str) -> None:
    lines = s.get("pid-file", [])
    pid = lines[0].removeprefix("pid=") if lines else ""
    cmdline = " ".join(lines[1:])
    if pid and "nginx" in cmdline and "master" in cmdline:
        add("nginx master", OK, f"pid {pid}, found by the pid file {pid_file}")
        return
    # Other nginx instances (another program's, a test's) are no answer: only a master
    # started with this configuration's -p/-c is.
    ours, others = _masters_of(test_command, [m for m in s.get("masters", []) if m.split()])
    why = "is missing or empty" if not pid else f"names pid {pid}, not a running nginx master"
    if pid_directive and pid_directive != pid_file:
        found = [f"nginx -T says `pid {pid_directive};`"]
        if ours:
            found.append("the process list shows master pid(s) " + ", ".join(ours))
        add("nginx master", FAIL, f"pid file {pid_file} {why}; {'; '.join(found)}",
            f"set [nginx] pid_file = \"{pid_directive}\"")
    elif ours:
        add("nginx master", FAIL, f"pid file {pid_file} {why}; the process list shows this"
            f" configuration's master pid(s) {', '.join(ours)}",
            "set [nginx] pid_file to the `pid` of nginx's configuration")
    else:
        add("nginx master", FAIL, f"nginx is not running (pid file {pid_file} {why}, and no"
            " nginx master runs this configuration"
            + (f"; other nginx instances: pid {', '.join(others)})" if others else ")"),
            "start nginx (Debian: `systemctl start nginx`), then check again")
