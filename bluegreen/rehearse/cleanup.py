"""What a rehearsal started on this machine, found and stopped by where it runs from; SIGTERM
handled as Ctrl-C, so that happens on either."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType


def kill_under(path: Path, wait: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL, every process of ours that runs from under ``path``."""
    def pids() -> list[int]:
        found = []
        prefix = str(path.resolve()) + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                links = []
                for link in ("cwd", "exe"):
                    with contextlib.suppress(OSError):
                        links.append(os.readlink(f"/proc/{entry}/{link}") + "/")
                if prefix in cmd or any(lk.startswith(prefix) for lk in links):
                    found.append(int(entry))
        return found

    deadline = time.monotonic() + wait
    sig = signal.SIGTERM
    while (left := pids()):
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                return [f"processes under {path} survived SIGKILL: {left}"]
            sig, deadline = signal.SIGKILL, time.monotonic() + wait
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(0.1)
    return []


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: clean up, then exit 130."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt, so the rehearsal cleans up as on Ctrl-C."""
    def raise_it(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_it)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
