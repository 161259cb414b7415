"""TCP ports on a host: the script that refuses a taken slot port, and the ports other bg
apps on the same nginx use (read from the upstream files bg wrote for them), so `bg init`
picks ports no other app uses and `bg check` names the app a clashing port belongs to."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bluegreen.shell import q

# The line every upstream file bg renders has (templates/upstream.conf.j2), as grep -E sees it.
BG_LINE = "^# app=[^ ]* live="
FIRST_BLUE = 4001
BLOCK = 10  # apps get slot ports 4001/4002, 4011/4012, ... and probe ports 10000 above


def port_free_script(port: int, exit_code: int, *, bg_dir: str = "") -> str:
    """Exit ``exit_code`` (printing the listener) when something listens on ``port``;
    when an upstream file of another bg app in ``bg_dir`` names the port, say which."""
    port = int(port)
    sport = q(f"sport = :{port}")
    owner = ""
    if bg_dir:
        owner = f"""
  for f in {q(bg_dir)}/*.conf; do
    [ -f "$f" ] && grep -q {q(BG_LINE)} "$f" 2>/dev/null || continue
    if grep -qE {q(f"(:|,){port}([^0-9]|$)")} "$f"; then
      echo "it is a port of another bg app: $f says $(grep -o 'app=[^ ]*' "$f" | head -n 1)"
    fi
  done"""
    return f"""if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn {sport})" ]; then
  echo "port {port} is still in use by a process bg did not start:"
  ss -Hltnp {sport} || true{owner}
  exit {int(exit_code)}
fi"""


@dataclass(frozen=True)
class BgApp:
    """Another app's upstream file, as bg wrote it."""

    app: str
    file: str
    ports: frozenset[int] = field(default_factory=frozenset)  # slots, servers, probe server
    probe: int | None = None


def read_bg_file(path: str, text: str) -> BgApp | None:
    """What an upstream file bg wrote says about its app (its ``# app=NAME live=`` line);
    None for any other file."""
    app = re.search(r"^# app=(\S+) live=", text, re.M)
    if app is None:
        return None
    ports: set[int] = set()
    slots = re.search(r"^# slots=(\d+),(\d+)", text, re.M)
    if slots:
        ports.update(int(p) for p in slots.groups())
    ports.update(int(p) for p in re.findall(r"(?:^|[\s{;])server\s+\S*?:(\d+)\b", text))
    listens = [int(p) for p in re.findall(r"(?:^|[\s{;])listen\s+\S*?:(\d+)\s*;", text)]
    ports.update(listens)
    return BgApp(app.group(1), path, frozenset(ports), listens[0] if listens else None)


def bg_apps(files: Iterable[Path]) -> list[BgApp]:
    """The bg apps among ``files`` (unreadable files are not bg's)."""
    found = []
    for f in sorted(files):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        app = read_bg_file(str(f), text)
        if app is not None:
            found.append(app)
    return found


def bg_files_script(directory: str) -> str:
    """Print each upstream file bg wrote in ``directory`` (``== PATH``, then the lines
    :func:`read_bg_file` reads): other apps' files, readable without root."""
    return f"""for f in {q(directory)}/*.conf; do
  [ -f "$f" ] && grep -q {q(BG_LINE)} "$f" 2>/dev/null || continue
  echo "== $f"; grep -E '^# (app|slots)=|(^|[[:space:]{{;])(server|listen)[[:space:]]' "$f"
done"""


def parse_bg_files(lines: list[str]) -> list[BgApp]:
    """The apps in :func:`bg_files_script`'s output."""
    found: list[BgApp] = []
    path, body = "", list[str]()
    for line in [*lines, "== "]:
        if line.startswith("== "):
            app = read_bg_file(path, "\n".join(body)) if path else None
            if app is not None:
                found.append(app)
            path, body = line[3:], []
        else:
            body.append(line)
    return found


def listening_ports(proc: Path = Path("/proc/net")) -> set[int]:
    """TCP ports something listens on here (state 0A in /proc/net/tcp and tcp6)."""
    ports = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pick_slots(used: set[int]) -> tuple[int, int]:
    """The first block of slot ports (4001/4002, 4011/4012, ...) that nothing in ``used``
    touches, its probe port block (blue + 10000, as the config derives it) included. A
    block is skipped whole, so an app whose upstream file names only its live port keeps
    its other slot. Probe ports stay below the ephemeral range (32768)."""
    for blue in range(FIRST_BLUE, 22768 - BLOCK, BLOCK):
        probe = blue + 10000
        if not any(blue <= p < blue + BLOCK or probe <= p < probe + BLOCK for p in used):
            return blue, blue + 1
    raise ValueError("no free block of slot ports below the ephemeral range")
