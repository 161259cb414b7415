"""Attribution and statistics: the run cut into windows, and what the requests in them did.

The windows tile the run without gaps: an operation's window runs from its start to the
next operation's start (its wall time plus the pause before the next one). A request
belongs to the window in which it *started*; warm-up, pauses between phases and cool-down
are windows too, so every request of the run is attributed to exactly one window.

Keep-alive failures are rare (nginx < 1.27.4 resets a keep-alive connection only when a
request races its old worker's shutdown), so ``excess_p_value`` says whether bg's count
could be above the baseline's by chance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadgen import outcome_name


@dataclass
class Window:
    """A stretch of the run: an operation (or a pause) and the requests that started in it."""

    label: str
    kind: str  # deploy, switch, rollback, reload, stop/start, idle
    phase: str  # bg, reload, traditional, idle
    start: float
    end: float  # the operation's own end
    until: float = 0.0  # start of the next window
    exit_code: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return self.end - self.start



@dataclass
class Timeline:
    """The run's windows, in order; each lasts until the next one starts."""

    windows: list[Window] = field(default_factory=list)
    origin: float = 0.0  # when the load started

    def mark(self, label: str, kind: str, phase: str, start: float, end: float,
             exit_code: int = 0, **detail: Any) -> Window:
        if self.windows and self.windows[-1].until == 0.0:
            self.windows[-1].until = start
        w = Window(label, kind, phase, start, end, exit_code=exit_code, detail=detail)
        self.windows.append(w)
        return w

    def idle(self, label: str, seconds: float) -> None:
        now = time.monotonic()
        self.mark(label, "idle", "idle", now, now)
        time.sleep(seconds)

    def close(self) -> None:
        """End the last window now."""
        self.windows[-1].until = time.monotonic()


def pace(started: float, window: float, settle: float) -> None:
    """Sleep until the window begun at ``started`` lasts ``window`` s, and ``settle`` s at least."""
    time.sleep(max(settle, started + window - time.monotonic()))


def window_stats(rec: np.ndarray, start: float, until: float) -> dict[str, Any]:
    """Requests that started in [start, until): counts, failure classes, latency (ms)."""
    sel = rec[(rec[:, 0] >= start) & (rec[:, 0] < until)]
    codes = sel[:, 2].astype(np.int64)
    ok = (codes >= 200) & (codes < 300)
    conn = codes < 0
    non2xx = ~ok & ~conn
    answered = sel[codes >= 100, 1] * 1000.0
    classes: dict[str, int] = {}
    for code in np.unique(codes[~ok]):
        classes[outcome_name(int(code))] = int(np.count_nonzero(codes == code))

    def pct(q: float) -> float | None:
        return round(float(np.percentile(answered, q)), 2) if answered.size else None

    return {
        "requests": int(sel.shape[0]),
        "ok": int(np.count_nonzero(ok)),
        "non_2xx": int(np.count_nonzero(non2xx)),
        "conn_errors": int(np.count_nonzero(conn)),
        "failed": int(np.count_nonzero(~ok)),
        "failures": classes,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(float(answered.max()), 2) if answered.size else None,
    }


def merge_stats(recs: dict[str, np.ndarray], spans: Sequence[tuple[float, float]]
                ) -> dict[str, dict[str, Any]]:
    """Per mix, the stats of every request started in any of ``spans``."""
    out: dict[str, dict[str, Any]] = {}
    for name, rec in recs.items():
        mask = np.zeros(rec.shape[0], dtype=bool)
        for a, b in spans:
            mask |= (rec[:, 0] >= a) & (rec[:, 0] < b)
        sub = rec[mask]
        out[name] = window_stats(sub, -math.inf, math.inf)
    return out



def excess_p_value(k_bg: int, k_base: int, n_bg: int, n_base: int) -> float:
    """How likely bg gets ``k_bg`` or more of the ``k_bg + k_base`` failures by chance alone.

    If failures per reload had the same rate for bg (``n_bg`` reloads) and the bare-reload
    baseline (``n_base`` reloads), bg's share of them would be Binomial(k_bg + k_base,
    n_bg / (n_bg + n_base)); this is the one-sided tail P(X >= k_bg).
    """
    n = k_bg + k_base
    if n == 0 or n_bg + n_base == 0 or k_bg == 0:
        return 1.0
    q = n_bg / (n_bg + n_base)
    if q <= 0.0 or q >= 1.0:
        return 1.0 if q >= 1.0 else 0.0

    def log_pmf(i: int) -> float:
        return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                + i * math.log(q) + (n - i) * math.log1p(-q))

    return min(1.0, math.fsum(math.exp(log_pmf(i)) for i in range(k_bg, n + 1)))


def failure_list(recs: dict[str, np.ndarray], windows: Sequence[Window],
                 phases: Sequence[str], limit: int = 500) -> list[dict[str, Any]]:
    """Every failed request of these phases: when (after its window's start) and how."""
    out: list[dict[str, Any]] = []
    for i, w in enumerate(windows, 1):
        if w.phase not in phases:
            continue
        for mix, rec in recs.items():
            sel = rec[(rec[:, 0] >= w.start) & (rec[:, 0] < w.until)]
            codes = sel[:, 2]
            for t0, lat, code in sel[(codes < 200) | (codes >= 300)]:
                out.append({"window": i, "label": w.label, "mix": mix,
                            "after_start_s": round(float(t0 - w.start), 4),
                            "latency_ms": round(float(lat) * 1000, 2),
                            "outcome": outcome_name(int(code))})
    return out[:limit]

