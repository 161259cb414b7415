"""Script builders about TCP ports on a host."""

from __future__ import annotations

from bluegreen.shell import q


def port_free_script(port: int, exit_code: int) -> str:
    """Exit ``exit_code`` (printing the listener) when something listens on ``port``."""
    port = int(port)
    sport = q(f"sport = :{port}")
    return f"""if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn {sport})" ]; then
  echo "port {port} is still in use by a process bg did not start:"
  ss -Hltnp {sport} || true
  exit {int(exit_code)}
fi"""
