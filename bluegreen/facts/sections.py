"""The one stdout protocol of bg's host scripts: named sections.

A script prints ``<marker> <name>`` on a line of its own before each section; the lines up
to the next header are that section's body. The marker is random per run
(:func:`new_marker`), so no file, process title or nginx dump a script prints can fake
a header.
"""

from __future__ import annotations

import os

from bluegreen.shell import q

Sections = dict[str, list[str]]


def new_marker() -> str:
    """A section marker no file on the host can contain by accident."""
    return "@@bg-" + os.urandom(8).hex()


def header(marker: str, name: str) -> str:
    """Shell that starts section ``name``."""
    return f"echo {q(marker + ' ' + name)}"


def split(stdout: str, marker: str) -> Sections:
    """Each section's lines, by name (a section printed twice: its lines joined)."""
    out: Sections = {}
    current: list[str] | None = None
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the output is no empty line of the last section
    prefix = marker + " "
    for line in lines:
        if line.startswith(prefix) and line[len(prefix):].strip():
            current = out.setdefault(line[len(prefix):].strip(), [])
        elif current is not None:
            current.append(line)
    return out
