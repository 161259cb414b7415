"""The rehearsal's report: a table for people, the same as JSON, and a plot of the load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bluegreen.loadclient import Load, buckets

BUCKET = 0.25  # seconds per bar in the plot


def table(data: dict[str, Any]) -> str:
    verdict = "PASS" if data["ok"] else "FAIL"
    hosts = data["hosts"]
    head = (f"rehearsal on {data['environment']} ({hosts} host{'s' if hosts != 1 else ''}):"
            f" {verdict}")
    cols = f"{'step':<30} {'exit':>9} {'seconds':>8} {'requests':>9} {'failed':>7}  serving"
    lines = [head, "", cols, "-" * len(cols)]
    for s in data["steps"]:
        code = f"{s['exit']}" if s["exit"] == s["expected"] else f"{s['exit']} (!={s['expected']})"
        under = s["started_at"] is not None and s["started_at"] >= 0
        reqs = f"{s['requests']}" if under else "-"
        failed = f"{s['failed']}" if under else "-"
        lines.append(f"{s['name'][:30]:<30} {code:>9} {s['seconds']:>8.2f} {reqs:>9} {failed:>7}"
                     f"  {s['serving']}")
        for kind, n in s["failed_by_kind"].items():
            lines.append(f"{'':<30} {'':>9} {'':>8} {'':>9} {n:>7}  {kind}")
        if s.get("expected_failures"):
            lines.append(f"{'':<30} {'':>9} {'':>8} {'':>9} {'':>7}  {s['expected_failures']}"
                         " answered 500 by the failing release until bg undid it (expected)")
    for name in data.get("skipped", []):
        lines.append(f"{name[:30]:<30} {'-':>9} {'-':>8} {'-':>9} {'-':>7}  (not run)")
    t = data["totals"]
    lines.append("-" * len(cols))
    under_load = data.get("load_seconds", data["seconds"])
    lines.append(f"{'total (all load)':<30} {'':>9} {under_load:>8.2f} {t['requests']:>9}"
                 f" {t['failed']:>7}")
    if "load_seconds" in data:
        lines.append(f"{'whole run (with the start)':<30} {'':>9} {data['seconds']:>8.2f}"
                     "  (the environment's start is not under load)")
    clients = ", ".join(f"{k} {v['requests']}/{v['failed']} failed"
                        for k, v in t["by_client"].items())
    lines.append("")
    lines.append(f"load through nginx, requests per client kind: {clients}")
    lines.append(f"keep-alive: {t['stale_keepalive_reconnects']} connections closed by nginx"
                 f" and reopened, {t['stale_keepalive_retries']} GETs retried once (as HTTP"
                 " clients do)")
    if ws := t.get("websockets"):
        lines.append(f"websockets: {ws['held']} held; ended {ws['ends'] or 'never'};"
                     f" {ws['reconnects']} reconnects (slowest {ws['reconnect_max_s']}s),"
                     " each to the release nginx served")
    if data.get("plot"):
        lines.append(f"plot: {data['plot']}")
    for problem in data["problems"]:
        lines.append(f"problem: {problem}")
    if data["ok"]:
        lines.append("every step did what it should and no request failed: safe to deploy"
                     " this way")
    return "\n".join(lines)


def plot(path: Path, load: Load, data: dict[str, Any]) -> str | None:
    """Requests and failures per second over time with the steps marked; why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'bluegreen[bench]')"
    if not load.origin:
        return "no load ran"
    end = max((r[0] for rows in load.records.values() for r in rows), default=load.origin)
    xs, reqs, fails = buckets(load.records, load.origin, end, BUCKET)
    xs, reqs, fails = xs[:-1] or xs, reqs[:-1] or reqs, fails[:-1] or fails  # last: partial
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(xs, [r / BUCKET for r in reqs], color="tab:blue", label="requests/s")
    ax.bar(xs, [f / BUCKET for f in fails], width=BUCKET, align="edge", color="tab:red",
           label="failed/s")
    for i, s in enumerate(data["steps"]):
        if s["started_at"] is None or s["started_at"] < 0:
            continue
        ax.axvspan(s["started_at"], s["started_at"] + s["seconds"], alpha=0.08 + 0.08 * (i % 2),
                   color="tab:green" if s["exit"] == s["expected"] else "tab:orange")
        ax.text(s["started_at"], 0.98 - 0.07 * (i % 3), f" {s['name']} (exit {s['exit']})",
                transform=ax.get_xaxis_transform(), fontsize=8, va="top")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    verdict = "PASS" if data["ok"] else "FAIL"
    hosts = f"{data['hosts']} host" + ("s" if data["hosts"] != 1 else "")
    ax.set_title(f"bg rehearse on {data['environment']} ({hosts}): {verdict},"
                 f" {data['totals']['requests']} requests, {data['totals']['failed']} failed")
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    finally:
        plt.close(fig)
    return None
