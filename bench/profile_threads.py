"""cProfile of every thread of `bg`, each timed by its own CPU clock: cProfile alone sees
the main thread only, by the clock on the wall, and a fleet's per-host work runs on worker
and paramiko transport threads (a ``Thread`` subclass with a ``run`` of its own, so the hook
wraps ``_bootstrap_inner``, which calls every thread's ``run``). The threads' stats, merged,
go to OUT.
Usage: `python bench/profile_threads.py OUT bg-args...`."""

from __future__ import annotations

import atexit
import cProfile
import pstats
import sys
import threading
import time
from typing import Any

_profiles: list[cProfile.Profile] = []  # of threads that ended: disabled by their own thread
_lock = threading.Lock()


def _patch() -> None:
    inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled(self: threading.Thread) -> Any:
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        try:
            return inner(self)
        finally:
            prof.disable()
            with _lock:
                _profiles.append(prof)

    threading.Thread._bootstrap_inner = profiled  # type: ignore[attr-defined]


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    _patch()
    main_prof = cProfile.Profile(time.thread_time)

    def dump() -> None:
        """A profile disabled from another thread closes its open calls by the caller's
        clock (a transport thread blocked in recv would get the main thread's CPU time), so
        daemon threads still running (SSH transports closing) get a moment to end, and the
        few that do not are left out, said on stderr."""
        main_prof.disable()
        deadline = time.monotonic() + 2
        for thread in threading.enumerate():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        live = threading.active_count() - 1
        with _lock:
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

    main_prof.enable()
    bg_main()


if __name__ == "__main__":
    main()
