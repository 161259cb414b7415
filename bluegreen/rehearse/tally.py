"""What the load saw during the rehearsal: requests and failures per step and in all.

A step may tolerate one kind of failure (the failing release's 500s until bg undid it): those
are counted apart as expected failures, never as failed requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bluegreen.loadclient import Load, Window, window


@dataclass
class Tally:
    """The steps' rows for the report, and the failures they tolerated (in all, per mix)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    tolerated: int = 0
    tolerated_by_mix: dict[str, int] = field(default_factory=dict)


def tally_steps(results: list[dict[str, Any]], load: Load) -> Tally:
    """Each step's row with the requests started during it and how they failed (takes the
    ``tolerated`` kind out of each row of ``results``)."""
    tally = Tally()
    for row in results:
        w = window(load.records, row["start"], row["end"]) if load.origin else None
        failed = {f"{mix}: {kind}": n for mix, kinds in (w.failed if w else {}).items()
                  for kind, n in kinds.items()}
        kind = row.pop("tolerated")
        expected = {k: n for k, n in failed.items() if kind and k.endswith(f": {kind}")}
        tally.tolerated += sum(expected.values())
        for key, n in expected.items():
            mix = key.split(":", 1)[0]
            tally.tolerated_by_mix[mix] = tally.tolerated_by_mix.get(mix, 0) + n
        tally.steps.append({k: v for k, v in row.items() if k not in ("start", "end")}
                           | {"requests": w.total if w else 0,
                              "failed": (w.total_failed if w else 0) - sum(expected.values()),
                              "failed_by_kind": {k: n for k, n in failed.items()
                                                 if k not in expected},
                              "expected_failures": sum(expected.values()),
                              # seconds since the load started (negative: before it)
                              "started_at": round(row["start"] - load.origin, 2)
                              if load.origin else None})
    return tally


def step_problems(tally: Tally, everything: Window, skipped: list[str]) -> list[str]:
    """What went wrong in the steps: an unexpected exit, failed requests, steps not run."""
    problems = []
    for row in tally.steps:
        if row["exit"] != row["expected"]:
            problems.append(f"{row['name']}: exit {row['exit']}, expected {row['expected']}")
    if everything.total_failed - tally.tolerated:
        problems.append(f"{everything.total_failed - tally.tolerated} requests failed")
    if skipped:
        problems.append(f"not run: {', '.join(skipped)}")
    return problems


def load_totals(load: Load, everything: Window, tally: Tally,
                websockets: dict[str, Any] | None) -> dict[str, Any]:
    """The report's totals: every request of the load, per client kind, tolerated ones apart."""
    return {
        "requests": everything.total,
        "failed": everything.total_failed - tally.tolerated,
        # the failing release's own failures before bg undid it (the undone step)
        "expected_failures": tally.tolerated,
        "by_client": {mix: {"requests": everything.requests.get(mix, 0),
                            "failed": sum(everything.failed.get(mix, {}).values())
                            - tally.tolerated_by_mix.get(mix, 0)}
                      for mix in load.clients},
        "stale_keepalive_retries": load.total("stale_retries"),
        "stale_keepalive_reconnects": load.total("stale_reconnects"),
        "websockets": websockets,
    }
