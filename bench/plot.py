"""The plot: 2xx answers/s, failures and p99 latency over time, every operation shaded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadgen import MIX_TITLES
from windows import Window

KIND_COLORS = {
    "deploy": "#4c72b0", "switch warm": "#55a868", "switch cold": "#8fd19e",
    "rollback warm": "#c44e52", "rollback cold": "#e8a0a2", "reload": "#8172b2",
    "stop/start": "#ccb974", "idle": "#ffffff",
}
MIX_COLORS = {"close": "#1f77b4", "keepalive": "#ff7f0e", "post": "#2ca02c"}


def plot(recs: dict[str, np.ndarray], windows: Sequence[Window], origin: float, path: Path,
         bin_s: float = 0.25) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    end = max(w.until for w in windows) - origin
    edges = np.arange(0.0, math.floor(end / bin_s) * bin_s + bin_s / 2, bin_s)  # whole bins
    width = max(14.0, min(40.0, end / 12.0))
    fig, (ax_rps, ax_err, ax_lat) = plt.subplots(3, 1, figsize=(width, 10), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 2, 2]})
    centers = edges[:-1] + bin_s / 2
    stacked = np.zeros(len(centers))
    for name, rec in recs.items():
        t = rec[:, 0] - origin
        codes = rec[:, 2]
        ok = (codes >= 200) & (codes < 300)
        good, _ = np.histogram(t[ok], edges)  # a 502 is answered fast: count only 2xx here
        bad, _ = np.histogram(t[~ok], edges)
        ax_rps.plot(centers, good / bin_s, lw=0.8, color=MIX_COLORS[name],
                    label=f"{name}: {MIX_TITLES[name]}")
        nz = bad > 0
        ax_err.bar(centers[nz], bad[nz], width=bin_s, bottom=stacked[nz],
                   color=MIX_COLORS[name], alpha=0.9, label=f"{name} failed")
        stacked += bad
        idx = np.digitize(t[codes >= 100], edges) - 1
        lat = rec[codes >= 100, 1] * 1000
        p99 = np.full(len(centers), np.nan)
        order = np.argsort(idx, kind="stable")
        idx_s, lat_s = idx[order], lat[order]
        bounds = np.searchsorted(idx_s, np.arange(len(centers) + 1))
        for b in range(len(centers)):
            chunk = lat_s[bounds[b]:bounds[b + 1]]
            if chunk.size:
                p99[b] = np.percentile(chunk, 99)
        ax_lat.plot(centers, p99, lw=0.8, color=MIX_COLORS[name], label=f"{name} p99")
    for ax in (ax_rps, ax_err, ax_lat):
        for w in windows:
            if w.kind == "idle":
                continue
            ax.axvspan(w.start - origin, w.end - origin if w.end > w.start + 0.05 else
                       w.start - origin + 0.05, color=KIND_COLORS.get(w.kind, "#dddddd"),
                       alpha=0.35, lw=0)
    top = ax_rps.get_ylim()[1]
    ax_rps.set_ylim(0, top * 1.35)
    ax_err.set_yscale("symlog", linthresh=1.0)  # one failure is as visible as a hundred
    ax_err.set_ylim(0, max(10.0, float(stacked.max()) * 2))
    short = {"deploy": "D", "switch warm": "S", "switch cold": "S*", "rollback warm": "R",
             "rollback cold": "R*", "reload": "", "stop/start": "stop/start"}
    for w in windows:
        if w.kind != "idle" and short.get(w.kind):
            ax_rps.text(w.start - origin, top * 1.12, short[w.kind], fontsize=7, va="top",
                        rotation=90 if w.kind == "stop/start" else 0)
    phase_names = {"bg": "bg operations", "reload": "baseline: bare nginx -s reload",
                   "traditional": "baseline: stop/start"}
    for phase, title in phase_names.items():
        ws = [w for w in windows if w.phase == phase]
        if ws:
            ax_rps.text((ws[0].start + ws[-1].until) / 2 - origin, top * 1.3, title,
                        ha="center", va="top", fontsize=10, weight="bold")
    ax_rps.set_ylabel("2xx answers/s (per mix)")
    ax_err.set_ylabel(f"failed requests per {bin_s:g} s")
    ax_lat.set_ylabel(f"p99 latency, ms ({bin_s:g}s bins)")
    ax_lat.set_yscale("log")
    ax_lat.set_xlabel("seconds since the load started")
    ax_rps.legend(loc="lower left", fontsize=8, ncol=3)
    handles = [Patch(color=c, alpha=0.35, label=k) for k, c in KIND_COLORS.items()
               if k != "idle" and any(w.kind == k for w in windows)]
    ax_err.legend(handles=[*ax_err.get_legend_handles_labels()[0], *handles], fontsize=8,
                  loc="upper left", ncol=2)
    ax_lat.legend(loc="upper left", fontsize=8, ncol=3)
    ax_rps.set_title("Successful requests/s, failures and p99 latency through nginx; shaded:"
                     " operations"
                     " (D deploy, S switch, R rollback; * cold = the slot starts again)",
                     fontsize=11)
    ax_lat.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

