"""`bg history`: the journal's entries grouped into operations (pure, but for the read)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from bluegreen.host import Host
from bluegreen.journal import read_journal
from bluegreen.layout import Layout
from bluegreen.results_history import OperationSummary

# Journal lines read per operation asked for: a deploy writes about ten.
LINES_PER_OPERATION = 40


def read_operations(host: Host, paths: Layout, limit: int = 20) -> list[OperationSummary]:
    """The last ``limit`` operations of the journal, one summary each (:func:`operations`)."""
    want = max(1, limit) * LINES_PER_OPERATION
    entries = read_journal(host, paths, want)
    return operations(entries, cut=len(entries) >= want)[-max(1, limit):]


def operations(entries: list[dict[str, Any]], *, cut: bool = False) -> list[OperationSummary]:
    """Group journal entries into operations: one bg process (controller + pid) doing one
    command. ``cut``: the entries start mid-file, so a first operation without its
    beginning is left out rather than shown with a wrong duration."""
    groups: list[list[dict[str, Any]]] = []
    for e in entries:
        key = (e.get("controller"), e.get("pid"), e.get("op"))
        if groups and (groups[-1][0].get("controller"), groups[-1][0].get("pid"),
                       groups[-1][0].get("op")) == key and e.get("step") != "begin":
            groups[-1].append(e)
        else:
            groups.append([e])
    if cut and groups and groups[0][0].get("step") != "begin":
        groups.pop(0)
    return [_summary(g) for g in groups]


def _summary(group: list[dict[str, Any]]) -> OperationSummary:
    first, last = group[0], group[-1]
    # A step that failed without failing the operation (an after_deploy hook) is a warning
    # inside it; the executor journals a failed operation as a step "failed".
    failed = next((e for e in group if e.get("step") == "failed"), None)
    finished = last.get("outcome") == "ok" and last.get("step") in ("done", last.get("op"))
    outcome = "failed" if failed else "ok" if finished else "incomplete"
    seconds = None
    with contextlib.suppress(KeyError, ValueError):
        seconds = round((datetime.fromisoformat(str(last["time"]))
                         - datetime.fromisoformat(str(first["time"]))).total_seconds(), 3)
    message = str(failed["message"]) if failed and "message" in failed else None
    pid = first.get("pid")
    return OperationSummary(
        time=_text(first.get("time")), op=_text(first.get("op")),
        command=next((str(e["command"]) for e in group if e.get("step") == "begin"
                      and "command" in e), None),
        version=next((str(e["version"]) for e in reversed(group) if e.get("version")), None),
        outcome=outcome, seconds=seconds, message=message,
        user=_text(first.get("user")), controller=_text(first.get("controller")),
        pid=pid if isinstance(pid, int) else None, steps=len(group),
    )


def _text(value: Any) -> str | None:
    """A journal entry's field as text (None when absent): the journal is input."""
    return None if value is None else str(value)
