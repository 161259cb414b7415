"""Draining nginx after a reload: find nginx's master, list its workers, wait for the old
ones (or, without a list, for the old slot's port to go quiet).

Built here as shell for the executor to run on a host (reload, then drain before the old
slot stops); :mod:`bluegreen.nginx` re-exports these names.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from bluegreen.config import Config
from bluegreen.shell import join, q

# After a reload, nginx's old workers keep proxying their in-flight requests to the old
# slot; stopping that slot early turns them into 502s. So bg finds nginx's master, notes
# its workers before the reload and waits for them to exit. The master is found by the
# first method that works, and the method is reported (``-v``, ``bg check``):
#
# 1. ``[nginx] pid_file`` when it names a live nginx master (of this config);
# 2. the ``pid`` directive nginx itself reports (``nginx -T`` with the test command's
#    ``-p``/``-c``), relative to nginx's prefix, else its compiled ``--pid-path``;
# 3. the process tree: the one ``nginx: master process`` of this config in this mount
#    namespace.
#
# When none works, the drain waits until the old slot's port has no established
# connection left (or the timeout passed), instead of skipping without a word.

MASTER_MARK = "master:"
_TICK = 0.02  # seconds between two looks: a drain ends at most this long after the workers
WORKERS_MARK = "old-workers:"
_RELOAD_WAITS = 50  # looks (``_TICK`` apart) for nginx's new workers after a reload
METHOD_PID_FILE = "pid_file"
METHOD_NGINX_T = "nginx -T"
METHOD_PROCESS_TREE = "process tree"
METHOD_NONE = "none"


@dataclass(frozen=True)
class NginxInvocation:
    """How the user's commands run nginx: the argv up to the binary and its -p/-c options."""

    argv: tuple[str, ...]
    prefix: str | None
    conf: str | None


_WRAPPERS = frozenset({"sudo", "doas", "env", "exec", "nice", "ionice", "command"})


def _is_nginx(word: str) -> bool:
    base = posixpath.basename(word)
    return base == "nginx" or base.startswith("nginx-")


def invocation(config: Config) -> NginxInvocation:
    """Read the binary and ``-p``/``-c`` from ``test_command`` (else ``reload_command``)."""
    for command in (config.nginx.test_command, config.nginx.reload_command):
        try:
            words = shlex.split(command)
            # `sh -c '...'` (or `sudo sh -c`): look inside the quoted command
            for i, w in enumerate(words[:-2]):
                if posixpath.basename(w) in ("sh", "bash") and words[i + 1] == "-c":
                    words = shlex.split(words[i + 2])
                    break
        except ValueError:
            continue
        at = next((i for i, w in enumerate(words) if _is_nginx(w)), None)
        # `systemctl reload nginx` names a unit, not the binary: only wrappers may come first
        if at is None or not all(w in _WRAPPERS or "=" in w or w.startswith("-")
                                 for w in words[:at]):
            continue
        opts: dict[str, str] = {}
        rest = words[at + 1:]
        for i, w in enumerate(rest):
            if w in ("-p", "-c") and i + 1 < len(rest):
                opts[w] = rest[i + 1]
            elif w[:2] in ("-p", "-c") and len(w) > 2:
                opts[w[:2]] = w[2:]
        return NginxInvocation(tuple(words[: at + 1]), opts.get("-p"), opts.get("-c"))
    return NginxInvocation(("nginx",), None, None)


# `pid /run/nginx.pid;` (quoted or not) in `nginx -T` output: the path.
_PID_DIRECTIVE = (r's/^[[:space:]]*pid[[:space:]][[:space:]]*'
                  r'"\{0,1\}\([^";]*\)"\{0,1\}[[:space:]]*;.*/\1/p')


def master_discovery_script(config: Config) -> str:
    """Shell that sets ``$master`` to nginx's master pid and prints ``master: PID METHOD``.

    Prints ``master: - none`` when no method found it. Read-only: safe for ``bg check``.
    """
    inv = invocation(config)
    nginx_t = join([*inv.argv,
                    *(["-p", inv.prefix] if inv.prefix else []),
                    *(["-c", inv.conf] if inv.conf else []), "-T"])
    nginx_v = join([*inv.argv, "-V"])
    conf_match = q(inv.conf or "")
    prefix = q(inv.prefix.rstrip("/") + "/" if inv.prefix else "")
    return f"""bg_is_master() {{
  case "$1" in ''|*[!0-9]*) return 1;; esac
  c=$(tr '\\0' ' ' < /proc/$1/cmdline 2>/dev/null) || return 1
  case "$c" in "nginx: master process"*) ;; *) return 1;; esac
  [ -z {conf_match} ] && return 0
  case "$c" in *{conf_match}*) return 0;; esac
  return 1
}}
master=""; method={q(METHOD_NONE)}; where=""
p=$(head -c 32 {q(config.nginx.pid_file)} 2>/dev/null | tr -dc '0-9')
if bg_is_master "$p"; then master=$p; method={q(METHOD_PID_FILE)}; where={q(config.nginx.pid_file)}
else
  f=$({nginx_t} 2>/dev/null | sed -n {q(_PID_DIRECTIVE)} | tail -n 1)
  v=$({nginx_v} 2>&1)
  if [ -z "$f" ]; then f=$(printf '%s\\n' "$v" | tr ' ' '\\n' | sed -n 's/^--pid-path=//p'); fi
  case "$f" in
    /*) ;;
    ?*) pre={prefix}
        [ -z "$pre" ] && pre="$(printf '%s\\n' "$v" | tr ' ' '\\n' | sed -n 's/^--prefix=//p')/"
        f="$pre$f";;
  esac
  p=$(head -c 32 "$f" 2>/dev/null | tr -dc '0-9')
  if [ -n "$f" ] && bg_is_master "$p"; then master=$p; method={q(METHOD_NGINX_T)}; where=$f
  else
    ns=$(readlink /proc/self/ns/mnt); found=""; n=0
    for d in /proc/[0-9]*; do
      p=${{d#/proc/}}
      bg_is_master "$p" || continue
      [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
      if [ -z {conf_match} ]; then
        case "$(tr '\\0' ' ' < "$d/cmdline")" in *" -c "*) continue;; esac
      fi
      found=$p; n=$((n+1))
    done
    if [ "$n" = 1 ]; then master=$found; method={q(METHOD_PROCESS_TREE)}; fi
  fi
fi
echo "{MASTER_MARK} ${{master:--}} $method${{where:+ $where}}"
"""


def _children_script() -> str:
    """Shell printing the pids whose parent is ``$master`` (no ``ps`` needed): the kernel's
    list of the master's children, else a scan of /proc with shell builtins only."""
    return """old=""
if [ -n "$master" ]; then
  if [ -r "/proc/$master/task/$master/children" ]; then
    { read -r old < "/proc/$master/task/$master/children"; } 2>/dev/null || :
  else
    for d in /proc/[0-9]*; do
      { read -r s < "$d/stat"; } 2>/dev/null || continue
      s=${s##*) }
      set -- $s
      [ "$2" = "$master" ] && old="$old ${d#/proc/}"
    done
  fi
fi
"""


def reload_script(config: Config) -> str:
    """Reload, printing the master found (and how) and the pids of the workers that served
    before it (to drain later)."""
    return (
        master_discovery_script(config)
        + _children_script()
        + f'echo "{WORKERS_MARK}$old"\n'
        + config.nginx.reload_command
        # the old workers stop accepting as soon as the new ones run (not 100 ms later):
        # the confirmation through nginx's own ports then needs no retry
        + f'\nbg_rc=$?\nif [ $bg_rc = 0 ]; then\nbg_old=$old\n{_quit_old_script(_RELOAD_WAITS)}fi\n'
        + "(exit $bg_rc)\n"
    )


def parse_master(stdout: str) -> tuple[int | None, str]:
    """``(pid, method)`` from the output of :func:`master_discovery_script`.

    ``method`` is ``pid_file <path>``, ``nginx -T <path>``, ``process tree`` or ``none``.
    """
    for line in stdout.splitlines():
        if line.startswith(MASTER_MARK):
            pid, _, method = line[len(MASTER_MARK):].strip().partition(" ")
            return (int(pid) if pid.isdigit() else None), (method.strip() or METHOD_NONE)
    return None, METHOD_NONE


def method_name(method: str) -> str:
    """The method of a :func:`parse_master` result without its path (for summaries)."""
    for name in (METHOD_PID_FILE, METHOD_NGINX_T, METHOD_PROCESS_TREE):
        if method.startswith(name):
            return name
    return METHOD_NONE


def parse_old_workers(stdout: str) -> list[int]:
    for line in stdout.splitlines():
        if line.startswith(WORKERS_MARK):
            return [int(p) for p in line.split(":", 1)[1].split() if p.isdigit()]
    return []


def _quit_old_script(waits: int = 0) -> str:
    """Shell that tells nginx's old workers, the pids in ``$bg_old``, to shut down
    gracefully (SIGQUIT) once a worker of a newer generation runs; with ``waits``, it looks
    for one that many times, ``_TICK`` apart (a reload is asynchronous).

    After a reload nginx's master starts the new workers, sleeps 100 ms (``ngx_msleep(100)``
    "allow new processes to start") and only then sends the old ones SIGQUIT: until then
    they keep accepting, so a switch that promises new requests reach the new slot, or a
    drain that waits for them to exit, waits those 100 ms. SIGQUIT is the master's own
    graceful shutdown: a worker stops accepting at once and finishes its requests; the
    master's later SIGQUIT is a no-op and it marks them exiting before reaping, so none is
    respawned. Sent only when a newer worker (a child of the same master, not in
    ``$bg_old``, titled ``nginx: worker process``: past its init, accepting) runs, and only
    to processes so titled: never to the only workers there are (a reload nginx rejected)
    nor a binary-upgrade master. Without /proc's children list it sends nothing: nginx's
    master does it 100 ms later.
    """
    return f"""bg_accepting() {{
  c=; {{ read -r c < /proc/$1/cmdline; }} 2>/dev/null
  case "$c" in *"shutting down"*) return 1;; "nginx: worker process"*) return 0;; esac
  return 1
}}
m=
for p in $bg_old; do
  s=; {{ read -r s < /proc/$p/stat; }} 2>/dev/null
  case "$s" in *"(nginx) "[!ZX]" "*) s=${{s##*) }}; set -- $s; m=$2; break;; esac
done
newer=; i=0
while [ -n "$m" ]; do
  kids=; {{ read -r kids < /proc/$m/task/$m/children; }} 2>/dev/null
  for k in $kids; do
    case " $bg_old " in *" $k "*) continue;; esac
    if bg_accepting "$k"; then newer=$k; break; fi
  done
  [ -n "$newer" ] || [ $i -ge {int(waits)} ] && break
  sleep {_TICK}; i=$((i+1))
done
if [ -n "$newer" ]; then
  for p in $bg_old; do
    if bg_accepting "$p"; then kill -QUIT "$p" 2>/dev/null; fi
  done
fi
"""


def drain_script(pids: list[int], timeout: float, *, port: int | None = None,
                 accepting_only: bool = False) -> str:
    """Wait (on the host) until nginx's old workers exited; exit 1 on timeout.

    Without a worker list, wait until no established TCP connection uses ``port`` (the old
    slot's; read from /proc/net/tcp*, so it needs no ``ss``). With neither, say so: the
    drain is never skipped silently.
    """
    ticks = max(1, int(timeout / _TICK))
    if pids:
        plist = " ".join(str(int(p)) for p in pids)
        # Shell builtins only: read each pid's /proc stat; an nginx that is not a zombie is
        # still draining (a reused pid is never an nginx of ours within the timeout). With
        # ``accepting_only``, a worker retitled "shutting down" counts as done: it no longer
        # takes new connections (nothing is stopped behind it, so its requests may finish).
        done = ('c=; { read -r c < /proc/$p/cmdline; } 2>/dev/null\n'
                '    case "$c" in *"shutting down"*) continue;; esac\n    '
                if accepting_only else "")
        return f'bg_old="{plist}"\n' + _quit_old_script() + f"""i=0
while :; do
  left=""
  for p in {plist}; do
    s=; {{ read -r s < /proc/$p/stat; }} 2>/dev/null
    case "$s" in *"(nginx"*") Z "*|*"(nginx"*") X "*) continue;; *"(nginx"*) ;; *) continue;; esac
    {done}left="$left $p"
  done
  [ -z "$left" ] && exit 0
  [ $i -ge {ticks} ] && {{ echo "still draining:$left"; exit 1; }}
  sleep {_TICK}; i=$((i+1))
done
"""
    if port is None:
        return 'echo "drain: skipped: no nginx workers and no port to watch"'
    hexport = f"{int(port):04X}"
    # A request nginx is still reading (its body buffered before proxying) has no
    # connection to the slot yet; the worker holding it is retitled "is shutting down"
    # after a reload, so wait for those too (any nginx's: the timeout bounds a stranger;
    # `dow[n]` keeps grep from matching its own command line).
    return f"""echo "drain: no nginx worker list; waiting for port {int(port)} to be unused"
i=0
while :; do
  n=$(awk -v p={hexport} 'FNR > 1 && $4 == "01" {{
        split($2, a, ":"); split($3, b, ":"); if (a[2] == p || b[2] == p) n++ }}
      END {{ print n + 0 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  w=$(grep -las 'nginx: worker process is shutting dow[n]' /proc/[0-9]*/cmdline | wc -l)
  [ "${{n:-0}}" = 0 ] && [ "${{w:-0}}" = 0 ] && exit 0
  if [ $i -ge {ticks} ]; then
    echo "still draining: $n connections on port {int(port)}, $w nginx workers shutting down"
    exit 1
  fi
  sleep {_TICK}; i=$((i+1))
done
"""


def drain_noted_script(pids: list[int], timeout: float, *, port: int | None = None,
                       accepting_only: bool = False) -> str:
    """:func:`drain_script` that never fails the script: prints ``drained`` or
    ``drain-timeout`` (a drain that outlives its timeout is reported, not fatal)."""
    script = drain_script(pids, timeout, port=port, accepting_only=accepting_only)
    return (f"if (\n{script}\n); then echo drained;"
            " else echo drain-timeout; fi")


# ----------------------------------------------------------------------------- long-lived
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
    ``$up`` then counts every established connection to ``port``."""
    hexport = f"{int(port):04X}"
    return f"""ino=; wait={UNSEEN}
for p in $left; do
  l=$(ls -l /proc/$p/fd 2>/dev/null) || {{ ino=; break; }}
  ino="$ino $(printf '%s\\n' "$l" | sed -n 's/.*socket:\\[\\([0-9]*\\)\\].*/\\1/p' | tr '\\n' ' ')"
done
f=/proc/net/tcp; [ -r /proc/net/tcp6 ] && f="$f /proc/net/tcp6"
set -- $f
set -- $(awk -v p={hexport} -v files=$# -v inos="$ino" 'BEGIN {{ n = split(inos, a, " ");
      for (i = 1; i <= n; i++) mine[a[i]] = 1 }}
    FNR == 1 {{ pass++ }}
    FNR > 1 && pass <= files {{ if ($4 == "0A") {{ split($2, l, ":"); listen[l[2]] = 1 }}; next }}
    FNR > 1 && $4 == "01" {{ split($3, r, ":"); split($2, l, ":")
      if (n == 0) {{ if (r[2] == p) up++; next }}
      if (!($10 in mine)) next
      if (r[2] == p) up++
      if (l[2] in listen) client++; else upstream++ }}
    END {{ print up + 0, client - upstream, n }}' $f $f 2>/dev/null)
up=${{1:-0}}
if [ "${{3:-0}}" != 0 ]; then wait=${{2:-0}}; case "$wait" in -*) wait=0;; esac; fi
"""


def retire_drain_script(pids: list[int] | None, timeout: float, *, port: int, grace: float,
                        stop: str) -> str:
    """:func:`drain_noted_script` for a slot about to stop, that does not wait
    ``timeout`` for connections that never end: past ``grace``, once every connection the
    old workers hold has reached the old slot, it runs ``stop`` (the runner's graceful
    stop of that slot) and goes on waiting for the workers. Prints ``open: UP WAIT MS``
    and the stop's output as ``stop: ...`` lines when it stopped early, then ``drained``
    or ``drain-timeout``."""
    # None: the workers an earlier reload left (a retire that was interrupted), found now.
    plist = ("$(grep -las 'nginx: worker process is shutting dow[n]' /proc/[0-9]*/cmdline"
             " | sed 's|/proc/||; s|/cmdline||' | tr '\\n' ' ')" if pids is None
             else " ".join(str(int(p)) for p in pids))
    if not plist:
        return drain_noted_script([], timeout, port=port)
    # Time from /proc/uptime (centiseconds, a builtin read): the counting takes time too.
    return f"""if (
bg_old="{plist}"
[ -z "$bg_old" ] && exit 0
{_quit_old_script()}i=0; stopped=
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
  [ $now -ge {int(timeout * 1000)} ] && {{ echo "still draining:$left"; exit 1; }}
  sleep {_TICK}; i=$((i+1))
done
); then echo drained; else echo drain-timeout; fi"""


def parse_retire(stdout: str) -> tuple[tuple[int, str, float] | None, list[str]]:
    """``((to the slot, not yet there, seconds after the switch) | None, stop output)``
    from :func:`retire_drain_script`'s output; None when it did not stop early."""
    opened: tuple[int, str, float] | None = None
    stopped: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(OPEN_MARK):
            parts = line[len(OPEN_MARK):].split()
            if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
                opened = (int(parts[0]), parts[1], int(parts[2]) / 1000)
        elif line.startswith(STOP_MARK) and line[len(STOP_MARK):].strip():
            stopped.append(line[len(STOP_MARK):].strip())
    return opened, stopped
