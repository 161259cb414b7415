"""Script builders for `bg logs`: the last lines of a slot's log, and what was appended
since the last look (``-f`` polls, so it works through any :class:`~bluegreen.host.Host`).

A file source reports its size first (``@@size N``) and prints exactly the bytes up to
that size, so nothing is shown twice; a journald source reports its cursor (``-- cursor:``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.shell import q

SIZE_MARK = "@@size "
CURSOR_MARK = "-- cursor: "


@dataclass(frozen=True)
class LogSource:
    path: str = ""  # a log file, or
    unit: str = ""  # a systemd unit whose journal holds the slot's output


def tail_script(src: LogSource, lines: int) -> str:
    n = int(lines)
    if src.unit:
        return f"journalctl -u {q(src.unit)} -n {n} --no-pager --show-cursor 2>&1 || true"
    f = q(src.path)
    return (f"s=$(stat -c %s {f} 2>/dev/null || echo 0); echo \"{SIZE_MARK}$s\"; "
            f"head -c \"$s\" {f} 2>/dev/null | tail -n {n}")


def since_script(src: LogSource, position: str) -> str:
    """What was appended after ``position`` (a byte offset, or a journald cursor)."""
    if src.unit:
        after = f"--after-cursor={q(position)}" if position else "-n 0"
        return f"journalctl -u {q(src.unit)} {after} --no-pager --show-cursor 2>&1 || true"
    f = q(src.path)
    off = int(position or 0)
    # A file shorter than before was truncated or rotated: start again from its beginning.
    return (f"s=$(stat -c %s {f} 2>/dev/null || echo 0); o={off}; "
            f"[ \"$s\" -lt \"$o\" ] && o=0; echo \"{SIZE_MARK}$s\"; "
            f"tail -c +$((o+1)) {f} 2>/dev/null | head -c $((s-o))")


def split_output(src: LogSource, stdout: str, position: str) -> tuple[str, str]:
    """(text, new position) from the output of either script."""
    if src.unit:
        text, cursor = [], position
        for line in stdout.splitlines(keepends=True):
            if line.startswith(CURSOR_MARK):
                cursor = line[len(CURSOR_MARK):].strip()
            elif not line.startswith("-- No entries --"):
                text.append(line)
        return "".join(text), cursor
    head, _, rest = stdout.partition("\n")
    if not head.startswith(SIZE_MARK):
        return stdout, position
    return rest, head[len(SIZE_MARK):].strip()
