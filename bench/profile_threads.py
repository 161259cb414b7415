"""cProfile of every thread of `bg`, each timed by its own CPU clock: cProfile alone sees
the main thread only, by the clock on the wall, and a fleet's per-host work runs on worker
and paramiko transport threads (a ``Thread`` subclass with a ``run`` of its own, so the hook
wraps ``_bootstrap_inner``, which calls every thread's ``run``). The threads' stats, merged,
go to OUT.

With an OUT ending in ``.json``, no cProfile (which inflates Python-heavy code several
times over): each thread's own CPU time, summed by kind (``transport``: paramiko's, one per
host; ``bg-host``: the per-host workers; ``main``; others by name), the process's, and the
process's CPU during each step that runs on every host (``Context.each``, by its name).
Usage: `python bench/profile_threads.py OUT bg-args...`."""

from __future__ import annotations

import atexit
import cProfile
import json
import pstats
import re
import resource
import sys
import threading
import time
from collections import defaultdict
from typing import Any

_profiles: list[cProfile.Profile] = []  # of threads that ended: disabled by their own thread
_cpu: defaultdict[str, float] = defaultdict(float)  # CPU seconds of ended threads, by kind
_steps: defaultdict[str, float] = defaultdict(float)  # process CPU seconds in each step
_lock = threading.Lock()


def _kind(thread: threading.Thread) -> str:
    if type(thread).__name__ == "Transport":
        return "transport"
    name = thread.name
    if name.startswith("bg-feed"):  # bg-feed-<host>: a release's stdin
        return "bg-feed"
    return re.sub(r"[-_]\d+(_\d+)?$", "", name) or "thread"


def _patch(profile: bool) -> None:
    inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled(self: threading.Thread) -> Any:
        prof = cProfile.Profile(time.thread_time) if profile else None
        if prof is not None:
            prof.enable()
        try:
            return inner(self)
        finally:
            spent = time.thread_time()
            with _lock:
                _cpu[_kind(self)] += spent
                if prof is not None:
                    prof.disable()
                    _profiles.append(prof)

    threading.Thread._bootstrap_inner = profiled  # type: ignore[attr-defined]


def _time_steps() -> None:
    from bluegreen.ops import core

    each = core.Context.each

    def timed(self: Any, fn: Any, what: str, hosts: Any = None) -> Any:
        started = time.process_time()
        try:
            return each(self, fn, what, hosts)
        finally:
            _steps[what] += time.process_time() - started

    core.Context.each = timed  # type: ignore[method-assign]


def _wait_for_threads() -> int:
    """Daemon threads still running (SSH transports closing) get a moment to end: a profile
    disabled from another thread closes its open calls by the caller's clock (a transport
    blocked in recv would get the main thread's CPU time). Returns how many did not end."""
    deadline = time.monotonic() + 2
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return threading.active_count() - 1


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    by_thread = out.endswith(".json")
    _patch(profile=not by_thread)
    main_prof = cProfile.Profile(time.thread_time)

    def dump() -> None:
        main_prof.disable()
        main_cpu = time.thread_time()
        live = _wait_for_threads()
        with _lock:
            if by_thread:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                with open(out, "w") as fh:
                    json.dump({"process": usage.ru_utime + usage.ru_stime,
                               "threads": {"main": main_cpu, **_cpu}, "steps": _steps,
                               "threads_left_out": live}, fh, indent=2)
            else:
                stats = pstats.Stats(main_prof)
                for prof in _profiles:
                    stats.add(prof)
                stats.dump_stats(out)
        if live:
            print(f"profile_threads: {live} thread(s) still running, left out",
                  file=sys.stderr)

    atexit.register(dump)
    sys.argv = ["bg", *args]
    from bluegreen.cli import main as bg_main

    if by_thread:
        _time_steps()
    else:
        main_prof.enable()
    bg_main()


if __name__ == "__main__":
    main()
