"""Draining nginx after a reload: find nginx's master, list its workers, wait for the old
ones (or, without a list, for the old slot's port to go quiet).

Built here as shell for the executor to run on a host (reload, then drain before the old
slot stops); :mod:`bluegreen.nginx` re-exports these names.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from bluegreen import asroot, mastercache
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
_RELOAD_WAITS = 58  # looks for nginx's new workers after a reload: ~1 s (_quit_old_script)
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
    nginx_t = asroot.command(join([*inv.argv,
                                   *(["-p", inv.prefix] if inv.prefix else []),
                                   *(["-c", inv.conf] if inv.conf else []), "-T"]))
    nginx_v = asroot.command(join([*inv.argv, "-V"]))
    conf_match = q(inv.conf or "")
    prefix = q(inv.prefix.rstrip("/") + "/" if inv.prefix else "")
    return _is_master_function(conf_match) + f"""
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


def _is_master_function(conf_match: str) -> str:
    """Shell function ``bg_is_master PID``: is PID an nginx master (of the quoted
    ``conf_match`` config, when not empty)?"""
    return f"""bg_is_master() {{
  case "$1" in ''|*[!0-9]*) return 1;; esac
  c=$(tr '\\0' ' ' < /proc/$1/cmdline 2>/dev/null) || return 1
  case "$c" in "nginx: master process"*) ;; *) return 1;; esac
  [ -z {conf_match} ] && return 0
  case "$c" in *{conf_match}*) return 0;; esac
  return 1
}}"""


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
        # the master is remembered on the host while it is the same process (no nginx -T)
        mastercache.cached(config, master_discovery_script(config))
        + _children_script()
        + f'echo "{WORKERS_MARK}$old"\n'
        + asroot.early_quit_start("old", 1000)
        + asroot.command(config.nginx.reload_command)
        # the old workers stop accepting as soon as the new ones run (not 100 ms later):
        # the confirmation through nginx's own ports then needs no retry
        + f'\nbg_rc=$?\n{asroot.early_quit_join()}'
        + f'if [ $bg_rc = 0 ]; then\nbg_old=$old\n{_quit_old_script(_RELOAD_WAITS)}fi\n'
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
    for one that many times: 5 ms apart ten times (they run 5-10 ms after it), then _TICK.

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
{asroot.early_quit_script("bg_old", 1000 if waits else 0)}newer=; i=0
while [ -n "$m" ]; do
  kids=; {{ read -r kids < /proc/$m/task/$m/children; }} 2>/dev/null
  for k in $kids; do
    case " $bg_old " in *" $k "*) continue;; esac
    if bg_accepting "$k"; then newer=$k; break; fi
  done
  [ -n "$newer" ] || [ $i -ge {int(waits)} ] && break
  if [ $i -lt 10 ]; then sleep 0.005; else sleep {_TICK}; fi; i=$((i+1))
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
  [ $i -ge {ticks} ] && {{ echo "{LEFT_MARK}:$left"; exit 1; }}
  sleep {_TICK}; i=$((i+1))
done
"""
    if port is None:
        return 'echo "drain: skipped: no nginx workers and no port to watch"'
    return _port_drain_script(port, ticks)


def _port_drain_script(port: int, ticks: int) -> str:
    """Without a worker list: wait until no established TCP connection uses ``port``."""
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
    echo "{LEFT_MARK}: $n connections on port {int(port)}, $w nginx workers shutting down"
    exit 1
  fi
  sleep {_TICK}; i=$((i+1))
done
"""


DRAINED, TIMED_OUT = "drained", "drain-timeout"
LEFT_MARK = "still draining"  # still draining: <pids>, or what kept the port busy


def noted(script: str) -> str:
    """``script`` (a drain that exits 1 on timeout) that never fails: prints ``drained`` or
    ``drain-timeout`` (a drain that outlives its timeout is reported, not fatal)."""
    return f"if (\n{script}\n){NOTED_TAIL}"


NOTED_TAIL = f"; then echo {DRAINED}; else echo {TIMED_OUT}; fi"  # (the fake host's cue)


def drain_noted_script(pids: list[int], timeout: float, *, port: int | None = None,
                       accepting_only: bool = False) -> str:
    """:func:`drain_script`, :func:`noted`; read back by :func:`read_drain`."""
    return noted(drain_script(pids, timeout, port=port, accepting_only=accepting_only))


@dataclass(frozen=True)
class Drain:
    """What a noted drain printed: whether it timed out, and what it still waited for."""

    timed_out: bool
    left: str = ""  # the "still draining: ..." line ("" when it said none)


def read_drain(stdout: str) -> Drain:
    lines = stdout.splitlines()
    left = next((ln for ln in lines if ln.startswith(LEFT_MARK)), "")
    return Drain(TIMED_OUT in lines, left)
