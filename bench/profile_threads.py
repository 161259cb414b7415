"""cProfile of every thread of `bg`, each timed by its own CPU clock: cProfile alone sees
the main thread only, by the clock on the wall, and a fleet's per-host work runs on worker
and paramiko transport threads. The threads' stats, merged, go to OUT.
Usage: `python bench/profile_threads.py OUT bg-args...`."""

from __future__ import annotations

import atexit
import cProfile
import pstats
import sys
import threading
import time
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _patch() -> None:
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> Any:
        prof = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append(prof)
        prof.enable()
        try:
            return run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled  # type: ignore[method-assign]


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    _patch()
    main_prof = cProfile.Profile(time.thread_time)

    def dump() -> None:
        main_prof.disable()
        with _lock:
            stats = pstats.Stats(main_prof)
            for prof in _profiles:
                prof.disable()
                stats.add(prof)
        stats.dump_stats(out)

    atexit.register(dump)
    sys.argv = ["bg", *args]
    from bluegreen.cli import main as bg_main

    main_prof.enable()
    bg_main()


if __name__ == "__main__":
    main()
