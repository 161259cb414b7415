"""What a running operation changed so far (what an undo must take back), and failpoints."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field

from bluegreen.errors import BgError
from bluegreen.sites import Block


@dataclass
class Progress:
    """What the running operation changed so far: what an undo must take back."""

    started: dict[str, str] = field(default_factory=dict)  # host -> slot booted, not live
    staged: set[str] = field(default_factory=set)  # hosts whose new upstream passed the test
    # host -> nginx's server blocks, as the test of its new upstream printed them
    layouts: dict[str, list[Block] | None] = field(default_factory=dict)
    switched: bool = False
    old_workers: dict[str, list[int]] = field(default_factory=dict)
    # host -> nginx workers a restoring reload left behind, still proxying to the new slot
    # (drained before an undo stops it); None until a switch was undone with a reload
    abandoned: dict[str, list[int]] | None = None
    retiring: dict[str, str] = field(default_factory=dict)  # host -> old slot being retired


class FailpointFn:
    """Stop at a named step boundary when ``BG_FAILPOINT`` names it (tests only):
    ``<boundary>[:kill|term|error|exec:CMD]`` — SIGKILL or SIGTERM this process, raise, or
    run CMD on the controller (e.g. to kill the new slot right after the switch)."""

    def __init__(self, spec: str) -> None:
        name, _, how = spec.partition(":")
        self.name, self.how = name, how or "kill"

    def __call__(self, boundary: str) -> None:
        if boundary != self.name:
            return
        if self.how.startswith("exec:"):
            subprocess.run(["/bin/sh", "-c", self.how[len("exec:"):]], check=False,
                           timeout=60)
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "term":
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise BgError(f"failpoint {boundary} reached")
