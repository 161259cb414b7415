"""The retire of a slot that may hold long-lived connections (WebSockets, LiveView,
server-sent events): what bg waits for before it stops the old slot after a switch.

Built here as shell for the finish step (and the next start of a slot whose retire was
interrupted); :mod:`bluegreen.facts.drain` finds and drains nginx's old workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.facts.drain import (
    _TICK,
    LEFT_MARK,
    Drain,
    _quit_old_script,
    drain_noted_script,
    noted,
    read_drain,
)
from bluegreen.shell import q

# After a switch, nginx's old workers hold two kinds of connection to the old slot: plain
# requests in flight, which end by themselves, and upgraded ones (WebSockets, LiveView),
# which never do: each keeps its worker, and so the old slot, alive until drain_timeout.
# nginx does not say which proxied connection was upgraded, but it does say (through
# /proc) which of an old worker's client connections has reached the slot: one that has
# not (a POST whose body is still arriving) must not find the slot stopped. So, after the
# switch, the retire waits for the old workers up to ``[switch] socket_grace``; if they
# still run then, and every connection they hold has reached the old slot, the old slot is
# asked to shut down (its own SIGTERM: Phoenix, Bandit, Cowboy, gunicorn, uvicorn, aiohttp
# finish the requests in flight and close sockets with 1001, going away). Clients then
# reconnect through nginx's new workers to the new slot. The runner's stop bounds that
# (``[app] stop_timeout``, then SIGKILL); the old workers are still waited for, up to
# drain_timeout in all.
OPEN_MARK = "open:"  # open: <to the slot> <not yet at the slot> <ms after the switch>
STOP_MARK = "stop:"  # stop: <a line of the runner's output, e.g. "killed after 30s">
UNSEEN = "-"  # the old workers' sockets cannot be read (another user's): counted globally


def _count_script(port: int) -> str:
    """Shell setting, from the old workers in ``$left``: ``$up``, their established
    connections to ``port``, and ``$wait``, how many of their client connections (local
    port one this host listens on) have no upstream connection: requests nginx is still
    reading. ``$wait`` is ``-`` when their sockets cannot be read (another user's workers);
    ``$up`` then counts every established connection to ``port``.

    ``ss`` (netlink: the kernel filters by state) rather than /proc/net/tcp, which lists
    every TIME_WAIT socket too: 20,000 lines on a busy host, seconds to read."""
    return f"""ino=; wait={UNSEEN}
for p in $left; do
  l=$(ls -l /proc/$p/fd 2>/dev/null) || {{ ino=; break; }}
  ino="$ino $(printf '%s\\n' "$l" | sed -n 's/.*socket:\\[\\([0-9]*\\)\\].*/\\1/p' | tr '\\n' ' ')"
done
if command -v ss >/dev/null 2>&1; then
  bg_p={int(port)}
  conns=$( {{ ss -Htln | awk '{{ print "L", $4 }}'
    ss -Htne state established | awk '{{ i = ""; for (k = 5; k <= NF; k++)
      if ($k ~ /^ino:/) i = substr($k, 5); print "E", $3, $4, i }}'; }} 2>/dev/null)
else
  bg_p={int(port):04X}
  conns=$(awk 'FNR > 1 {{ split($2, l, ":"); split($3, r, ":")
      if ($4 == "0A") print "L", ":" l[2]
      else if ($4 == "01") print "E", ":" l[2], ":" r[2], $10 }}' \\
    /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -r)  # the L(isten) lines first
fi
# shellcheck disable=SC2046 # three numbers, split into $1 $2 $3
set -- $(printf '%s\\n' "$conns" | awk -v p="$bg_p" -v inos="$ino" '
    BEGIN {{ n = split(inos, a, " "); for (i = 1; i <= n; i++) mine[a[i]] = 1 }}
    $1 == "L" {{ sub(/.*:/, "", $2); listen[$2] = 1; next }}
    $1 == "E" {{ lp = $2; sub(/.*:/, "", lp); rp = $3; sub(/.*:/, "", rp)
      if (n == 0) {{ if (rp == p) up++; next }}
      if (!($4 in mine)) next
      if (rp == p) up++
      if (lp in listen) client++; else upstream++ }}
    END {{ print up + 0, client - upstream, n }}')
up=${{1:-0}}
if [ "${{3:-0}}" != 0 ]; then wait=${{2:-0}}; case "$wait" in -*) wait=0;; esac; fi
"""


def retire_drain_script(pids: list[int] | None, timeout: float, *, port: int, grace: float,
                        stop: str, master: str = "") -> str:
    """:func:`drain_noted_script` for a slot about to stop, that does not wait
    ``timeout`` for connections that never end: past ``grace``, once every connection the
    old workers hold has reached the old slot, it runs ``stop`` (the runner's graceful
    stop of that slot) and goes on waiting for the workers. Prints ``open: UP WAIT MS``
    and the stop's output as ``stop: ...`` lines when it stopped early, then ``drained``
    or ``drain-timeout``. ``pids`` None: nginx's workers that are shutting down, found
    under the master that the shell ``master`` (:func:`master_discovery_script`) finds."""
    if pids is None:
        # The workers an earlier reload left (its retire was interrupted): the children of
        # nginx's master ($master, set by ``master`` shell) that are shutting down; without
        # any, the slot's port is watched as before.
        return (master + "\nbg_old=\n"
                'kids=; { read -r kids < "/proc/$master/task/$master/children"; } 2>/dev/null\n'
                "for k in $kids; do\n"
                '  c=; { read -r c < "/proc/$k/cmdline"; } 2>/dev/null\n'
                '  case "$c" in *"shutting down"*) bg_old="$bg_old $k";; esac\n'
                "done\n"
                'if [ -n "$bg_old" ]; then\n'
                + _retire_loop(timeout, port=port, grace=grace, stop=stop)
                + "\nelse\n" + drain_noted_script([], timeout, port=port) + "\nfi")
    if not pids:
        return drain_noted_script([], timeout, port=port)
    return (f'bg_old="{" ".join(str(int(p)) for p in pids)}"\n'
            + _retire_loop(timeout, port=port, grace=grace, stop=stop))


def _retire_loop(timeout: float, *, port: int, grace: float, stop: str) -> str:
    """The loop of :func:`retire_drain_script` over the workers in ``$bg_old``."""
    # Time from /proc/uptime (centiseconds, a builtin read): the counting takes time too.
    return noted(f"""{_quit_old_script()}i=0; stopped=
bg_now() {{ read -r t _ < /proc/uptime; t=${{t%.*}}${{t#*.}}; now=$((t * 10 - t0)); }}
t0=0; bg_now; t0=$now; now=0
while :; do
  left=""
  for p in $bg_old; do
    s=; {{ read -r s < /proc/$p/stat; }} 2>/dev/null
    case "$s" in *"(nginx"*") Z "*|*"(nginx"*") X "*) continue;; *"(nginx"*) left="$left $p";; esac
  done
  [ -z "$left" ] && exit 0
  bg_now
  if [ -z "$stopped" ] && [ $now -ge {int(grace * 1000)} ] && [ $((i % 5)) = 0 ]; then
{_count_script(port)}    if [ "$wait" = {UNSEEN} ] || [ "$wait" = 0 ]; then
      echo "{OPEN_MARK} $up $wait $now"
      ( {stop.strip()}
      ) 2>&1 | sed 's/^/{STOP_MARK} /'
      stopped=$i
    fi
  fi
  [ $now -ge {int(timeout * 1000)} ] && {{ echo "{LEFT_MARK}:$left"; exit 1; }}
  sleep {_TICK}; i=$((i+1))
done""")


KILLED = "killed after"  # the runners' stop scripts: SIGTERM was not enough (stop_pid_script)
LEFT_RUNNING = "new slot not running: old slot left running"


def stop_while_alive(alive: str, stop: str) -> str:
    """``stop`` (the old slot's graceful stop) only while ``alive`` (the new slot's check)
    succeeds; else the old slot keeps running and the output says so."""
    return f"if (\n{alive}\n); then\n{stop}\nelse echo {q(LEFT_RUNNING)}; fi"


@dataclass(frozen=True)
class Retire:
    """What a finish's retire printed."""

    # (connections to the slot, not yet there, seconds after the switch) when it asked the
    # old slot to stop before its workers exited; None when it did not stop early
    opened: tuple[int, str, float] | None
    killed: list[str]  # the stop's "killed after ..." lines
    left_running: bool  # the new slot was not running: the old one was not stopped
    drain: Drain
    killed_any: bool  # any stop of this script killed what outlived stop_timeout


def read_retire(stdout: str) -> Retire:
    """:func:`retire_drain_script`'s output (with the finish's stop after it)."""
    opened: tuple[int, str, float] | None = None
    stopped: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(OPEN_MARK):
            parts = line[len(OPEN_MARK):].split()
            if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
                opened = (int(parts[0]), parts[1], int(parts[2]) / 1000)
        elif line.startswith(STOP_MARK) and line[len(STOP_MARK):].strip():
            stopped.append(line[len(STOP_MARK):].strip())
    return Retire(opened, [ln for ln in stopped if ln.startswith(KILLED)],
                  any(ln.startswith(LEFT_RUNNING) for ln in stopped), read_drain(stdout),
                  KILLED in stdout)
