"""The report: per window, phase and kind of operation; headline times; targets.

Outputs (in ``out``): ``load.json`` (everything, per operation and per phase), ``load.md``
(the tables, also printed), ``load.png`` (see ``plot``), ``load-records.npz`` (every
request, saved before any analysis; ``replot`` renders the .md and .png again from it) and
``load-windows.json``; for the keep-alive A/B, ``keepalive-ab.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadgen import MIXES, LoadGenerator
from plot import plot
from stand import bg_startup_seconds, nginx_version
from windows import Timeline, Window, excess_p_value, failure_list, merge_stats, window_stats


def write_run(out: Path, load: LoadGenerator, timeline: Timeline, *, settings: dict[str, Any],
              boot_idle: list[float], boots: list[float]) -> int:
    """Write and print the run's report; 1 if any target failed."""
    recs, windows, origin = load.records, timeline.windows, timeline.origin
    # The raw records first: whatever goes wrong below, the run can be analysed again.
    arrays: dict[str, Any] = {"origin": np.array([origin]), **recs}
    np.savez_compressed(out / "load-records.npz", **arrays)
    (out / "load-windows.json").write_text(json.dumps([
        {"label": w.label, "kind": w.kind, "phase": w.phase, "start_s": w.start - origin,
         "wall_s": w.wall, "window_s": w.until - w.start, "exit": w.exit_code}
        for w in windows], indent=1) + "\n")
    for w in windows:
        w.stats = {name: window_stats(rec, w.start, w.until) for name, rec in recs.items()}
    phases: dict[str, list[Window]] = {}
    for w in windows:
        phases.setdefault(w.phase, []).append(w)
    totals = {p: merge_stats(recs, [(w.start, w.until) for w in ws])
              for p, ws in phases.items()}
    kinds: dict[str, list[Window]] = {}
    for w in windows:
        if w.phase != "idle":
            kinds.setdefault(w.kind, []).append(w)
    by_kind = {
        k: {
            "count": len(ws),
            "wall_median_s": round(statistics.median(w.wall for w in ws), 3),
            "wall_max_s": round(max(w.wall for w in ws), 3),
            "mixes": merge_stats(recs, [(w.start, w.until) for w in ws]),
        }
        for k, ws in kinds.items()
    }
    goals = targets(windows, totals)
    doc = {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nginx": nginx_version(),
            **settings,
            "client_stats": load.client_stats,
            "duration_s": round(windows[-1].until - origin, 2),
            "attribution": "a request belongs to the window in which it started; windows"
                           " tile the run (an operation's window ends where the next"
                           " one starts)",
        },
        "headline": headline(windows, boot_idle, boots),
        "targets": goals,
        "phases": totals,
        "by_kind": by_kind,
        "failures_in_bg_and_reload": failure_list(recs, windows, phases=("bg", "reload")),
        "windows": [
            {
                "label": w.label, "kind": w.kind, "phase": w.phase,
                "start_s": round(w.start - origin, 3),
                "wall_s": round(w.wall, 3),
                "window_s": round(w.until - w.start, 3),
                "exit": w.exit_code, "stats": w.stats, "detail": w.detail,
            }
            for w in windows
        ],
    }
    (out / "load.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    (out / "load.md").write_text(md)
    try:
        plot(recs, windows, origin, out / "load.png")
    except Exception as exc:  # the numbers matter more than the picture
        print(f"plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    print()
    print(md)
    print(f"written: {out / 'load.json'}, {out / 'load.md'}, {out / 'load.png'}")
    return 1 if any(t["status"] == "FAIL" for t in goals.values()) else 0


def headline(windows: Sequence[Window], boot_idle: Sequence[float], boots: Sequence[float]
             ) -> dict[str, Any]:
    def med(values: Sequence[float]) -> float | None:
        return round(statistics.median(values), 3) if values else None

    def of(kind_prefix: str, *, bg_seconds: bool = False) -> list[float]:
        out = []
        for w in windows:
            if w.phase == "bg" and w.kind.startswith(kind_prefix) and w.exit_code == 0:
                out.append(float(w.detail["bg"].get("seconds", 0.0)) if bg_seconds
                           else w.wall)
        return out

    deploys = of("deploy")
    boot_load = med(boots)
    steps: dict[str, list[float]] = {}
    for w in windows:
        if w.kind == "deploy" and w.exit_code == 0:
            for s in w.detail["bg"].get("steps", []):
                steps.setdefault(step_group(s["title"]), []).append(float(s["seconds"]))
    return {
        "switch_warm_wall_median_s": med(of("switch warm")),
        "switch_warm_in_bg_median_s": med(of("switch warm", bg_seconds=True)),
        "switch_cold_wall_median_s": med(of("switch cold")),
        "rollback_warm_wall_median_s": med(of("rollback warm")),
        "rollback_cold_wall_median_s": med(of("rollback cold")),
        "deploy_wall_median_s": med(deploys),
        "deploy_in_bg_median_s": med(of("deploy", bg_seconds=True)),
        "boot_idle_median_s": med(boot_idle),
        "boot_under_load_median_s": boot_load,
        "deploy_minus_boot_s": (round(statistics.median(deploys) - boot_load, 3)
                                if deploys and boot_load is not None else None),
        "deploy_step_medians_s": {k: round(statistics.median(v), 3)
                                  for k, v in steps.items()},
        "bg_process_start_s": bg_startup_seconds(),
    }


def step_group(title: str) -> str:
    """A step title without its particulars (versions, slots, ports, URLs, notes)."""
    import re

    title = re.sub(r"\s*\([^)]*\)", "", title)
    title = re.sub(r"https?://\S+", "URL", title)
    title = re.sub(r"\b\d+(\.\d+)*\b", "N", title)
    return re.sub(r"\b(blue|green)\b", "SLOT", title).strip()


def targets(windows: Sequence[Window], totals: dict[str, dict[str, dict[str, Any]]]
            ) -> dict[str, Any]:
    bg = totals.get("bg", {})
    rl = totals.get("reload", {})
    tr = totals.get("traditional", {})
    ops_ok = all(w.exit_code == 0 for w in windows if w.phase in ("bg", "reload"))

    def failed(t: dict[str, dict[str, Any]], mix: str) -> int:
        return int(t.get(mix, {}).get("failed", 0))

    def verdict(ok: bool) -> dict[str, Any]:
        return {"pass": ok, "status": "PASS" if ok else "FAIL"}

    k_bg, k_rl = failed(bg, "keepalive"), failed(rl, "keepalive")
    n_bg = sum(1 for w in windows if w.phase == "bg" and w.exit_code == 0)
    n_rl = sum(1 for w in windows if w.phase == "reload" and w.exit_code == 0)
    p = excess_p_value(k_bg, k_rl, n_bg, n_rl)
    keepalive = {
        "pass": k_bg <= k_rl,
        # a count above the baseline's is a failure only when chance cannot explain it
        "status": "PASS" if k_bg <= k_rl else ("FAIL" if p < 0.05 else "WITHIN NOISE"),
        "bg": k_bg, "bare_reload": k_rl, "bg_reloads": n_bg, "bare_reloads": n_rl,
        "p_value": round(p, 4),
    }
    return {
        "every bg operation succeeded": verdict(ops_ok),
        "zero failed close requests in bg operations": {
            **verdict(failed(bg, "close") == 0), "bg": failed(bg, "close")},
        "zero failed POST requests in bg operations": {
            **verdict(failed(bg, "post") == 0), "bg": failed(bg, "post")},
        "keep-alive failures <= bare reload baseline": keepalive,
        "stop/start baseline failures (reported)": {
            "pass": True, "status": "REPORTED",
            "traditional": {m: failed(tr, m) for m in ("close", "keepalive", "post")},
            "bg": {m: failed(bg, m) for m in ("close", "keepalive", "post")}},
    }


# ----------------------------------------------------------------------------- markdown
def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _fails(s: dict[str, Any]) -> str:
    if not s["failed"]:
        return ""
    return ", ".join(f"{k} x{n}" for k, n in sorted(s["failures"].items()))


def markdown(doc: dict[str, Any]) -> str:
    meta, head = doc["meta"], doc["headline"]
    load = meta["load"]
    lines = [
        f"# bg under load: {meta['app']} app, nginx {meta['nginx']}, {meta['cpus']} CPUs,"
        f" {meta['date']}",
        "",
        f"Load: 3 mixes at once, {load['connections_per_mix']} connections each, "
        f"{load['rate_per_connection']:g} requests/s per connection; run of "
        f"{meta['duration_s']:.0f} s. A request counts in the window where it started; an"
        " operation's window lasts until the next one starts. Latencies are of answered"
        " requests, in ms.",
        "",
        "## Totals: bg vs the baselines",
        "",
        "| phase | mix | operations | requests | non-2xx | conn errors | p50 | p90 | p99 |"
        " max | failures |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    names = {"bg": "bg deploy/switch/rollback", "reload": "baseline: bare nginx reload",
             "traditional": "baseline: stop/start on one port", "idle": "pauses (no operation)"}
    counts: dict[str, int] = {}
    for w in doc["windows"]:
        counts[w["phase"]] = counts.get(w["phase"], 0) + (0 if w["phase"] == "idle" else 1)
    for phase in ("bg", "reload", "traditional", "idle"):
        for mix, st in doc["phases"].get(phase, {}).items():
            lines.append(
                f"| {names[phase]} | {mix} | {counts.get(phase, 0)} | {st['requests']} |"
                f" {st['non_2xx']} | {st['conn_errors']} | {_ms(st['p50_ms'])} |"
                f" {_ms(st['p90_ms'])} | {_ms(st['p99_ms'])} | {_ms(st['max_ms'])} |"
                f" {_fails(st)} |")
    lines += ["", "## Targets", ""]
    for name, t in doc["targets"].items():
        rest = ", ".join(f"{k}: {v}" for k, v in t.items() if k not in ("pass", "status"))
        status = t.get("status", "PASS" if t["pass"] else "FAIL")
        lines.append(f"- {status}: {name}" + (f" ({rest})" if rest else ""))
    if any(t.get("status") == "WITHIN NOISE" for t in doc["targets"].values()):
        lines += [
            "",
            "WITHIN NOISE: bg's keep-alive count is above the baseline's, but if both had the"
            " same rate per reload bg would get that many or more with probability p_value"
            " (>= 0.05). bg reloads nginx exactly once per operation, as the baseline does.",
        ]

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    lines += [
        "",
        "## Times",
        "",
        f"- `bg switch` (warm, the idle slot still runs): median wall {s(head['switch_warm_wall_median_s'])}"  # noqa: E501
        f" ({s(head['switch_warm_in_bg_median_s'])} inside bg; starting the `bg` process"
        f" itself takes {s(head['bg_process_start_s'])})",
        f"- `bg switch` (cold, the idle slot was retired and starts again): median"
        f" {s(head['switch_cold_wall_median_s'])}; `bg rollback` warm"
        f" {s(head['rollback_warm_wall_median_s'])}, cold {s(head['rollback_cold_wall_median_s'])}",
        f"- `bg deploy`: median wall {s(head['deploy_wall_median_s'])}; app boot time"
        f" (spawn to first 200 on /health) {s(head['boot_under_load_median_s'])} under this load"
        f" ({s(head['boot_idle_median_s'])} idle); **deploy minus boot:"
        f" {s(head['deploy_minus_boot_s'])}**",
        "- `bg deploy` step medians: " + ", ".join(
            f"{k} {v:.3f} s" for k, v in head["deploy_step_medians_s"].items()),
        "",
        "## By kind of operation",
        "",
        "| operation | n | wall median | wall max | requests | failed close | failed keep-alive |"
        " failed POST | p99 (close/keep-alive/POST) | max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for kind, k in doc["by_kind"].items():
        m = k["mixes"]
        req = sum(x["requests"] for x in m.values())
        mx = max((x["max_ms"] or 0.0) for x in m.values())
        lines.append(
            f"| {kind} | {k['count']} | {k['wall_median_s']:.2f} s | {k['wall_max_s']:.2f} s |"
            f" {req} | {m['close']['failed']} | {m['keepalive']['failed']} |"
            f" {m['post']['failed']} | {_ms(m['close']['p99_ms'])} /"
            f" {_ms(m['keepalive']['p99_ms'])} / {_ms(m['post']['p99_ms'])} | {_ms(mx)} |")
    lines += [
        "",
        "## Every operation",
        "",
        "Failed = non-2xx + connection errors, per mix (close / keep-alive / POST).",
        "",
        "| # | t (s) | operation | exit | wall | window | requests | failed c/k/p |"
        " p50 | p99 | max | failures |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for i, w in enumerate(doc["windows"], 1):
        st = w["stats"]
        req = sum(x["requests"] for x in st.values())
        fails = "/".join(str(st[m]["failed"]) for m in ("close", "keepalive", "post"))
        p50 = max((x["p50_ms"] or 0.0) for x in st.values())
        p99 = max((x["p99_ms"] or 0.0) for x in st.values())
        mx = max((x["max_ms"] or 0.0) for x in st.values())
        what = "; ".join(f"{m}: {_fails(x)}" for m, x in st.items() if x["failed"])
        lines.append(
            f"| {i} | {w['start_s']:.1f} | {w['label']} | {w['exit']} | {w['wall_s']:.2f} |"
            f" {w['window_s']:.2f} | {req} | {fails} | {_ms(p50)} | {_ms(p99)} | {_ms(mx)} |"
            f" {what} |")
    lines.append("")
    lines.append("p50/p99 per operation: the highest of the three mixes.")
    return "\n".join(lines) + "\n"



# ----------------------------------------------------------------------------- keep-alive A/B
def write_keepalive_ab(out: Path, load: LoadGenerator, *, pairs: int, conns: int, rate: float,
                       spans: dict[str, list[tuple[float, float]]],
                       walls: dict[str, list[float]], exits: list[int]) -> int:
    """Write and print the A/B's result; 1 if bg failed more than chance explains, or exited
    non-zero."""
    rec = load.records["keepalive"]
    result: dict[str, Any] = {
        "pairs": pairs, "connections": conns, "rate_per_connection": rate,
        "nginx": nginx_version(), "cpus": os.cpu_count(),
        "bg_exit_codes": sorted(set(exits)),
        "client_stats": load.client_stats,
    }
    for kind, sp in spans.items():
        st = merge_stats({"keepalive": rec}, sp)["keepalive"]
        result[kind] = {**st, "operations": len(sp),
                        "wall_median_s": round(statistics.median(walls[kind]), 3),
                        "failed_per_reload": round(st["failed"] / max(1, len(sp)), 3)}
    k_bg, k_bare = result["bg switch"]["failed"], result["bare reload"]["failed"]
    result["p_bg_more"] = round(excess_p_value(k_bg, k_bare, pairs, pairs), 4)
    result["p_bg_fewer"] = round(excess_p_value(k_bare, k_bg, pairs, pairs), 4)
    (out / "keepalive-ab.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"| keep-alive A/B ({pairs} each, alternating) | reloads | requests | failed |"
        " per reload | p50 | p99 | max | failures |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for kind in spans:
        r = result[kind]
        lines.append(f"| {kind} | {r['operations']} | {r['requests']} | {r['failed']} |"
                     f" {r['failed_per_reload']:.2f} | {_ms(r['p50_ms'])} |"
                     f" {_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | {_fails(r)} |")
    lines.append(f"\nIf both had the same rate per reload: P(bg this many or more) ="
                 f" {result['p_bg_more']}, P(bg this few or fewer) = {result['p_bg_fewer']}")
    print("\n".join(lines))
    print(f"written: {out / 'keepalive-ab.json'}")
    return 1 if result["p_bg_more"] < 0.05 or any(exits) else 0


# ----------------------------------------------------------------------------- replot
def replot(out: Path) -> int:
    """Render load.md and load.png again from a run's load.json and load-records.npz."""
    doc = json.loads((out / "load.json").read_text())
    data = np.load(out / "load-records.npz")
    recs = {m.name: data[m.name] for m in MIXES if m.name in data}
    origin = float(data["origin"][0])
    windows = [
        Window(w["label"], w["kind"], w["phase"], origin + w["start_s"],
               origin + w["start_s"] + w["wall_s"], origin + w["start_s"] + w["window_s"],
               w["exit"])
        for w in doc["windows"]
    ]
    (out / "load.md").write_text(markdown(doc))
    plot(recs, windows, origin, out / "load.png")
    print(f"written: {out / 'load.md'}, {out / 'load.png'}")
    return 0
