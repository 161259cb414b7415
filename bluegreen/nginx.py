"""The nginx switch: render, stage, test, swap, reload, confirm, restore, drain.

A switch is two-phase so that many hosts switch all-or-nothing:

* prepare: the rendered upstream replaces the live file (the old one kept byte for byte
  beside it) and ``test_command`` validates nginx's whole configuration. nginx reads its
  files only on (re)load, so a prepared file is not live yet; a failed test puts the old
  file back at once.
* commit: reload, then a probe through nginx confirms the new slot answers.
* abort (any host failed): the old file goes back and, where nginx was already reloaded,
  nginx reloads again.

Staged and backup files sit next to the upstream file (so ``mv`` is an atomic rename) and
start with a dot, which nginx's ``include *.conf`` glob never matches.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import jinja2

from bluegreen.config import Config
from bluegreen.errors import ConfigError
from bluegreen.resources import resource_dir
from bluegreen.shell import ScriptExit, join, q
from bluegreen.state import now_iso

SLOT_HEADER = "X-BG-Slot"
TEST_FAILED_EXIT = 74


@dataclass(frozen=True)
class UpstreamFiles:
    live: str
    staged: str
    backup: str


def files(config: Config) -> UpstreamFiles:
    live = config.nginx.upstream_file
    d, name = posixpath.split(live)
    return UpstreamFiles(live=live, staged=f"{d}/.{name}.bg-new", backup=f"{d}/.{name}.bg-prev")


def _template(config: Config) -> jinja2.Template:
    if config.nginx.template is not None:
        loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(config.nginx.template.parent))
        name = config.nginx.template.name
    else:
        loader = jinja2.FileSystemLoader(str(resource_dir("templates")))
        name = "upstream.conf.j2"
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        return env.get_template(name)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"nginx template {name}: {exc}") from exc


@dataclass(frozen=True)
class Server:
    """One ``server`` line of the upstream: an app host's live slot as nginx reaches it."""

    address: str
    port: int
    host: str  # the app host it belongs to ("" for this machine's own slot)

    def to_template(self) -> dict[str, str | int]:
        # An IPv6 literal needs brackets before the port.
        address = f"[{self.address}]" if ":" in self.address else self.address
        return {"address": address, "port": self.port, "host": self.host}


def render_upstream(config: Config, *, slot: str, version: str,
                    servers: Sequence[Server] | None = None) -> str:
    """The upstream file sending traffic to ``slot``; raises ConfigError on a broken template.

    ``servers`` lists every app host's live slot when nginx runs on a load-balancer tier
    (``slot`` is then the slot they share, or ``mixed``); without it the one server is this
    host's own slot on 127.0.0.1, so the template has one shape for both topologies.
    """
    port = config.slots.get(slot, 0)
    if servers is None:
        servers = [Server("127.0.0.1", port, "")]
    try:
        text = _template(config).render(
            app=config.app.name,
            slot=slot,
            port=port,
            version=version,
            slots=dict(config.slots),
            servers=[s.to_template() for s in servers],
            time=now_iso(),
        )
    except jinja2.TemplateError as exc:
        where = config.nginx.template or "templates/upstream.conf.j2"
        raise ConfigError(f"nginx template {where} failed to render: {exc}") from exc
    if "\x00" in text:
        raise ConfigError("nginx template rendered a NUL byte")
    return text


def prepare_script(config: Config, content: str) -> str:
    """Stage, keep the old file, swap, test; on a failed test put the old file back."""
    f = files(config)
    live, staged, backup = q(f.live), q(f.staged), q(f.backup)
    return f"""set -e
mkdir -p {q(posixpath.dirname(f.live))}
printf '%s' {q(content)} > {staged}
if [ -f {live} ]; then cp -p {live} {backup}; else rm -f {backup}; fi
mv -f {staged} {live}
if ! out=$( ({config.nginx.test_command}) 2>&1 ); then
  if [ -f {backup} ]; then mv -f {backup} {live}; else rm -f {live}; fi
  printf '%s\\n' "$out"
  exit {TEST_FAILED_EXIT}
fi
"""


def abort_script(config: Config) -> str:
    """Put the previous upstream file back, byte for byte."""
    f = files(config)
    backup, live = q(f.backup), q(f.live)
    # An empty backup stands for "there was no upstream file before".
    return (f"if [ -s {backup} ]; then mv -f {backup} {live};"
            f" elif [ -f {backup} ]; then rm -f {backup} {live}; fi; rm -f {q(f.staged)}")


# ----------------------------------------------------------------------------- drain
#
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
WORKERS_MARK = "old-workers:"
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
    """Shell printing the pids whose parent is ``$master`` (no ``ps`` needed)."""
    return """old=""
if [ -n "$master" ]; then
  for d in /proc/[0-9]*; do
    s=$(cat "$d/stat" 2>/dev/null) || continue
    s=${s##*) }
    set -- $s
    [ "$2" = "$master" ] && old="$old ${d#/proc/}"
  done
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
        + "\n"
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


def parse_old_workers(stdout: str) -> list[int]:
    for line in stdout.splitlines():
        if line.startswith(WORKERS_MARK):
            return [int(p) for p in line.split(":", 1)[1].split() if p.isdigit()]
    return []


def drain_script(pids: list[int], timeout: float, *, port: int | None = None) -> str:
    """Wait (on the host) until nginx's old workers exited; exit 1 on timeout.

    Without a worker list, wait until no established TCP connection uses ``port`` (the old
    slot's; read from /proc/net/tcp*, so it needs no ``ss``). With neither, say so: the
    drain is never skipped silently.
    """
    ticks = max(1, int(timeout * 10))
    if pids:
        plist = " ".join(str(int(p)) for p in pids)
        return f"""i=0
while :; do
  left=""
  for p in {plist}; do
    if grep -qs nginx /proc/$p/cmdline; then left="$left $p"; fi
  done
  [ -z "$left" ] && exit 0
  [ $i -ge {ticks} ] && {{ echo "still draining:$left"; exit 1; }}
  sleep 0.1; i=$((i+1))
done
"""
    if port is None:
        return 'echo "drain: skipped: no nginx workers and no port to watch"'
    hexport = f"{int(port):04X}"
    return f"""echo "drain: no nginx worker list; waiting for port {int(port)} to be unused"
i=0
while :; do
  n=$(awk -v p={hexport} 'FNR > 1 && $4 == "01" {{
        split($2, a, ":"); split($3, b, ":"); if (a[2] == p || b[2] == p) n++ }}
      END {{ print n + 0 }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ "${{n:-0}}" = 0 ] && exit 0
  [ $i -ge {ticks} ] && {{ echo "still draining: $n connections on port {int(port)}"; exit 1; }}
  sleep 0.1; i=$((i+1))
done
"""


def parse_nginx_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


@dataclass(frozen=True)
class Confirmation:
    ok: bool
    attempts: int
    elapsed: float
    detail: str


def confirm(
    transport: httpx.BaseTransport, probe_url: str, slot: str, *, timeout: float = 10.0
) -> Confirmation:
    """Probe through nginx until the answer carries ``X-BG-Slot: slot``.

    A reload is asynchronous: the first probes may still reach an old worker.
    """
    started = time.monotonic()
    attempts = 0
    detail = "no answer"
    with httpx.Client(transport=transport, timeout=httpx.Timeout(2.0)) as client:
        while True:
            attempts += 1
            try:
                r = client.get(probe_url, headers={"Connection": "close"})
                got = r.headers.get(SLOT_HEADER)
                if got == slot and r.status_code < 500:
                    return Confirmation(True, attempts, time.monotonic() - started, "")
                if got is None:
                    detail = (
                        f"HTTP {r.status_code} without an {SLOT_HEADER} header: add"
                        f" `add_header {SLOT_HEADER} $<app>_slot always;` to the site"
                    )
                else:
                    detail = f"HTTP {r.status_code} from slot {got!r}, expected {slot!r}"
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - started >= timeout:
                return Confirmation(False, attempts, time.monotonic() - started, detail)
            time.sleep(0.05)


def discard_backup_script(config: Config) -> str:
    """The switch is recorded: its backup file must not be mistaken for an interrupted one."""
    f = files(config)
    return f"rm -f {q(f.backup)} {q(f.staged)}"


def stage_script(config: Config, content: str) -> str:
    """Phase one of a switch: stage the new upstream beside the live file and test it.

    The staged file is moved into place for the test only and the live file is put back
    at once, so nothing a reload could pick up changes before phase two; on a failed test
    the staged file is dropped and the script exits NGINX_TEST_FAILED with nginx's words.
    """
    f = files(config)
    live, staged, held = q(f.live), q(f.staged), q(f.staged + ".held")
    return f"""(
set -e
mkdir -p {q(posixpath.dirname(f.live))}
printf '%s' {q(content)} > {staged}
if [ -f {live} ]; then cp -p {live} {held}; else rm -f {held}; fi
cp {staged} {live}.bg-tmp && mv -f {live}.bg-tmp {live}
rc=0; out=$( ({config.nginx.test_command}) 2>&1 ) || rc=$?
if [ -f {held} ]; then mv -f {held} {live}; else rm -f {live}; fi
if [ $rc -ne 0 ]; then
  rm -f {staged}
  printf '%s\\n' "$out"
  exit {ScriptExit.NGINX_TEST_FAILED}
fi
) || exit $?"""


def commit_script(config: Config) -> str:
    """Phase two: keep the live file as the backup (an interrupted switch is undone from
    it), move the tested staged file in, reload (printing the old workers to drain)."""
    f = files(config)
    live, staged, backup = q(f.live), q(f.staged), q(f.backup)
    return f"""if [ ! -f {staged} ]; then echo "the staged upstream file is gone"; exit 1; fi
if [ -f {live} ]; then cp -p {live} {backup}; else : > {backup}; fi
mv -f {staged} {live}
{reload_script(config)}"""


def discard_staged_script(config: Config) -> str:
    """Drop a staged upstream that will not be committed (a failed or interrupted start)."""
    f = files(config)
    return f"rm -f {q(f.staged)} {q(f.staged + '.held')}"
