"""Reconcile what a host recorded with what it really serves (pure).

The live upstream file is the truth about which slot nginx sends traffic to; the slot
symlinks are the truth about which release each slot runs. When ``state.json`` disagrees
(a controller killed between "nginx switched" and "state recorded", a hand edit), the
observed facts win and a note says what was corrected. A backup upstream file means a
switch never finished: it is undone (the previous file restored) before anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bluegreen.config import SLOTS, Config
from bluegreen.facts.observe import Observation
from bluegreen.shell import safe_token
from bluegreen.state import HostState


@dataclass(frozen=True)
class Reconciled:
    state: HostState
    notes: tuple[str, ...]
    undo_switch: bool  # restore the backup upstream file and reload nginx first


def served_slot(config: Config, upstream: str | None) -> str | None:
    """The slot whose port the upstream file's ``server`` lines name, when exactly one."""
    if not upstream:
        return None
    ports = {int(p) for p in re.findall(r"^\s*server\s+\S*?:(\d+)\b", upstream, re.M)}
    hits = [slot for slot in SLOTS if config.slots[slot] in ports]
    return hits[0] if len(hits) == 1 else None


def reconcile(config: Config, recorded: HostState, obs: Observation) -> Reconciled:
    notes: list[str] = []
    undo = obs.backup is not None
    # After an undo, nginx serves what the backup says.
    upstream = obs.backup if undo else obs.upstream
    if undo:
        notes.append("an interrupted switch left its backup upstream file: restoring it")
    versions = dict(recorded.versions)
    for slot in SLOTS:
        target = obs.links.get(slot)
        if target is None:
            continue
        try:
            linked = safe_token(target, "release")
        except ValueError:
            notes.append(f"slot {slot} points at {target!r}, not a release bg made; ignored")
            continue
        if linked != versions.get(slot):
            # A stopped idle slot left pointing at a release that never went live (a
            # failed or interrupted deploy) is no inconsistency: take the link quietly.
            if obs.alive.get(slot) or slot == recorded.live:
                notes.append(f"{slot} runs {linked} (state said {versions.get(slot) or '-'})")
            versions[slot] = linked
    state = replace(recorded, versions=versions)
    served = served_slot(config, upstream)
    if served is not None and recorded.live is not None and served != recorded.live:
        notes.append(f"nginx sends traffic to {served} but state said {recorded.live}:"
                     f" taking {served} as live")
        state = replace(state, live=served, previous=recorded.live_version
                        if recorded.live_version != state.version_of(served)
                        else recorded.previous)
    if served is not None and recorded.live is None and state.version_of(served) is not None \
            and obs.alive.get(served):
        notes.append(f"nginx sends traffic to {served} ({state.version_of(served)}) but no"
                     " state was recorded: taking it as live")
        state = replace(state, live=served)
    return Reconciled(state=state, notes=tuple(notes), undo_switch=undo)
